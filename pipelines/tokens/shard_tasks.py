"""tokens on Ray (`executor: ray`): one task per prune shard, joined by the driver.

The tokenizer is made once in the driver (trained on its seeded sample, or the user's copied)
into the stage's folder in the workspace, which every node sees; each task loads it from there,
tokenizes its prune shard exactly as the local loop does (`tokenize_frame`) into a scratch folder
of its own (train and held-out token shards, its rows of the document index, its held-out bytes
and next-line pool), and returns what is small. A task whose worker dies is rerun and rewrites its
scratch folder. The driver then appends the scratch folders in shard order to the stage's writers:
the token shards and documents.parquet are the local executor's byte for byte, and the pool the
same sample (a bottom-k of bottom-ks is the bottom-k of the whole).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from mixforge.config import MixforgeConfig
from mixforge.ledger import parquet_files
from mixforge.pipelines.run import map_shards
from mixforge.pipelines.tokens.documents import TOKENIZER_IN_WORKSPACE, DocumentIndex, tokenize_frame
from mixforge.pipelines.tokens.eval_tasks import NextLinePool
from mixforge.pipelines.tokens.tokenizer import TokenShardWriter, workspace_frames
from mixforge.workspace import Workspace

SPLITS = ("train", "heldout")
SCRATCH = ".shards"


def tokenize_shard(ws_root: str, shard: str, tok_path: str, tokenizer_in_workspace: str, seed: int,
                   heldout_fraction: float, with_pool: bool, scratch: str) -> tuple[dict[str, int], NextLinePool | None]:
    """A Ray task: prune shard `shard` tokenized into the folder `scratch` (made anew); returns its
    held-out bytes per component and its next-line pool (None unless `with_pool`)."""
    out = Path(scratch)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    writers = {split: TokenShardWriter(tok_path, out / split, tokenizer_in_workspace) for split in SPLITS}
    index = DocumentIndex(out / "documents.parquet")
    held_bytes: dict[str, int] = {}
    pool = NextLinePool() if with_pool else None
    try:
        for frame in workspace_frames(Workspace(Path(ws_root)), [shard]):
            tokenize_frame(frame, seed, heldout_fraction, writers, index, held_bytes, pool)
        for writer in writers.values():
            writer.close()
        index.close()
    except BaseException:
        for writer in writers.values():
            writer.abort()
        raise
    return held_bytes, pool


def tokenize_on_ray(cfg: MixforgeConfig, ws: Workspace, inputs: list[str], out: Path, tok_path: Path,
                    writers: dict[str, TokenShardWriter], index, held_bytes: dict[str, int], pool: NextLinePool | None) -> None:
    """The prune shards `inputs` tokenized by Ray tasks, then appended in shard order to `writers`
    and `index`; their held-out bytes added to `held_bytes`, their pools merged into `pool`."""
    wanted = set(inputs)
    shards = [f for f in parquet_files(ws.docs_dir("prune")) if f.name in wanted]
    scratch = out / SCRATCH
    calls = [(str(ws.root), f.name, str(tok_path), TOKENIZER_IN_WORKSPACE, cfg.seed, cfg.proxy.heldout_fraction,
              pool is not None, str(scratch / f"{k:05d}")) for k, f in enumerate(shards)]
    results = map_shards(cfg, tokenize_shard, calls, "tokens", [f.stat().st_size >> 10 or 1 for f in shards], unit="KB")
    for call, (shard_bytes, shard_pool) in zip(calls, results):  # in shard order, as the local loop goes
        folder = Path(call[-1])
        for split in SPLITS:
            writers[split].append_shards(folder / split)
        index.append_index(folder / "documents.parquet")
        for comp, n in shard_bytes.items():
            held_bytes[comp] = held_bytes.get(comp, 0) + n
        if pool is not None:
            pool.merge(shard_pool)
    shutil.rmtree(scratch, ignore_errors=True)
