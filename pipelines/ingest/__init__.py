"""Ingest: reading sources (files, folders, globs; jsonl, parquet, txt, HF on disk) into document shards."""

# what the other packages use (they import it from here); the rest is internal

from mixforge.pipelines.ingest.records import (
    DOC_SCHEMA,
    REMOVED_SCHEMA,
    RouteRemoved,
    adopt_layer_docs,
    docs_reader,
    docs_writer,
    layer_docs_dir,
    mark_removed,
    removed_writer,
)
from mixforge.pipelines.ingest.source_kind import SAMPLE, guess_kind, measure, sample_records
from mixforge.pipelines.ingest.stage import ingest_fingerprint, plan_work, run_ingest, source_key, source_keys

__all__ = [
    "DOC_SCHEMA", "REMOVED_SCHEMA", "RouteRemoved", "SAMPLE", "adopt_layer_docs", "docs_reader", "docs_writer",
    "guess_kind", "ingest_fingerprint", "layer_docs_dir", "mark_removed", "measure", "plan_work", "removed_writer",
    "run_ingest", "sample_records", "source_key", "source_keys",
]
