"""The ledger: per stage, documents and characters in, out and removed by reason.

Counts are read from the files a stage wrote (kept shards and removed/<reason>/ shards), never
from the stage's own bookkeeping, and `docs_in` comes from an independent count (the reader's
record counter, or the previous stage's output). So `in == out + sum(removed)` is a real check:
a step that drops documents without recording them breaks it and stops the build.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq

from mixforge.errors import LedgerError


@dataclass
class StageCounts:
    """One stage's line in the ledger."""

    stage: str
    docs_in: int
    docs_out: int
    chars_in: int
    chars_out: int
    removed: dict[str, dict[str, int]] = field(default_factory=dict)  # reason -> {docs, chars}

    @property
    def docs_removed(self) -> int:
        return sum(r["docs"] for r in self.removed.values())

    @property
    def chars_removed(self) -> int:
        return sum(r["chars"] for r in self.removed.values())

    @property
    def chars_trimmed(self) -> int:
        """Characters cut from kept documents by line-level rules (C4's line filter)."""
        return self.chars_in - self.chars_out - self.chars_removed

    def check(self) -> None:
        if self.docs_in != self.docs_out + self.docs_removed:
            raise LedgerError(
                f"stage {self.stage!r}: documents in ({self.docs_in}) != out ({self.docs_out}) + removed "
                f"({self.docs_removed}); {self.docs_in - self.docs_out - self.docs_removed} unaccounted for. "
                "The stage's outputs were not published."
            )

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(docs_removed=self.docs_removed, chars_removed=self.chars_removed, chars_trimmed=self.chars_trimmed)
        return d


def shard_counts(files: list[Path]) -> tuple[int, int]:
    """(documents, characters) of normalised shards, reading only metadata and `chars`."""
    docs = chars = 0
    for f in files:
        table = pq.read_table(f, columns=["chars"])
        docs += table.num_rows
        chars += int(pc.sum(table["chars"]).as_py() or 0)
    return docs, chars


def removed_counts(files: list[Path]) -> dict[str, dict[str, int]]:
    """reason -> {docs, chars} over removed shards."""
    out: dict[str, dict[str, int]] = defaultdict(lambda: {"docs": 0, "chars": 0})
    for f in files:
        table = pq.read_table(f, columns=["reason", "chars"])
        for reason, chars in zip(table["reason"].to_pylist(), table["chars"].to_pylist()):
            out[reason]["docs"] += 1
            out[reason]["chars"] += chars
    return dict(sorted(out.items()))


def parquet_files(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.parquet")) if folder.exists() else []


def docs_per_source(folder: Path) -> dict[str, int]:
    """Kept documents per source label in a folder of normalised shards."""
    counts: dict[str, int] = defaultdict(int)
    for f in parquet_files(folder):
        for label in pq.read_table(f, columns=["source"])["source"].to_pylist():
            counts[label] += 1
    return dict(counts)
