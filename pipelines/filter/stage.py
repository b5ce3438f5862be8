"""Filter: datatrove's quality filters, chosen per source, with every removal kept and named.

Documents are checked in a fixed order (cheap rules first): length, language, Gopher
repetition, Gopher quality, C4, FineWeb. The first rule that rejects a document names the
reason: `removed/<filter>/<rule>/filter-<task>.parquet`. Records whose source id repeats an
earlier record of the same file (of the same source with `id_scope: source`) are removed as `malformed/duplicate_id` here (ingest shards
are read in parallel, so the check needs the whole ingest output).
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
from datatrove.data import Document
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.filters import (
    C4QualityFilter,
    FineWebQualityFilter,
    GopherQualityFilter,
    GopherRepetitionFilter,
    LanguageFilter,
)
from datatrove.pipeline.filters.base_filter import BaseFilter

from mixforge.config import FiltersConfig, MixforgeConfig, section_hash
from mixforge.ledger import parquet_files, shard_counts
from mixforge.pipelines.run import (StageInputs, StageOptions, StageResult, default_workers, plan_stage, run_pipeline,
                                    run_stage)
from mixforge.pipelines.ingest import (RouteRemoved, adopt_layer_docs, docs_reader, docs_writer, layer_docs_dir,
                                       mark_removed, removed_writer, source_keys)
from mixforge.pipelines.language_id import OfflineFT176


class LengthFilter(BaseFilter):
    """Character-length bounds (datatrove has no plain length filter)."""

    name = "📏 Length"

    def __init__(self, min_chars: int, max_chars: int):
        super().__init__()
        self.min_chars, self.max_chars = min_chars, max_chars

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        n = len(doc.text)
        if n < self.min_chars:
            return False, "too_short"
        if n > self.max_chars:
            return False, "too_long"
        return True


def build_filters(settings: FiltersConfig) -> list[tuple[str, BaseFilter]]:
    """datatrove filter objects for one source's resolved settings, in evaluation order."""
    chain: list[tuple[str, BaseFilter]] = []
    s = settings
    if s.length.enabled:
        chain.append(("length", LengthFilter(s.length.min_chars, s.length.max_chars)))
    if s.language.enabled:
        lang = LanguageFilter(languages=s.language.languages, language_threshold=s.language.min_score)
        lang.model = OfflineFT176(s.language.languages)
        chain.append(("language", lang))
    if s.gopher_repetition.enabled:
        kw = s.gopher_repetition.model_dump(exclude={"enabled"})
        kw["top_n_grams"] = tuple(map(tuple, kw["top_n_grams"]))
        kw["dup_n_grams"] = tuple(map(tuple, kw["dup_n_grams"]))
        chain.append(("gopher_repetition", GopherRepetitionFilter(**kw)))
    if s.gopher_quality.enabled:
        chain.append(("gopher_quality", GopherQualityFilter(**s.gopher_quality.model_dump(exclude={"enabled"}))))
    if s.c4_quality.enabled:
        chain.append(("c4_quality", C4QualityFilter(**s.c4_quality.model_dump(exclude={"enabled"}))))
    if s.fineweb_quality.enabled:
        chain.append(("fineweb_quality", FineWebQualityFilter(**s.fineweb_quality.model_dump(exclude={"enabled"}))))
    return chain


class FilterChain(PipelineStep):
    """Applies each source's filter chain; rejected documents are tagged for RouteRemoved."""

    name = "🔻 Filter chain"
    type = "🔻 - FILTER"

    def __init__(self, chains: dict[str, list[tuple[str, BaseFilter]]], duplicate_ids: dict[str, str]):
        super().__init__()
        self.chains, self.duplicate_ids = chains, duplicate_ids

    def run(self, data, rank: int = 0, world_size: int = 1):
        for doc in data:
            self.stat_update("documents")
            if doc.id in self.duplicate_ids:
                yield mark_removed(doc, "malformed/duplicate_id", self.duplicate_ids[doc.id])
                continue
            for name, filt in self.chains[doc.id.split("/", 1)[0]]:
                original = doc.text
                with self.track_time():
                    verdict = filt.filter(doc)
                passed, rule = (verdict, None) if isinstance(verdict, bool) else verdict
                if not passed:
                    doc.text = original  # C4 trims lines in place: keep the removed document whole
                    rule = rule or _default_rule(name, filt, doc)
                    self.stat_update(f"{name}/{rule}")
                    yield mark_removed(doc, f"{name}/{rule}", _detail(name, rule, doc))
                    break
            else:
                yield doc


def _default_rule(name: str, filt: BaseFilter, doc: Document) -> str:
    if name != "language":
        return "rejected"
    # datatrove's LanguageFilter says only False: tell a wrong language from an unsure prediction
    return "low_confidence" if doc.metadata.get("language") in (filt.languages or []) else "other_language"


def _detail(name: str, rule: str, doc: Document) -> str:
    if name == "language":
        return f"{doc.metadata.get('origin')}: predicted {doc.metadata.get('language')} ({doc.metadata.get('language_score', 0):.2f})"
    return f"{doc.metadata.get('origin')}: {name} rule {rule}"


def find_duplicate_ids(docs_dir: Path, scopes: dict[str, tuple[int, str]] | None = None) -> dict[str, str]:
    """Records whose source id already appeared earlier in the same file, or for a source whose
    `id_scope` is source (`scopes`: source key -> (index, id_scope)) in the same source, -> a
    message naming both places and the setting."""
    files = parquet_files(docs_dir)
    if not files:
        return {}
    scopes = scopes or {}
    whole_source = [key for key, (_, scope) in scopes.items() if scope == "source"]
    frame = (
        pl.concat([pl.read_parquet(f, columns=["id", "source_id", "origin"]) for f in files])
        .filter(pl.col("source_id").is_not_null())
        # ids are <source key>/<file>:<record>; "first" is in file and record order (shards are packed by size)
        .with_columns(
            pl.col("id").str.split("/").list.first().alias("key"),
            pl.col("id").str.replace(r":[^:]*$", "").alias("file"),
            pl.col("id").str.extract(r":(\d+)$").cast(pl.Int64).alias("position"),
        )
        .sort("file", "position")
        .with_row_index("order")
        .with_columns(pl.when(pl.col("key").is_in(whole_source)).then(pl.col("key")).otherwise(pl.col("file")).alias("scope"))
    )
    firsts = frame.group_by("scope", "source_id").agg(pl.col("origin").sort_by("order").first().alias("first_origin"), pl.col("order").min().alias("first"))
    dups = frame.join(firsts, on=["scope", "source_id"]).filter(pl.col("order") != pl.col("first"))
    out = {}
    for row in dups.iter_rows(named=True):
        index, scope = scopes.get(row["key"], (None, "file"))
        setting = f"sources[{index}].id_scope: {scope}" if index is not None else f"id_scope: {scope}"
        unique = "within each file" if scope == "file" else "across all files of the source"
        out[row["id"]] = f"{row['origin']}: duplicate id {row['source_id']!r} (first seen at {row['first_origin']}; {setting}: ids must be unique {unique})"
    return out


def filters_by_source(cfg: MixforgeConfig) -> dict[str, FiltersConfig]:
    """Resolved filter settings per source key."""
    return {key: cfg.source_filters(s) for key, s in zip(source_keys(cfg), cfg.sources)}


def filter_fingerprint(cfg: MixforgeConfig, upstream_fingerprint: str) -> str:
    # the warning threshold changes no document: changing it must not refilter
    settings = {k: v.model_dump(exclude={"warn_removed_share"}) for k, v in filters_by_source(cfg).items()}
    return section_hash(upstream_fingerprint, settings)


def run_filter(cfg: MixforgeConfig, inputs: StageInputs, options: StageOptions = StageOptions()) -> StageResult:
    """Filter `ingest/docs` into `filter/docs` (after a build: only the shards ingest added)."""
    in_dir = Path(inputs["ingest"].docs_dir)
    per_source = filters_by_source(cfg)
    planned = plan_stage(cfg, "filter", filter_fingerprint, inputs["ingest"], options.force)
    ws, plan, files = planned.ws, planned.layer, planned.files
    workers = default_workers(cfg.workers)

    def body(partial: Path) -> None:
        chains = {key: build_filters(settings) for key, settings in per_source.items()}
        scopes = {key: (i, s.id_scope) for i, (key, s) in enumerate(zip(source_keys(cfg), cfg.sources))}
        reader = docs_reader(str(in_dir), plan.inputs, partial / "inputs.txt") if plan.incremental else docs_reader(str(in_dir))
        pipeline = [
            reader,
            # ids repeated across layers count too: the whole ingest output is checked, earlier layers first
            FilterChain(chains, find_duplicate_ids(in_dir, scopes)),
            RouteRemoved(removed_writer(str(partial / "removed"), plan.removed_prefix("filter"))),
            docs_writer(str(layer_docs_dir(partial, plan)), cfg.shard_mb),
        ]
        sizes = [shard_counts([f])[0] for f in files]
        run_pipeline(cfg, pipeline, len(files), workers, partial / "logs", "filter", sizes, "docs")
        adopt_layer_docs(partial, plan)

    settings = {k: v.model_dump() for k, v in per_source.items()}
    return run_stage(ws, "filter", planned.fingerprint, body, lambda _: shard_counts(files), options.force, options.strict,
                     settings, layer=plan, base=planned.base)
