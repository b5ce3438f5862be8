"""Runs one stage resumably: skip when done, resume a partial run, count, check, publish."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pyarrow.parquet as pq

from mixforge import __version__
from mixforge.errors import InputError
from mixforge.pipelines.run.increments import LayerPlan, carry_over, save_plan
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
    layers: list[dict] = field(default_factory=list)  # what each build added (see pipelines/run/increments.py)


StageInputs = dict  # {stage name: StageResult}: the results of the stages before, in order


@dataclass(frozen=True)
class StageOptions:
    """How a build runs its stages: `force` redoes each in full, `strict` fails on the first bad
    record instead of counting it in the ledger, `allow_changed` lets ingest reread sources that
    changed or went since the last build (their old documents are retracted)."""

    force: bool = False
    strict: bool = False
    allow_changed: bool = False


def run_stage(
    ws: Workspace,
    stage: str,
    fingerprint: str,
    body: Callable[[Path], None],
    count_input: Callable[[Path], tuple[int, int | None]],
    force: bool = False,
    strict: bool = False,
    settings: dict | None = None,
    layer: LayerPlan | None = None,
    base: str | None = None,
) -> StageResult:
    """Run `body(partial_dir)` unless the stage is already done for `fingerprint`.

    `body` writes kept shards to `partial/docs` and removed shards to `partial/removed/<reason>/`.
    `count_input(partial)` returns (documents, characters) that entered the stage, counted
    independently of its outputs (characters may be None: then they are in = out + removed).
    With an incremental `layer`, the published outputs are carried into the partial folder, `body`
    adds the layer's files (named by `layer.name`) and `count_input` counts what entered the layer.
    """
    t0 = time.perf_counter()
    record = ws.stage_record(stage)
    if not force and record and record.get("fingerprint") == fingerprint:
        _finish_publish(ws, stage, fingerprint)
        return _result(ws, stage, "skipped", record, 0.0)

    partial = _prepare_partial(ws, stage, fingerprint, force, layer)
    ready = read_json(partial / PARTIAL_RECORD)
    if ready is None:
        body(partial)
        counts, layers = _count_layers(stage, partial, count_input, layer)
        if strict:
            _fail_on_malformed(partial)
        ready = _record(stage, fingerprint, counts.to_dict(), settings, base, layers)
        atomic_write_json(partial / PARTIAL_RECORD, ready)
    ws.publish(stage, ready)  # the stage record holds its ledger entry: both become visible at once
    return _result(ws, stage, "ran", ready, time.perf_counter() - t0)


def _result(ws: Workspace, stage: str, status: str, record: dict, seconds: float, docs_dir: str | None = None) -> StageResult:
    return StageResult(stage, status, record["fingerprint"], docs_dir or str(ws.docs_dir(stage)), record["counts"], seconds,
                       record.get("layers", []))


def _count_layers(stage: str, partial: Path, count_input, layer: LayerPlan | None) -> tuple[StageCounts, list[dict]]:
    """Counts of the whole stage and of the layer this run added, each checked: in = out + removed.
    The whole stage's input is the sum of its layers' inputs; its outputs are counted from files."""
    if layer is None or not layer.incremental:
        counts = _count(stage, partial, count_input)
        counts.check()
        files = [f.name for f in parquet_files(partial / "docs")]
        return counts, ([{"id": layer.id, "consumed": layer.consumed, "files": files, "counts": counts.to_dict()}] if layer else [])
    earlier = {name for previous in layer.previous for name in previous["files"]}
    new_docs = [f for f in parquet_files(partial / "docs") if f.name not in earlier]
    new_removed = [f for f in parquet_files(partial / "removed") if f.name.startswith(layer.removed_prefix(stage) + "-")]
    added = _count_files(stage, new_docs, new_removed, count_input(partial))
    added.check()
    total_in = tuple(sum(previous["counts"][k] for previous in layer.previous) + getattr(added, k) for k in ("docs_in", "chars_in"))
    total = _count_files(stage, parquet_files(partial / "docs"), parquet_files(partial / "removed"), total_in)
    total.check()
    new_layer = {"id": layer.id, "consumed": layer.consumed, "files": [f.name for f in new_docs], "counts": added.to_dict()}
    return total, layer.previous + [new_layer]


def _finish_publish(ws: Workspace, stage: str, fingerprint: str) -> None:
    """A kill after the record was written but before the partial folder went leaves that folder:
    remove it (it was published), but never a partial run for other settings."""
    partial = ws.partial_dir(stage)
    if (read_json(partial / PARTIAL_FINGERPRINT) or {}).get("fingerprint") == fingerprint:
        shutil.rmtree(partial, ignore_errors=True)


def _prepare_partial(ws: Workspace, stage: str, fingerprint: str, force: bool, layer: LayerPlan | None = None) -> Path:
    """The stage's partial folder: reused when it was started for the same fingerprint (resume),
    else emptied along with the stage's old outputs (they are for other inputs or settings). An
    incremental run first links the published outputs into it: a kill before the fingerprint is
    written leaves them published, after it the partial holds them."""
    partial = ws.partial_dir(stage)
    started = read_json(partial / PARTIAL_FINGERPRINT) or {}
    if force or started.get("fingerprint") != fingerprint:
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        if layer is not None:
            if layer.incremental:
                carry_over(ws, stage, partial)
            save_plan(partial, layer, fingerprint)
        atomic_write_json(partial / PARTIAL_FINGERPRINT, {"fingerprint": fingerprint})
    if read_json(partial / PARTIAL_RECORD) is None:  # not yet publishing: what the run keeps is in the partial
        ws.clear_stage(stage)
    return partial


def _record(stage: str, fingerprint: str, counts: dict, settings: dict | None, base: str | None = None,
            layers: list[dict] | None = None) -> dict:
    return {
        "stage": stage,
        "fingerprint": fingerprint,
        "base": base,
        "layers": layers or [],
        "counts": counts,
        "settings": settings or {},
        "mixforge_version": __version__,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _count(stage: str, partial: Path, count_input) -> StageCounts:
    return _count_files(stage, parquet_files(partial / "docs"), parquet_files(partial / "removed"), count_input(partial))


def _count_files(stage: str, docs: list[Path], removed_files: list[Path], counted_in: tuple[int, int | None]) -> StageCounts:
    docs_out, chars_out = shard_counts(docs)
    removed = removed_counts(removed_files)
    docs_in, chars_in = counted_in
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


def run_side_stage(
    ws: Workspace,
    stage: str,
    fingerprint: str,
    body: Callable[[Path], dict],
    docs_dir: str,
    force: bool = False,
    settings: dict | None = None,
    layer: LayerPlan | None = None,
    base: str | None = None,
) -> StageResult:
    """A stage that adds attributes (vectors, cluster ids, scores) to documents without removing
    any: `body(partial)` writes under `partial/extra/` and returns a summary for the record.
    Resumable and atomic like `run_stage`; `docs_dir` names the documents it describes. With an
    incremental `layer`, `body` describes only `layer.inputs` and its summary is the layer's."""
    t0 = time.perf_counter()
    record = ws.stage_record(stage)
    if not force and record and record.get("fingerprint") == fingerprint:
        _finish_publish(ws, stage, fingerprint)
        return _result(ws, stage, "skipped", record, 0.0, docs_dir)
    partial = _prepare_partial(ws, stage, fingerprint, force, layer)
    ready = read_json(partial / PARTIAL_RECORD)
    if ready is None:
        summary = body(partial)
        layers = layer.previous + [{"id": layer.id, "consumed": layer.consumed, "files": layer.inputs, "counts": summary}] if layer else []
        ready = _record(stage, fingerprint, summary, settings, base, layers)
        atomic_write_json(partial / PARTIAL_RECORD, ready)
    ws.publish(stage, ready)
    return _result(ws, stage, "ran", ready, time.perf_counter() - t0, docs_dir)
