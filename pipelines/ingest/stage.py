"""Ingest: read every source with datatrove readers into normalised Parquet shards.

Work is planned as (source, file) items packed into tasks of about `shard_mb` of input each, so
a thousand small files become a few moderate shards and one big corpus spreads over workers.
Each task writes its own shard(s); bad records go to removed/malformed/<kind>/.
"""

from __future__ import annotations

import json
import math
import warnings
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import zstandard
from datatrove.data import Document
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.readers import HuggingFaceDatasetReader

from mixforge import __version__
from mixforge.config import MixforgeConfig, SourceConfig, section_hash
from mixforge.errors import ConfigError, InputError, MixforgeError
from mixforge.ledger import parquet_files
from mixforge.pipelines.run import (BUILDS, LayerPlan, StageInputs, StageOptions, StageResult, current_build,
                                    default_workers, note_sources, resumed_plan, run_pipeline, run_stage, stat_total)
from mixforge.workspace import Workspace, atomic_write_json, atomic_write_parquet
from mixforge.pipelines.outputs import SOURCES_FILE, sources_manifest
from mixforge.pipelines.ingest.readers import (
    SUPPORTED,
    LenientJsonlReader,
    WholeFileParquetReader,
    RecordAdapter,
    TextFileReader,
    TruncatedFile,
    decompressed_chunks,
    is_hf_disk,
    malformed_record,
    source_files,
)
from mixforge.pipelines.ingest.records import RouteRemoved, adopt_layer_docs, docs_writer, layer_docs_dir, removed_writer
from mixforge.pipelines.ingest.remote import remote_files
from mixforge.urls import is_url
from mixforge.pipelines.ingest.source_manifest import SourceDiff, changed_since, diff_manifests, source_manifest


# What reading a damaged or inaccessible file raises (truncated gzip/zstd, bad Parquet, I/O errors)
UNREADABLE = (OSError, EOFError, zlib.error, zstandard.ZstdError, pa.ArrowException)
UNSUPPORTED = "unsupported"  # a file in a source's folder or glob that no reader reads
BLANK_CHECK_BYTES = 1 << 16  # plan_work looks inside files this small for whitespace-only content


@dataclass(frozen=True)
class WorkItem:
    """One file (or one saved HF dataset) of one source."""

    source: int
    fmt: str  # jsonl, parquet, txt, hf_disk or UNSUPPORTED
    path: str
    relative: str
    bytes: int


def source_key(cfg: MixforgeConfig, index: int) -> str:
    """A short name for a source, unique in the config: its label or its path's stem."""
    return source_keys(cfg)[index]


def source_keys(cfg: MixforgeConfig) -> list[str]:
    """Every source's key in one pass (per source, a config of thousands took minutes)."""
    stems = [_stem(s) for s in cfg.sources]
    counts = Counter(stems)
    keys = [stem.replace("/", "_") for stem in stems]  # the id's first path segment names the source
    return [key if counts[key] == 1 else f"{key}#{i}" for i, key in enumerate(keys)]


def _stem(source: SourceConfig) -> str:
    name = source.label or Path(source.path.rstrip("/")).name
    for suffix in (".gz", ".zst", ".jsonl", ".json", ".parquet", ".txt", ".ndjson"):
        name = name.removesuffix(suffix)
    return name or "source"


def plan_work(cfg: MixforgeConfig) -> list[WorkItem]:
    """Every input file, in a stable order, each with its own format. Missing or empty sources
    are config errors naming the source, found before any work."""
    items: list[WorkItem] = []
    for i, source in enumerate(cfg.sources):
        if is_url(source.path):
            items += _remote_items(i, source)
            continue
        root = cfg.resolve(source.path)
        if source.format == "hf_disk" or (source.format == "auto" and is_hf_disk(root)):
            items.append(_hf_item(i, root, source.split))
            continue
        if source.split is not None:
            raise ConfigError(f"sources[{i}].split: {source.split!r} is for a Hugging Face DatasetDict saved with save_to_disk; {root} is not one")
        files = source_files(root, source.format)
        if not files:
            raise ConfigError(f"sources[{i}].path: no input found at {root}")
        if all(fmt is None for _, fmt in files):
            names = ", ".join(f.name for f, _ in files[:5]) + (", ..." if len(files) > 5 else "")
            asked = f"{source.format} " if source.format != "auto" else ""
            raise ConfigError(f"sources[{i}].path: no {asked}file of a supported format at {root} (found {names}; supported: {SUPPORTED})")
        if all(_blank(f, fmt) for f, fmt in files):  # stops at the first file with data
            raise ConfigError(
                f"sources[{i}].path: {root} holds no data (empty or whitespace-only): fill it or remove the source"
            )
        base = root if root.is_dir() else root.parent
        items += [WorkItem(i, fmt or UNSUPPORTED, str(f), str(f.relative_to(base)), f.stat().st_size) for f, fmt in files]
    return items


def _remote_items(i: int, source: SourceConfig) -> list[WorkItem]:
    """The objects of a source in object storage, checked as plan_work checks local files."""
    url = source.path
    if source.format == "hf_disk" or source.split is not None:
        raise ConfigError(f"sources[{i}].path: {url}: a dataset saved with save_to_disk is read from a local folder; "
                          "for a dataset in a store, name its Parquet or JSONL files")
    try:
        files = remote_files(url, source.format)
    except MixforgeError:
        raise
    except Exception as e:  # each store raises its own types: no such bucket, no access, no endpoint
        raise ConfigError(f"sources[{i}].path: cannot list {url}: {type(e).__name__}: {e}") from None
    if not files:
        raise ConfigError(f"sources[{i}].path: no object found at {url}")
    if all(fmt is None for _, fmt, _, _ in files):
        names = ", ".join(rel for _, _, rel, _ in files[:5]) + (", ..." if len(files) > 5 else "")
        raise ConfigError(f"sources[{i}].path: no object of a supported format at {url} (found {names}; supported: {SUPPORTED})")
    if all(size == 0 for *_, size in files):
        raise ConfigError(f"sources[{i}].path: {url} holds no data (every object is empty): fill it or remove the source")
    return [WorkItem(i, fmt or UNSUPPORTED, u, rel, size) for u, fmt, rel, size in files]


def _hf_item(i: int, root: Path, split: str | None) -> WorkItem:
    """A saved HF Dataset, or one split of a saved DatasetDict (`sources[i].split`)."""
    if not root.is_dir():
        raise ConfigError(f"sources[{i}].path: {root} is not a folder saved with datasets' save_to_disk")
    relative = root.name
    splits_file = root / "dataset_dict.json"
    if splits_file.exists():
        splits = json.loads(splits_file.read_text()).get("splits", [])
        if split is None:
            raise ConfigError(f"sources[{i}].split: {root} is a DatasetDict with splits {', '.join(splits)}: set `split:` on the source to the one to read")
        if split not in splits:
            raise ConfigError(f"sources[{i}].split: {split!r} is not a split of {root}; its splits: {', '.join(splits)}")
        root, relative = root / split, f"{root.name}/{split}"
    elif split is not None:
        raise ConfigError(f"sources[{i}].split: {root} is a single dataset, not a DatasetDict: remove `split: {split}`")
    size = sum(f.stat().st_size for f in root.rglob("*") if f.is_file())
    return WorkItem(i, "hf_disk", str(root), relative, size)


def _blank(path: Path, fmt: str | None) -> bool:
    """An empty or whitespace-only file, or a Parquet file without rows. Only files up to
    BLANK_CHECK_BYTES are opened: a bigger one is taken to hold data (ingest counts what it holds)."""
    size = path.stat().st_size
    if size == 0:
        return True
    try:
        if fmt == "parquet":
            return pq.read_metadata(path).num_rows == 0
        if fmt is None or size > BLANK_CHECK_BYTES:
            return False
        with open(path, "rb") as f:
            return not any(chunk.strip() for chunk in decompressed_chunks(f))
    except (TruncatedFile, *UNREADABLE):
        return False  # damaged, not empty: ingest reports it


MIN_TASKS = 8  # enough tasks to keep 8 workers busy on a small corpus


def pack_tasks(items: list[WorkItem], shard_mb: int) -> list[list[WorkItem]]:
    """Greedy packing into tasks of about `shard_mb` (at least MIN_TASKS when there are enough
    files). Independent of the worker count, so shards and ids never depend on the machine."""
    if not items:
        return []
    total = sum(it.bytes for it in items)
    n_tasks = min(len(items), max(math.ceil(total / (shard_mb * 2**20)), MIN_TASKS))
    tasks: list[list[WorkItem]] = [[] for _ in range(n_tasks)]
    loads = [0] * n_tasks
    for it in sorted(items, key=lambda it: (-it.bytes, it.source, it.relative)):
        k = loads.index(min(loads))
        tasks[k].append(it)
        loads[k] += it.bytes
    for t in tasks:  # read in source order inside a task
        t.sort(key=lambda it: (it.source, it.relative))
    return tasks


def ingest_base(cfg: MixforgeConfig) -> str:
    """What ingest depends on besides the files: the source settings, shard size and version."""
    # the mixforge version is part of the root fingerprint: an upgrade rebuilds every stage
    sources = [s.model_dump(exclude={"filters", "kind", "license"}) for s in cfg.sources]  # a licence changes no data
    return section_hash(__version__, sources, cfg.shard_mb)


def work_manifest(cfg: MixforgeConfig, items: list[WorkItem]) -> list[dict]:
    """The source manifest of `items` (hashes reused from the published ingest's where size and
    mtime are unchanged), each entry with the `key` that starts its documents' ids."""
    previous = sources_manifest(Workspace(cfg.workspace_dir)) or []
    entries = source_manifest([it.path for it in items], previous)
    keys = source_keys(cfg)
    return [e | {"key": f"{keys[it.source]}/{it.relative}"} for e, it in zip(entries, items)]


def input_fingerprint(cfg: MixforgeConfig, manifest: list[dict]) -> str:
    """The settings and each input's path, size and content hash (not its mtime: a file touched
    without a change is not new input)."""
    return section_hash(ingest_base(cfg), [(e["path"], e["size"], e["hash"]) for e in manifest])


def ingest_fingerprint(cfg: MixforgeConfig, upstream_fingerprint: str = "") -> str:
    """The first stage's: its settings and inputs (there is no upstream stage)."""
    return input_fingerprint(cfg, work_manifest(cfg, plan_work(cfg)))


class SourcesReader(PipelineStep):
    """Reads this task's work items with the datatrove reader of each item's format."""

    name = "📖 Sources"
    type = "📖 - READER"

    def __init__(self, tasks: list[list[WorkItem]], sources: list[dict], keys: list[str]):
        super().__init__()
        self.tasks, self.sources, self.keys = tasks, sources, keys

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        for item in self.tasks[rank]:
            read = 0
            try:
                for doc in self._read(item):
                    read += 1
                    self.stat_update("records")
                    yield doc
            except UNREADABLE as e:
                # a corrupt or unreadable file: what was read is kept, the rest is one recorded loss
                where = f"{item.path}:{read + 1}"
                message = f"cannot read the file from record {read + 1} on: {type(e).__name__}: {e}"
                key = f"{self.keys[item.source]}/{item.relative}"
                self.stat_update("records")
                yield Document(**malformed_record(f"{key}:unreadable", where, "unreadable_file", message, ""))

    def _read(self, item: WorkItem):
        src = SourceConfig.model_validate(self.sources[item.source])
        key = self.keys[item.source]
        if item.fmt == UNSUPPORTED:
            yield Document(**_unsupported_record(item, src, f"{key}/{item.relative}"))
            return
        adapter = RecordAdapter(
            source_key=f"{key}/{item.relative}",
            label=src.label or key if src.label_field is None else None,
            label_field=src.label_field,
            text_field=src.text_field,
            id_field=src.id_field,
            display_path=item.path,
        )
        common = dict(adapter=adapter, text_key=src.text_field, id_key=src.id_field or "id")
        if item.fmt == "hf_disk":
            reader = HuggingFaceDatasetReader(item.path, load_from_disk=True, **common)
            yield from reader.run(None, 0, 1)
            return
        folder, name = item.path.rsplit("/", 1)  # a local path or a URL: datatrove opens either
        if item.fmt == "jsonl":
            reader = LenientJsonlReader(folder, add_file_path=False, **common)
        elif item.fmt == "parquet":
            reader = WholeFileParquetReader(folder, read_metadata=True, **common)
        else:
            reader = TextFileReader(folder, add_file_path=False, **common)
        yield from reader.read_file(name)


def _unsupported_record(item: WorkItem, src: SourceConfig, key: str) -> dict:
    """A file of the source that is not read, counted so that it shows in the ledger (and fails
    --strict) instead of being skipped unseen; one stray file does not stop a scheduled build."""
    why = f"not a {src.format} file (sources[{item.source}].format)" if src.format != "auto" else "not a supported format"
    message = f"file not read: {why}; supported: {SUPPORTED}"
    return malformed_record(f"{key}:unsupported", f"{item.path}:1", "unsupported_file", message, "")


def ingest_pipeline(cfg: MixforgeConfig, tasks: list[list[WorkItem]], out_dir: Path, plan: LayerPlan) -> list:
    keys = source_keys(cfg)
    sources = [s.model_dump() for s in cfg.sources]
    return [
        SourcesReader(tasks, sources, keys),
        RouteRemoved(removed_writer(str(out_dir / "removed"), plan.removed_prefix("ingest"))),
        docs_writer(str(layer_docs_dir(out_dir, plan)), cfg.shard_mb),
    ]


def run_ingest(cfg: MixforgeConfig, inputs: StageInputs | None = None, options: StageOptions = StageOptions()) -> StageResult:
    """Ingest the sources into `<workspace>/ingest/docs/` (the first stage: no inputs). After a
    build, only files added since are read, into a new layer; a changed or deleted file is an error
    naming it, unless `options.allow_changed`: then ingest runs in full and the old documents of
    those files are retracted."""
    ws = Workspace(cfg.workspace_dir)
    build = current_build(ws)
    items = plan_work(cfg)
    manifest = work_manifest(cfg, items)
    fingerprint = input_fingerprint(cfg, manifest)
    base = ingest_base(cfg)
    plan = _plan_ingest(cfg, ws, build, manifest, base, fingerprint, options.force, options.allow_changed)
    new_items = [it for it in items if it.path in set(plan.inputs)]
    tasks = pack_tasks(new_items, cfg.shard_mb)
    workers = default_workers(cfg.workers)

    def body(partial: Path) -> None:
        atomic_write_json(partial / "extra" / SOURCES_FILE, manifest)
        run_pipeline(
            cfg,
            ingest_pipeline(cfg, tasks, partial, plan),
            tasks=len(tasks),
            workers=workers,
            logging_dir=partial / "logs",
            description="ingest" + (f" ({len(new_items)} new files)" if plan.incremental else ""),
            task_sizes=[sum(it.bytes for it in t) // 2**20 or 1 for t in tasks],
            unit="MB",
        )
        changed = changed_since(manifest)  # what was read must be what the manifest records
        if changed:
            raise InputError("source files changed while ingest read them, so what was read is not what their size and "
                             "hash say:\n" + "\n".join(f"  {c}" for c in changed) +
                             "\nNothing was published. Rerun the build once the files are complete.")
        adopt_layer_docs(partial, plan)

    def count_input(partial: Path) -> tuple[int, None]:
        return stat_total(partial / "logs", SourcesReader.name, "records"), None

    settings = {"sources": [s.model_dump() for s in cfg.sources], "files": len(items), "tasks": len(tasks)}
    result = run_stage(ws, "ingest", fingerprint, body, count_input, force=options.force, strict=options.strict, settings=settings,
                       layer=plan, base=base)
    if result.status == "ran":
        atomic_write_json(ws.root / BUILDS / f"{build}-sources.json", manifest)
    check_every_source_kept_documents(cfg, result)
    return result


def _plan_ingest(cfg: MixforgeConfig, ws: Workspace, build: str, manifest: list[dict], base: str, fingerprint: str,
                 force: bool, allow_changed: bool) -> LayerPlan:
    """Incremental when the published ingest had the same settings and files were only added.
    What the build found (files added, changed, deleted; retracted documents) goes in its record."""
    paths = [e["path"] for e in manifest]
    full = LayerPlan(build, [build], [], paths)
    resumed = None if force else resumed_plan(ws, "ingest", fingerprint)
    record = ws.stage_record("ingest")
    if resumed or (record and record.get("fingerprint") == fingerprint and not force):
        return resumed or full  # resuming (the build record has the diff), or done
    published = sources_manifest(ws)
    diff = diff_manifests(published or [], manifest)
    plan, retracted = full, None
    if published is not None and (diff.changed or diff.deleted):
        if not allow_changed:
            named = "\n".join(f"  {kind}: {p}" for kind, ps in (("changed", diff.changed), ("deleted", diff.deleted)) for p in ps)
            raise InputError(f"input files changed or were deleted since the last build:\n{named}\n"
                             "Restore them, or rerun with --allow-changed to rebuild and retract their old documents.")
        retracted = retract(ws, build, published, diff)
    elif record and published is not None and not force and record.get("base") == base and diff.added and record.get("layers"):
        plan = LayerPlan(build, [build], record.get("layers", []), diff.added)
    note_sources(ws, build, diff.to_dict(), retracted)
    return plan


def retract(ws: Workspace, build: str, published: list[dict], diff: SourceDiff) -> dict:
    """The published documents of changed and deleted files, listed in `retracted/<build>.parquet`
    (id, file, why) before the full rebuild replaces them."""
    keys = {e["key"]: ("changed" if e["path"] in diff.changed else "deleted") for e in published
            if e["path"] in diff.changed or e["path"] in diff.deleted}
    files = parquet_files(ws.docs_dir("ingest"))
    frame = pl.DataFrame(schema={"id": pl.String})
    if files:
        frame = pl.scan_parquet(files).select("id").collect()
    frame = frame.with_columns(pl.col("id").str.replace(r":[^:]*$", "").alias("file"))
    frame = frame.filter(pl.col("file").is_in(list(keys))).with_columns(pl.col("file").replace_strict(keys, default="").alias("why"))
    atomic_write_parquet(ws.root / "retracted" / f"{build}.parquet", frame)
    return {"docs": frame.height, "files": sorted(keys), "list": f"retracted/{build}.parquet"}


def check_every_source_kept_documents(cfg: MixforgeConfig, result: StageResult) -> None:
    """A source that yields no document (every record malformed) is named now, not found out
    stages later as "too few documents": an error when no source has any, else a warning."""
    files = parquet_files(Path(result.docs_dir))
    kept: dict[str, int] = {}
    if files:
        keys = pl.scan_parquet(files).select(pl.col("id").str.split("/").list.first().alias("key"))
        kept = dict(keys.group_by("key").len().collect().iter_rows())
    keys = source_keys(cfg)
    empty = [f"sources[{i}] ({s.path})" for i, s in enumerate(cfg.sources) if not kept.get(keys[i])]
    if not empty:
        return
    message = f"{', '.join(empty)}: no document kept at ingest: its records are all malformed, or it has none (see `mixforge status` and {cfg.workspace_dir / 'removed' / 'malformed'})"
    if len(empty) == len(cfg.sources):
        raise InputError(f"no documents to build from: {message}")
    warnings.warn(message, stacklevel=2)
