"""The dedup index of kept documents, so a later build's new documents are deduplicated against
everything kept before without rereading or re-hashing it.

Per kept shard, `dedup/extra/index/<shard>.parquet`: id, `h` (the exact-dedup candidate hash of
the normalised text) and one column per MinHash band (`b0`, `b1`, ...: a 64-bit hash of the
band's minimum hashes, from datatrove's own shingling and permutations, so a band match here is
a band match in datatrove's MinHash stages). A new document is
- an exact duplicate of an earlier one when `h` matches and the 128-bit digests of both normalised
  texts agree (the earlier text is read back only for candidates);
- a near duplicate when any band matches (LSH, as datatrove's buckets stage decides).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
from datatrove.pipeline.dedup.minhash import MinhashConfig, MinhashDedupSignature

from mixforge.ledger import parquet_files
from mixforge.workspace import atomic_write_parquet


EXACT = "exact_duplicate"  # the ledger's removal reasons of this stage
NEAR = "near_duplicate"


def band_hasher(mh: MinhashConfig, scratch: Path):
    """text -> list of band hashes (None for a text too short to shingle, as datatrove skips it)."""
    import xxhash

    signature = MinhashDedupSignature(str(scratch), config=mh)

    def bands(text: str) -> list[int] | None:
        shingles = signature.get_shingles(text)
        if shingles.size == 0:
            return None
        return [xxhash.xxh3_64_intdigest(np.asarray(band, dtype=np.uint64).tobytes()) for band in signature.get_signature(shingles)]

    return bands


def index_rows(docs: pl.DataFrame, mh: MinhashConfig | None, scratch: Path, exact_key) -> pl.DataFrame:
    """id, h and band columns for documents with `id` and `text`."""
    rows = docs.select("id", exact_key(pl.col("text")).alias("h"))
    if mh is None:
        return rows
    bands = band_hasher(mh, scratch)
    values = [bands(t) for t in docs["text"].to_list()]
    columns = {f"b{i}": pl.Series(f"b{i}", [None if v is None else v[i] for v in values], dtype=pl.UInt64) for i in range(mh.num_buckets)}
    return rows.with_columns(**columns)


def write_index(shards: list[Path], folder: Path, mh: MinhashConfig | None, scratch: Path, exact_key) -> None:
    """The index rows of every kept shard in `shards` (kept when already written: resumable)."""
    for f in shards:
        target = folder / f.name
        if not target.exists():
            atomic_write_parquet(target, index_rows(pl.read_parquet(f, columns=["id", "text"]), mh, scratch, exact_key))


def earlier_duplicates(new: pl.DataFrame, index_folder: Path, kept_docs: Path, mh: MinhashConfig | None,
                       exact: bool, digests) -> dict[str, tuple[str, str, str]]:
    """New documents (id, h, bands, text digest computed by the caller as `digest`) that duplicate a
    document kept by an earlier build -> (earlier id, reason, why). Exact matches first."""
    files = parquet_files(index_folder)
    if not files or new.height == 0:
        return {}
    out: dict[str, tuple[str, str, str]] = {}
    if exact:
        candidates = pl.scan_parquet(files, include_file_paths="index_file").select(
            pl.col("id").alias("earlier"), "h", "index_file").join(new.lazy().select("id", "h"), on="h").collect()
        if candidates.height:
            earlier_ids = candidates["earlier"].unique().implode()
            shards = [kept_docs / Path(f).name for f in candidates["index_file"].unique().sort()]  # only shards with candidates
            earlier = pl.concat([digests(pl.read_parquet(f, columns=["id", "text"]).filter(pl.col("id").is_in(earlier_ids)))
                                 for f in shards]).rename({"id": "earlier", "digest": "earlier_digest"})
            confirmed = (candidates.join(earlier, on="earlier").join(new.select("id", "digest"), on="id")
                         .filter(pl.col("digest") == pl.col("earlier_digest")).sort("earlier").unique("id", keep="first"))
            for doc_id, first in confirmed.select("id", "earlier").iter_rows():
                out[doc_id] = (first, EXACT, f"same normalised text as {first} (kept by an earlier build)")
    if mh is not None:
        rest = new.filter(~pl.col("id").is_in(list(out)))
        for i in range(mh.num_buckets):
            col = f"b{i}"
            hits = (pl.scan_parquet(files).select(pl.col("id").alias("earlier"), col).drop_nulls(col)
                    .join(rest.lazy().select("id", col).drop_nulls(col), on=col).collect())
            for doc_id, first in hits.sort("earlier").unique("id", keep="first").select("id", "earlier").iter_rows():
                if doc_id not in out:
                    out[doc_id] = (first, NEAR, f"near-duplicate of {first} (kept by an earlier build; MinHash band {i})")
    return out


def near_within(rows: pl.DataFrame, bands: int) -> dict[str, tuple[str, int]]:
    """Documents of `rows` (in corpus order) that share a MinHash band with another one -> (the
    id kept for their group, the group's number): union-find over band matches, as datatrove's
    cluster stage does, keeping the earliest member of each group."""
    ids = rows["id"].to_list()
    parent = list(range(len(ids)))

    def root(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    numbered = rows.with_row_index("k")
    for i in range(bands):
        col = f"b{i}"
        groups = numbered.drop_nulls(col).group_by(col).agg(pl.col("k")).filter(pl.col("k").list.len() > 1)
        for members in groups["k"].to_list():
            for m in members[1:]:
                a, b = root(members[0]), root(m)
                if a != b:
                    parent[max(a, b)] = min(a, b)  # the smaller index is the root: the earliest document
    return {ids[k]: (ids[root(k)], root(k)) for k in range(len(ids)) if root(k) != k}
