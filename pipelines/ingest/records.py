"""The normalised document row every stage reads and writes, and the datatrove writers for it.

Kept documents: id, text, source (label), source_id, origin (file:line), chars.
Removed documents: the same plus reason, detail (a message naming file and line, or the rule
that fired) and kept_id (for duplicates: the id of the document that was kept).
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
from datatrove.data import Document
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.readers import ParquetReader
from datatrove.pipeline.writers import ParquetWriter

from mixforge.pipelines.run import LayerPlan

DOC_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("text", pa.string()),
        ("source", pa.string()),
        ("source_id", pa.string()),
        ("origin", pa.string()),
        ("chars", pa.int64()),
    ]
)
REMOVED_SCHEMA = DOC_SCHEMA.append(pa.field("reason", pa.string())).append(pa.field("detail", pa.string())).append(
    pa.field("kept_id", pa.string())
)
DOC_FIELDS = ("source", "source_id", "origin")


def mark_removed(doc: Document, reason: str, detail: str = "", kept_id: str | None = None) -> Document:
    """Tag a document as removed; `reason` becomes its folder under removed/."""
    doc.metadata["reason"] = reason
    doc.metadata["detail"] = detail
    doc.metadata["kept_id"] = kept_id
    return doc


def _doc_row(writer, doc: Document) -> dict:
    row = {"id": doc.id, "text": doc.text, "chars": len(doc.text)}
    for key in DOC_FIELDS:
        value = doc.metadata.get(key)
        row[key] = None if value is None else str(value)
    return row


def _removed_row(writer, doc: Document) -> dict:
    row = _doc_row(writer, doc)
    row["reason"] = doc.metadata["reason"]
    row["detail"] = doc.metadata.get("detail") or ""
    row["kept_id"] = doc.metadata.get("kept_id")
    return row


WRITE_BATCH_DOCS = 128  # datatrove checks the file size only after a batch: 1,000 long documents would make 250 MB shards


def docs_writer(folder, shard_mb: int = 64) -> ParquetWriter:
    """Kept documents, one or more shards per task (rotated at `shard_mb`, checked every
    WRITE_BATCH_DOCS documents)."""
    return ParquetWriter(
        folder,
        output_filename="${rank}.parquet",
        adapter=_doc_row,
        schema=DOC_SCHEMA,
        compression="zstd",
        batch_size=WRITE_BATCH_DOCS,
        max_file_size=shard_mb * 2**20,
        use_content_defined_chunking=False,
    )


def removed_writer(folder, stage: str) -> ParquetWriter:
    """Removed documents grouped by reason: <folder>/<reason>/<stage>-<rank>.parquet."""
    return ParquetWriter(
        folder,
        output_filename="${reason}/" + stage + "-${rank}.parquet",
        adapter=_removed_row,
        schema=REMOVED_SCHEMA,
        compression="zstd",
        max_file_size=-1,  # no rotation: file names stay <stage>-<rank>.parquet
        use_content_defined_chunking=False,
    )


def docs_reader(folder, names: list[str] | None = None, paths_file: Path | None = None) -> ParquetReader:
    """Read normalised shards back; extra columns land in doc.metadata. With `names`, only those
    shards of `folder` (listed in `paths_file`, one task per shard)."""
    if names is None:
        return ParquetReader(folder, read_metadata=True, glob_pattern="*.parquet")
    paths_file.parent.mkdir(parents=True, exist_ok=True)
    paths_file.write_text("".join(f"{n}\n" for n in names))
    return ParquetReader(folder, read_metadata=True, paths_file=str(paths_file))


class RouteRemoved(PipelineStep):
    """Sends documents tagged by `mark_removed` (or malformed at read time) to the removed
    writer and passes the rest on."""

    name = "🗑 Route removed"
    type = "🔻 - FILTER"

    def __init__(self, writer: ParquetWriter):
        super().__init__()
        self.writer = writer

    def run(self, data, rank: int = 0, world_size: int = 1):
        with self.writer as writer:
            for doc in data:
                reason = doc.metadata.get("reason")
                if reason:
                    self.stat_update("removed", f"removed:{reason}")
                    writer.write(doc, rank)
                    continue
                self.stat_update("kept")
                yield doc


def layer_docs_dir(partial: Path, plan: LayerPlan | None) -> Path:
    """Where a run writes kept shards: `docs/`, or for an incremental layer a work folder whose
    shards `adopt_layer_docs` then moves into `docs/` under the layer's names."""
    return partial / ("layer_docs" if plan is not None and plan.incremental else "docs")


def adopt_layer_docs(partial: Path, plan: LayerPlan | None) -> None:
    """Move an incremental layer's shards into `docs/` as `<build>-<name>` (idempotent on resume)."""
    if plan is None or not plan.incremental:
        return
    (partial / "docs").mkdir(parents=True, exist_ok=True)
    for f in sorted((partial / "layer_docs").glob("*.parquet")):
        os.replace(f, partial / "docs" / plan.name(f.name))

