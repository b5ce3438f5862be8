"""Runs one stage resumably: skip when done, resume a partial run, count, check, publish."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pyarrow.parquet as pq

from mixforge import __version__
from mixforge.errors import InputError
from mixforge.ledger import StageCounts, parquet_files, removed_counts, shard_counts
from mixforge.workspace import Workspace, atomic_write_json, read_json

PARTIAL_FINGERPRINT = "_fingerprint.json"
PARTIAL_RECORD = "_record.json"  # written once counts are checked: from here on, only publishing is left


@dataclass
class StageResult:
    """What a stage hands to the next one (a small record, never data)."""

    stage: str
    status: str  # "ran" or "skipped"
    fingerprint: str
    docs_dir: str
    counts: dict
    seconds: float


def run_stage(
    ws: Workspace,
    stage: str,
    fingerprint: str,
    body: Callable[[Path], None],
    count_input: Callable[[Path], tuple[int, int | None]],
    force: bool = False,
    strict: bool = False,
    settings: dict | None = None,
) -> StageResult:
    """Run `body(partial_dir)` unless the stage is already done for `fingerprint`.

    `body` writes kept shards to `partial/docs` and removed shards to `partial/removed/<reason>/`.
    `count_input(partial)` returns (documents, characters) that entered the stage, counted
    independently of its outputs (characters may be None: then they are in = out + removed).
    """
    t0 = time.perf_counter()
    record = ws.stage_record(stage)
    if not force and record and record.get("fingerprint") == fingerprint:
        _finish_publish(ws, stage, fingerprint)
        _write_ledger(ws)  # repairs a ledger.json that a kill right after publishing left behind
        return StageResult(stage, "skipped", fingerprint, str(ws.docs_dir(stage)), record["counts"], 0.0)

    partial = _prepare_partial(ws, stage, fingerprint, force)
    ready = read_json(partial / PARTIAL_RECORD)
    if ready is None:
        body(partial)
        counts = _count(stage, partial, count_input)
        counts.check()
        if strict:
            _fail_on_malformed(partial)
        ready = _record(stage, fingerprint, counts.to_dict(), settings)
        atomic_write_json(partial / PARTIAL_RECORD, ready)
    ws.publish(stage, ready)  # the stage record holds its ledger entry: both become visible at once
    _write_ledger(ws)
    return StageResult(stage, "ran", fingerprint, str(ws.docs_dir(stage)), ready["counts"], time.perf_counter() - t0)


def _finish_publish(ws: Workspace, stage: str, fingerprint: str) -> None:
    """A kill after the record was written but before the partial folder went leaves that folder:
    remove it (it was published), but never a partial run for other settings."""
    partial = ws.partial_dir(stage)
    if (read_json(partial / PARTIAL_FINGERPRINT) or {}).get("fingerprint") == fingerprint:
        shutil.rmtree(partial, ignore_errors=True)


def _prepare_partial(ws: Workspace, stage: str, fingerprint: str, force: bool) -> Path:
    """The stage's partial folder: reused when it was started for the same fingerprint (resume),
    else emptied along with the stage's old outputs (they are for other inputs or settings)."""
    partial = ws.partial_dir(stage)
    started = read_json(partial / PARTIAL_FINGERPRINT) or {}
    if force or started.get("fingerprint") != fingerprint:
        shutil.rmtree(partial, ignore_errors=True)
        ws.clear_stage(stage)
        partial.mkdir(parents=True)
        atomic_write_json(partial / PARTIAL_FINGERPRINT, {"fingerprint": fingerprint})
    return partial


def _record(stage: str, fingerprint: str, counts: dict, settings: dict | None) -> dict:
    return {
        "stage": stage,
        "fingerprint": fingerprint,
        "counts": counts,
        "settings": settings or {},
        "mixforge_version": __version__,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _count(stage: str, partial: Path, count_input) -> StageCounts:
    docs_out, chars_out = shard_counts(parquet_files(partial / "docs"))
    removed = removed_counts(parquet_files(partial / "removed"))
    docs_in, chars_in = count_input(partial)
    if chars_in is None:
        chars_in = chars_out + sum(r["chars"] for r in removed.values())
    return StageCounts(stage, docs_in, docs_out, chars_in, chars_out, removed)


def _fail_on_malformed(partial: Path, show: int = 10) -> None:
    folder = partial / "removed" / "malformed"
    details: list[str] = []
    for f in parquet_files(folder):
        details += pq.read_table(f, columns=["detail"])["detail"].to_pylist()
    if details:
        lines = "\n".join(f"  {d}" for d in sorted(details)[:show])
        more = f"\n  ... and {len(details) - show} more" if len(details) > show else ""
        raise InputError(f"--strict: {len(details)} malformed record(s):\n{lines}{more}")


def _write_ledger(ws: Workspace) -> None:
    """ledger.json: a copy of the published stage records' counts for scripts. The records are the
    truth (`Workspace.ledger`), so a kill before this write loses nothing and the next run repairs it."""
    ledger = ws.ledger()
    if read_json(ws.ledger_path) != ledger:
        atomic_write_json(ws.ledger_path, ledger)


def run_side_stage(
    ws: Workspace,
    stage: str,
    fingerprint: str,
    body: Callable[[Path], dict],
    docs_dir: str,
    force: bool = False,
    settings: dict | None = None,
) -> StageResult:
    """A stage that adds attributes (vectors, cluster ids, scores) to documents without removing
    any: `body(partial)` writes under `partial/extra/` and returns a summary for the record.
    Resumable and atomic like `run_stage`; `docs_dir` names the documents it describes."""
    t0 = time.perf_counter()
    record = ws.stage_record(stage)
    if not force and record and record.get("fingerprint") == fingerprint:
        _finish_publish(ws, stage, fingerprint)
        return StageResult(stage, "skipped", fingerprint, docs_dir, record["counts"], 0.0)
    partial = _prepare_partial(ws, stage, fingerprint, force)
    ready = read_json(partial / PARTIAL_RECORD)
    if ready is None:
        summary = body(partial)
        ready = _record(stage, fingerprint, summary, settings)
        atomic_write_json(partial / PARTIAL_RECORD, ready)
    ws.publish(stage, ready)
    return StageResult(stage, "ran", fingerprint, docs_dir, ready["counts"], time.perf_counter() - t0)
