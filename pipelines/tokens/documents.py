"""How documents become token shards: each kept document's split (by a hash of its id), its
tokens appended to its component's shard of that split, and its row in the document index
(`documents.parquet`: where its tokens are, and a hash of its text). Used by the tokens stage in
one pass, and by its Ray tasks one prune shard each (shard_tasks.py)."""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import polars as pl

from mixforge.pipelines.samples import id_keys
from mixforge.pipelines.tokens.eval_tasks import NextLinePool
from mixforge.pipelines.tokens.tokenizer import TokenShardWriter

TOKENIZER_IN_WORKSPACE = "tokens/extra/tokenizer.json"  # the path shard metadata names (the same on every machine)


def is_heldout(doc_id: str, seed: int, fraction: float) -> bool:
    """By the document's id, so a change elsewhere in the corpus never redraws a document's split."""
    return zlib.crc32(f"{seed}:{doc_id}".encode()) % 10_000 < fraction * 10_000


def text_hash(text: str) -> int:
    """What export checks a document's text against before it reuses the document's tokens."""
    import xxhash

    return xxhash.xxh3_64_intdigest(text.encode("utf-8"))


class DocumentIndex:
    """`documents.parquet`, streamed: where each kept document's tokens are (split, component,
    start and length in tokens, EOS included) and a hash of its text, so that export slices the
    tokens instead of tokenizing again. Rows go to a temp file, renamed into place by `close()`.
    `append_from`: an index whose rows come first, and whose offsets new rows continue."""

    def __init__(self, path: Path, append_from: Path | None = None):
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.path = path
        self.schema = pa.schema([("id", pa.string()), ("component", pa.string()), ("split", pa.string()),
                                 ("start", pa.int64()), ("length", pa.int64()), ("text_hash", pa.uint64())])
        self.tmp = path.with_name(f".{path.name}.tmp")
        self.writer = pq.ParquetWriter(self.tmp, self.schema, compression="zstd")
        self.offsets: dict[tuple[str, str], int] = {}
        if append_from:
            for batch in pq.ParquetFile(append_from).iter_batches():
                self.writer.write_batch(batch.cast(self.schema))
            ends = pl.read_parquet(append_from, columns=["split", "component", "start", "length"]).group_by("split", "component").agg(
                (pl.col("start") + pl.col("length")).max().alias("end"))
            self.offsets = {(split, comp): int(end) for split, comp, end in ends.iter_rows()}

    def add(self, ids: list[str], components: list[str], split: str, lengths: list[int], texts: list[str]) -> None:
        import pyarrow as pa

        starts = []
        for comp, n in zip(components, lengths):
            start = self.offsets.get((split, comp), 0)
            starts.append(start)
            self.offsets[(split, comp)] = start + n
        self.writer.write_table(pa.table({"id": ids, "component": components, "split": [split] * len(ids), "start": starts,
                                          "length": lengths, "text_hash": [text_hash(t) for t in texts]}, schema=self.schema))

    def append_index(self, path: Path) -> None:
        """The rows of another index (one prune shard's, its starts from 0), after these: its
        starts moved past each (split, component)'s end so far; one row group per row group, as
        `add` wrote them, so the file is the one a single index would be."""
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        source = pq.ParquetFile(path)
        ends: dict[tuple[str, str], int] = {}
        for g in range(source.num_row_groups):
            rows = source.read_row_group(g)
            keys = list(zip(rows["split"].to_pylist(), rows["component"].to_pylist()))
            shift = pa.array([self.offsets.get(k, 0) for k in keys], pa.int64())
            rows = rows.set_column(rows.schema.get_field_index("start"), "start", pc.add(rows["start"], shift))
            for k, end in zip(keys, pc.add(rows["start"], rows["length"]).to_pylist()):
                ends[k] = max(ends.get(k, 0), end)
            self.writer.write_table(rows.cast(self.schema))
        self.offsets.update(ends)

    def close(self) -> None:
        self.writer.close()
        os.replace(self.tmp, self.path)


BATCH_DOCS = 1024


def tokenize_frame(frame: pl.DataFrame, seed: int, heldout_fraction: float, writers: dict[str, TokenShardWriter],
                   index: DocumentIndex, held_bytes: dict[str, int], pool: NextLinePool | None) -> None:
    """One prune shard's documents split, tokenized into the writers and the index; its held-out
    bytes added to `held_bytes` and its held-out texts offered to `pool` (None: no pool)."""
    frame = frame.with_columns(pl.Series("split", ["heldout" if is_heldout(i, seed, heldout_fraction) else "train"
                                                   for i in frame["id"]]))
    _add_documents(frame, writers, index)
    held = frame.filter(pl.col("split") == "heldout")
    for (comp,), part in held.group_by("component", maintain_order=True):
        held_bytes[comp] = held_bytes.get(comp, 0) + int(part["text"].str.len_bytes().sum())
        if pool is not None:
            pool.add(comp, id_keys(part["id"], seed), part["text"].to_list())


def _add_documents(frame: pl.DataFrame, writers: dict[str, TokenShardWriter], index: DocumentIndex) -> None:
    """One shard's documents (with their `split`) into the split's token shards and the index,
    BATCH_DOCS at a time."""
    for start in range(0, frame.height, BATCH_DOCS):
        batch = frame.slice(start, BATCH_DOCS)
        for (split,), part in batch.group_by("split", maintain_order=True):
            comps, texts = part["component"].to_list(), part["text"].to_list()
            lengths = writers[split].add(list(zip(comps, texts)))
            index.add(part["id"].to_list(), comps, split, lengths, texts)
