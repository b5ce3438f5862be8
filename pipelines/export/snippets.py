"""Runnable Python snippets in an export's `trainer/` folder: how litgpt, torchtitan, MosaicML
streaming and Hugging Face `datasets` read this export with its mixture. They are named
`load_<trainer>.py`, never the package's own name, so that importing one shadows nothing.

Each snippet finds the export from its own location, carries the paths and weights as literals,
defines `build(...)` and prints a few samples when run. The weight each trainer wants differs:
samplers that draw documents (`interleave_datasets`, MosaicML `Stream` proportions) get the
per-document probabilities; samplers that draw packed token blocks (litgpt's
`CombinedStreamingDataset`, torchtitan's interleaved loader) get the token shares. The tests run
every snippet with the real package.
"""

from __future__ import annotations

from pathlib import Path
from pprint import pformat

from mixforge.pipelines.export.formats import TEXT_FORMATS, TOKEN_FORMATS

HEADER = '''"""{title}

Written by mixforge for export {mixture_id} ({fmt}, {mode} mode); run it from anywhere.
{why}
"""
'''

PATHS = '''
ROOT = Path(__file__).resolve().parent.parent  # the export folder
SEED = {seed}
'''

HF = '''
from pathlib import Path

from datasets import interleave_datasets, load_dataset
{paths}
DATA_FILES = {data_files}
PROBABILITIES = {probabilities}  # chance that a drawn document comes from each part


def build(seed: int = SEED):
    parts = [load_dataset({loader}, data_files=[str(ROOT / f) for f in files], split="train")
             for files in DATA_FILES.values()]
    if len(parts) == 1:
        return parts[0]
    # all_exhausted: every document is seen; the draws keep the probabilities
    return interleave_datasets(parts, probabilities=list(PROBABILITIES.values()), seed=seed,
                               stopping_strategy="all_exhausted")


if __name__ == "__main__":
    ds = build()
    print(ds)
    print(ds[0]["text"][:200])
'''

MOSAIC = '''
from pathlib import Path

from streaming import Stream, StreamingDataset
{paths}
STREAMS = {streams}  # folder -> proportion of samples (documents) drawn from it


def build(batch_size: int = 8, shuffle: bool = True, seed: int = SEED, **kwargs):
    streams = [Stream(local=str(ROOT / folder), proportion=p) for folder, p in STREAMS.items()]
    return StreamingDataset(streams=streams, shuffle=shuffle, shuffle_seed=seed, batch_size=batch_size, **kwargs)


if __name__ == "__main__":
    ds = build()
    print(len(ds), "samples per epoch; first:", ds[0]["component"], ds[0]["tokens"][:16])
'''

LITGPT = '''
from pathlib import Path

import numpy as np
import torch
from litdata import CombinedStreamingDataset, StreamingDataset, TokensLoader, optimize
{paths}
TOKEN_FILES = {token_files}  # raw token arrays, no header
WEIGHTS = {weights}  # token shares: each draw is one block of tokens
DTYPE = {dtype}
PIECE = 1 << 20  # tokens per optimized item


def _pieces(path: str):
    data = np.fromfile(ROOT / path, dtype=DTYPE)
    for start in range(0, len(data), PIECE):
        yield torch.from_numpy(data[start : start + PIECE].astype(np.int32))


def prepare(out_dir, num_workers: int = 1, verbose: bool = True):
    """Convert each part to litdata's chunks (once), as litgpt's data modules expect.
    (litdata 0.2.76 fails with TQDM_DISABLE=1 unless verbose=False.)"""
    for part, files in TOKEN_FILES.items():
        optimize(fn=_pieces, inputs=files, output_dir=str(Path(out_dir) / part), chunk_bytes="64MB",
                 item_loader=TokensLoader(), num_workers=num_workers, verbose=verbose)


def build(out_dir, block_size: int = 2049, seed: int = SEED):
    parts = [StreamingDataset(input_dir=str(Path(out_dir) / part), item_loader=TokensLoader(block_size=block_size),
                              shuffle=True, seed=seed, drop_last=True) for part in WEIGHTS]
    if len(parts) == 1:
        return parts[0]
    return CombinedStreamingDataset(datasets=parts, weights=list(WEIGHTS.values()), seed=seed, iterate_over_all=False)


if __name__ == "__main__":
    import sys

    out = sys.argv[1] if len(sys.argv) > 1 else str(ROOT / "litdata")
    prepare(out)
    print(next(iter(build(out, block_size=129))))
'''

TORCHTITAN = '''
from functools import partial
from pathlib import Path

from datasets import load_dataset
from torchtitan.hf_datasets import DatasetConfig
from torchtitan.hf_datasets.text_datasets import DATASETS, HFDataSource, InterleavedHuggingFaceTextDataLoader
{paths}
DATA_FILES = {data_files}
WEIGHTS = {weights}  # token shares: every source yields packed blocks of seq_len tokens


def _load(files, path):
    return load_dataset({loader}, data_files=[str(Path(path) / f) for f in files], split="train")


def register():
    """Add one torchtitan dataset per part (names are lower case, as torchtitan looks them up)."""
    for part, files in DATA_FILES.items():
        DATASETS[f"mixforge_{{part}}".lower()] = DatasetConfig(path=str(ROOT), loader=partial(_load, files),
                                                               sample_processor=lambda sample: sample["text"])


def dataloader_config(infinite: bool = True, seed: int = SEED):
    """The `dataloader` section of a torchtitan job: one weighted source per part."""
    register()
    return InterleavedHuggingFaceTextDataLoader.Config(
        sources=[HFDataSource(dataset=f"mixforge_{{part}}".lower(), weight=w, infinite=infinite)
                 for part, w in WEIGHTS.items()], seed=seed)


if __name__ == "__main__":
    print(dataloader_config())
'''


def trainer_snippets(m: dict, per_part: dict[str, list[str]], shares: dict[str, float], doc_probs: dict[str, float]) -> dict[str, str]:
    """{file name: Python source} of the snippets that apply to this export's format."""
    fmt = m["format"]

    def snippet(title: str, why: str, body: str, **values) -> str:
        head = HEADER.format(title=title, why=why, mixture_id=m["mixture_id"], fmt=fmt, mode=m["mode"])
        return head + body.format(paths=PATHS.format(seed=m["seed"]), **{k: _literal(v) for k, v in values.items()})

    def files(ext: str) -> dict[str, list[str]]:
        return {part: [f + ext for f in shard_paths] for part, shard_paths in per_part.items()}

    out = {}
    if fmt in TEXT_FORMATS:
        ext, loader = (".parquet", "parquet") if fmt == "parquet" else (".jsonl.zst", "json")
        out["load_hf_datasets.py"] = snippet(
            "Hugging Face datasets: the export, interleaved by the mixture.",
            "interleave_datasets draws documents, so its probabilities are per-document.",
            HF, data_files=files(ext), probabilities=doc_probs, loader=loader)
        out["load_torchtitan.py"] = snippet(
            "torchtitan: one weighted source per part for InterleavedHuggingFaceTextDataLoader.",
            "torchtitan packs each source into seq_len blocks, so the weights are token shares.",
            TORCHTITAN, data_files=files(ext), weights=shares, loader=loader)
    if fmt == "mds":
        out["load_mosaicml_streaming.py"] = snippet(
            "MosaicML streaming: one Stream per folder, with its proportion.",
            "Stream proportions are shares of samples (documents), so they are per-document.",
            MOSAIC, streams={str(Path(shard_paths[0]).parent): doc_probs[part] for part, shard_paths in per_part.items()})
    if fmt in TOKEN_FORMATS:
        out["load_litgpt.py"] = snippet(
            "litgpt: litdata chunks per part, mixed by CombinedStreamingDataset weights.",
            "litgpt draws blocks of block_size tokens, so the weights are token shares.",
            LITGPT, token_files=files({"megatron": ".bin", "datatrove": ".ds", "numpy": ".npy"}[fmt]), weights=shares,
            dtype=m["token_dtype"])
    return out


def _literal(value) -> str:
    return pformat(value, width=100, sort_dicts=False)
