"""The runs table: one row per proxy run (run_id, one `w_<component>` weight column per
component, metric columns, proxy config, seed, tokens, tokenizer, wall time, device).

Each run is written as its own small Parquet file, atomically, under `<workspace>/runs/rows/`:
an interrupted run leaves no partial row, two runs never rewrite each other, and a sweep skips
run ids already present. `runs/runs.parquet` is the merged view, rewritten after each append.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import polars as pl

from mixforge.config import MixforgeConfig
from mixforge.digests import file_digest, shard_digests
from mixforge.errors import MixforgeError
from mixforge.pipelines.outputs import tokens_dir
from mixforge.stage_files import require_intact
from mixforge.workspace import Workspace, atomic_write_parquet

SAFE_ID = re.compile(r"^[A-Za-z0-9_.-]+$")


class RunsTable:
    """The runs of one workspace."""

    def __init__(self, ws: Workspace):
        self.folder = ws.root / "runs"
        self.rows = self.folder / "rows"

    def _row_path(self, run_id: str) -> Path:
        if not SAFE_ID.match(run_id):
            raise ValueError(f"run id {run_id!r}: use letters, digits, '_', '.', '-' only")
        return self.rows / f"{run_id}.parquet"

    def has(self, run_id: str) -> bool:
        return self._row_path(run_id).exists()

    def append(self, row: dict) -> None:
        """Add one finished run (atomic), then refresh the merged runs.parquet."""
        atomic_write_parquet(self._row_path(row["run_id"]), pl.DataFrame([row]))
        atomic_write_parquet(self.folder / "runs.parquet", self.load())

    def load(self) -> pl.DataFrame:
        """Every finished run, one row each (columns missing in older rows are null)."""
        files = sorted(self.rows.glob("*.parquet"))
        if not files:
            return pl.DataFrame()
        return pl.concat([_read_row(f) for f in files], how="diagonal_relaxed").sort("run_id")


def _read_row(path: Path) -> pl.DataFrame:
    """One run's row; a damaged file (truncated, overwritten) is an error naming it and the fix."""
    try:
        row = pl.read_parquet(path)
    except Exception as e:  # polars and pyarrow fail on damaged Parquet in many ways (ComputeError, OSError, ...)
        raise MixforgeError(f"{path}: the row of run {path.stem} cannot be read ({type(e).__name__}: {str(e)[:200]}): "
                            "the file is damaged; delete it and rerun the sweep or search that trained it (only "
                            "that run is retrained)") from None
    if row.height != 1 or "run_id" not in row.columns or row["run_id"][0] != path.stem:
        raise MixforgeError(f"{path}: not the row of run {path.stem} (rows: {row.height}); delete it and rerun the sweep "
                            "or search that trained it")
    return row


def tokens_summary(ws: Workspace) -> dict:
    record = ws.stage_record("tokens")
    if record is None:
        raise MixforgeError(f"no token shards in {ws.root}: run `mixforge build` (it ends with the tokens stage)")
    return record["counts"]


def checked_tokens_summary(ws: Workspace) -> dict:
    """The tokens stage's summary, after checking its files (token shards, tasks, eval texts)
    against the digests the stage recorded: a proxy never trains or scores on changed tokens."""
    summary = tokens_summary(ws)
    require_intact(ws, ["tokens"], "digest")
    return summary


def token_shard_digests(ws: Workspace) -> dict[str, str]:
    """Every token shard's digest by path under tokens/extra/ (`train/<component>.bin`, ...): the
    tokens stage's record, or hashed here for a workspace whose record lacks them."""
    return tokens_summary(ws).get("shard_digests") or shard_digests(tokens_dir(ws))


def data_fingerprint(cfg: MixforgeConfig, ws: Workspace) -> str:
    """What a run's figures depend on besides mixture and settings: the token shards (from the
    tokens stage's record, or hashed here for a workspace whose record lacks them) and the content
    of every task file."""
    folder = tokens_dir(ws)
    shards = token_shard_digests(ws)
    built_in = folder / "tasks" / "next_line.jsonl"
    task_files = ([built_in] if built_in.exists() else []) + [cfg.resolve(t) for t in cfg.proxy.tasks]
    task_digests = {t.name: file_digest(t) for t in task_files if t.exists()}
    return hashlib.sha256(json.dumps([shards, task_digests], sort_keys=True).encode()).hexdigest()


def run_freshness(cfg: MixforgeConfig, ws: Workspace) -> dict:
    """The runs table against the data built now: runs on the current token shards (reused by a
    sweep or search that asks for them again) and stale ones (trained before a build changed the
    components or their tokens; kept, never mixed into a new search's fit)."""
    rows = RunsTable(ws).load()
    if rows.height == 0 or ws.stage_record("tokens") is None:
        return {"total": rows.height, "current": 0, "stale": 0, "unknown": rows.height}
    current = data_fingerprint(cfg, ws)
    data = rows["data"] if "data" in rows.columns else pl.Series([None] * rows.height, dtype=pl.String)
    return {"total": rows.height, "current": int((data == current).sum()), "stale": int(((data != current) & data.is_not_null()).sum()),
            "unknown": int(data.is_null().sum())}
