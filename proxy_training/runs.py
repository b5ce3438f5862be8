"""The runs table: one row per proxy run (run_id, one `w_<component>` weight column per
component, metric columns, proxy config, seed, tokens, tokenizer, wall time, device).

Each run is written as its own small Parquet file, atomically, under `<workspace>/runs/rows/`:
an interrupted run leaves no partial row, two runs never rewrite each other, and a sweep skips
run ids already present. `runs/runs.parquet` is the merged view, rewritten after each append.
"""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl

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
        return pl.concat([pl.read_parquet(f) for f in files], how="diagonal_relaxed").sort("run_id")
