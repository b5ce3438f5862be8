"""Texts of an export's shards in the export's order, gathered out of core.

The chosen order is a global shuffle, so one output shard draws from every prune shard. One pass
over the prune shards writes each chosen occurrence's text to a spill file per prune shard, sorted
by output shard (parquet row groups of SPILL_ROWS, so their statistics let a read skip the rest);
each output shard then reads only its own rows from every spill file. Memory holds one prune
shard or one output shard of text, never the corpus; disk holds the chosen texts once more until
the export is done.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from mixforge.pipelines.export.plan import DocumentTable
from mixforge.workspace import Workspace

SPILL_ROWS = 1024


class ShardTexts:
    def __init__(self, ws: Workspace, table: DocumentTable, order: np.ndarray, cuts: list[tuple[int, int]], spill: Path):
        from mixforge.pipelines.tokens import workspace_frames

        spill.mkdir(parents=True, exist_ok=True)
        out_shard = np.repeat(np.arange(len(cuts), dtype=np.int32), [b - a for a, b in cuts])
        prune_shard = table.frame["shard"].to_numpy()[order]
        by_prune = np.argsort(prune_shard, kind="stable")  # positions grouped by prune shard, in order within each
        bounds = np.searchsorted(prune_shard[by_prune], np.arange(table.shards + 1))
        rows = table.frame["row"].to_numpy()
        self.files = []
        for s, frame in enumerate(workspace_frames(ws)):
            positions = by_prune[bounds[s] : bounds[s + 1]]
            if not len(positions):
                continue
            part = pl.DataFrame({"out": out_shard[positions], "position": positions,
                                 "text": frame["text"].gather(rows[order[positions]])})
            path = spill / f"{s}.parquet"
            part.sort("out", "position").write_parquet(path, row_group_size=SPILL_ROWS, statistics=True)
            self.files.append(path)

    def texts(self, shard: int) -> list[str]:
        """The texts of output shard `shard`, in the export's order."""
        if not self.files:
            return []
        rows = pl.scan_parquet(self.files).filter(pl.col("out") == shard).select("position", "text").collect()
        return rows.sort("position")["text"].to_list()
