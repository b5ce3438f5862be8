"""The workspace: one folder per stage, atomic writes, and stage records that make every stage
resumable (skip when inputs and settings are unchanged, redo with --force).

A stage writes everything under `<stage>.partial/` first (datatrove's completion markers there
let an interrupted stage resume task by task), then `publish` moves the results into place and
writes `<stage>/_stage.json` last. A stage counts as done only when that record exists and its
fingerprint matches, so a kill at any moment leaves either the old state or the new one.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mixforge.stage_files import FILES_KEY, inventory

STAGE_RECORD = "_stage.json"


@functools.cache
def _umask() -> int:
    """The process's umask, read once. Linux reports it in /proc (no change to the process);
    elsewhere it is set and put back at first use."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temp file in the same folder, fsync, then rename over `path`. The file gets the
    mode a plain open() would (0666 less the umask), not mkstemp's private 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o666 & ~_umask())
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def atomic_write_parquet(path: Path, table) -> None:
    """A pyarrow Table or polars DataFrame, written atomically."""
    import io

    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(table.to_arrow() if hasattr(table, "to_arrow") else table, buf)
    atomic_write_bytes(path, buf.getvalue())


def atomic_write_npy(path: Path, array) -> None:
    import io

    import numpy as np

    buf = io.BytesIO()
    np.save(buf, array)
    atomic_write_bytes(path, buf.getvalue())


def read_json(path: Path) -> Any | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


@dataclass(frozen=True)
class Workspace:
    """Paths of one workspace. Plain data: cheap to pass between Prefect tasks."""

    root: Path

    def stage_dir(self, stage: str) -> Path:
        return self.root / stage

    def docs_dir(self, stage: str) -> Path:
        """Kept documents of a stage: normalised Parquet shards."""
        return self.stage_dir(stage) / "docs"

    def partial_dir(self, stage: str) -> Path:
        return self.root / f"{stage}.partial"

    @property
    def removed_dir(self) -> Path:
        return self.root / "removed"

    @property
    def ledger_path(self) -> Path:
        return self.root / "ledger.json"

    def stage_record(self, stage: str) -> dict | None:
        return read_json(self.stage_dir(stage) / STAGE_RECORD)


    def stage_state(self, stage: str, fingerprint: str | None) -> str:
        """done (record matches the fingerprint), stale (record for other inputs/settings), missing."""
        record = self.stage_record(stage)
        if record is None:
            return "missing"
        return "done" if fingerprint is not None and record.get("fingerprint") == fingerprint else "stale"

    def removed_files(self, stage: str) -> list[Path]:
        """Shards of documents a stage removed: removed/<reason...>/<stage>-*.parquet."""
        if not self.removed_dir.exists():
            return []
        return sorted(self.removed_dir.rglob(f"{stage}-*.parquet"))

    def clear_stage(self, stage: str) -> None:
        """Forget a stage's published outputs (used by --force and before republishing)."""
        shutil.rmtree(self.stage_dir(stage), ignore_errors=True)
        for f in self.removed_files(stage):
            f.unlink()

    def adopt(self, stage: str) -> None:
        """Record the files of a stage published before records listed them (trust on first use)."""
        record = self.stage_record(stage)
        if record is not None and FILES_KEY not in record:
            atomic_write_json(self.stage_dir(stage) / STAGE_RECORD, record | {FILES_KEY: inventory(self, stage)})

    def publish(self, stage: str, record: dict) -> None:
        """Move `<stage>.partial/{docs,removed,extra}` into place, then write the stage record
        with the inventory of what was moved (mixforge/stage_files.py).

        Idempotent: rerunning after a kill part-way moves whatever is still left, then records.
        """
        partial = self.partial_dir(stage)
        final = self.stage_dir(stage)
        (final / STAGE_RECORD).unlink(missing_ok=True)
        final.mkdir(parents=True, exist_ok=True)
        src_removed = partial / "removed"
        if src_removed.exists():
            for f in sorted(src_removed.rglob("*.parquet")):
                dest = self.removed_dir / f.relative_to(src_removed)
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(f, dest)
        for name in ("docs", "extra", "logs"):
            src = partial / name
            if src.exists():
                shutil.rmtree(final / name, ignore_errors=True)
                os.replace(src, final / name)
        # the record lists every file with its size and digest: readers check what they open against it
        atomic_write_json(final / STAGE_RECORD, record | {FILES_KEY: inventory(self, stage)})
        shutil.rmtree(partial, ignore_errors=True)
