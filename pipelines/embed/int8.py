"""`embed.backend: int8`, the CPU fast path: the same transformer, exported to ONNX from the local
model folder and its matrix multiplications quantized to int8 (onnxruntime's dynamic quantization:
weights per output channel, activations per call). sentence-transformers still tokenizes, sorts by
length, pools and normalises; only the transformer's forward pass runs in onnxruntime.

Built once per model and library versions into `<workspace>/models/int8-<model>-<key>/` (a
folder renamed into place when complete, so a killed build leaves nothing half-written), then
loaded from there. Per-channel weights matter: per-tensor ones gave a mean cosine of 0.93 to the
fp32 vectors, per-channel 0.99 (bench/bench_embed.py, BENCHMARKS.md).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import warnings
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch

from mixforge.errors import ConfigError
from mixforge.workspace import _umask, atomic_write_json

RECIPE = "onnx-opset17-eager-attention; quantize_dynamic MatMul int8 per-channel"  # in the cache key
LIBRARIES = ("torch", "transformers", "sentence-transformers", "onnx", "onnxruntime")


def cache_key(path: Path) -> str:
    """Changes with the model's files (name, size, mtime), the recipe and the libraries' versions."""
    files = sorted((str(f.relative_to(path)), f.stat().st_size, f.stat().st_mtime_ns) for f in path.rglob("*") if f.is_file())
    blob = json.dumps({"model": str(path.resolve()), "files": files, "recipe": RECIPE,
                       "versions": {lib: version(lib) for lib in LIBRARIES}}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def use_int8(st_model, path: Path, cache_dir: Path, threads: int) -> Path:
    """Swap the transformer inside the loaded SentenceTransformer `st_model` for its int8 ONNX
    build (made now if not cached). Returns the cached model file."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        raise ConfigError("embed.backend: int8 needs onnxruntime and onnx: pip install onnxruntime onnx") from None
    target = Path(cache_dir) / f"int8-{path.name}-{cache_key(path)}"
    if not (target / "model.onnx").exists():
        _build(st_model, path, target)
    st_model[0].model = OnnxBackbone(target / "model.onnx", st_model[0].model.config, threads)
    return target / "model.onnx"


def _build(st_model, path: Path, target: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    backbone = st_model[0].model
    names = [n for n in st_model.tokenizer.model_input_names if n in ("input_ids", "attention_mask", "token_type_ids")]
    if hasattr(backbone, "set_attn_implementation"):
        backbone.set_attn_implementation("eager")  # plain matmul + softmax: the legacy exporter's ops
    wrapper = _Wrapper(backbone, names).eval()
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    os.chmod(work, 0o777 & ~_umask())  # mkdtemp's 0700 would hide the cache from the workspace's other users
    try:
        # a padded row in the example: the trace must keep the attention mask, not an all-ones shortcut
        mask = torch.tensor([[1] * 16, [1] * 9 + [0] * 7])
        dummy = tuple(mask if n == "attention_mask" else torch.ones(2, 16, dtype=torch.long) * mask for n in names)
        axes = {n: {0: "batch", 1: "tokens"} for n in [*names, "last_hidden_state"]}
        # the tracer's and the quantizer's advice is about graphs other than this one
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings(), _quiet_logging():
            warnings.simplefilter("ignore")
            # dynamo=False: the TorchScript exporter needs neither onnxscript nor a fixed shape
            torch.onnx.export(wrapper, dummy, str(work / "fp32.onnx"), dynamo=False, opset_version=17,
                              input_names=names, output_names=["last_hidden_state"], dynamic_axes=axes)
            quantize_dynamic(str(work / "fp32.onnx"), str(work / "model.onnx"), weight_type=QuantType.QInt8,
                             per_channel=True, op_types_to_quantize=["MatMul"],
                             extra_options={"DefaultTensorType": 1})  # 1 = float where shape inference gives no type
        (work / "fp32.onnx").unlink()
        atomic_write_json(work / "build.json", {"model": str(path), "recipe": RECIPE, "inputs": names,
                                                "versions": {lib: version(lib) for lib in LIBRARIES}})
        try:
            os.replace(work, target)  # the whole folder appears at once
        except OSError:
            if not (target / "model.onnx").exists():  # not another process's finished build
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)


class _quiet_logging:
    """Root-logger warnings off for the duration (onnxruntime's quantizer logs through it)."""

    def __enter__(self):
        logging.disable(logging.WARNING)

    def __exit__(self, *exc):
        logging.disable(logging.NOTSET)


class _Wrapper(torch.nn.Module):
    """Positional inputs in, last hidden state out: the signature the exporter traces."""

    def __init__(self, model, names: list[str]):
        super().__init__()
        self.model, self.names = model, names

    def forward(self, *inputs):
        return self.model(**dict(zip(self.names, inputs))).last_hidden_state


class OnnxBackbone(torch.nn.Module):
    """Stands in for the Hugging Face model inside sentence-transformers' Transformer module:
    takes its keyword inputs, returns `last_hidden_state` from onnxruntime."""

    def __init__(self, model_file: Path, config, threads: int):
        super().__init__()
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # don't busy-wait between calls: the cores are shared with tokenizing and other workers
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(model_file), options, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.config = config  # sentence-transformers reads the hidden size and options from it
        self.register_buffer("_anchor", torch.zeros(1), persistent=False)  # gives the module a device

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def forward(self, **features):
        feed = {name: np.ascontiguousarray(features[name].cpu().numpy(), dtype=np.int64) for name in self.inputs}
        return {"last_hidden_state": torch.from_numpy(self.session.run(None, feed)[0])}
