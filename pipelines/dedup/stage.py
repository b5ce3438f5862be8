"""Dedup: exact (normalised-content hash) then MinHash near-duplicates (datatrove's 4 stages).

Every removed duplicate is recorded with the id of the document that was kept:
- exact: polars hashes each document's normalised text (lowercase, whitespace collapsed), confirms
  equal hashes with a 128-bit xxh3 digest of the same text (a 64-bit hash alone never drops a
  document; no duplicate's text is held in memory), and
  keeps the first of each group in corpus order (the rest never reach MinHash). datatrove's ExactDedup stages are not used
  because they do not report which document was kept.
- removed rows (texts included) are written one input shard at a time, `removed/<reason>/dedup-<shard>.parquet`.
- near: datatrove MinhashDedupSignature -> Buckets -> Cluster(save_cluster_id) -> Filter
  (load_cluster_ids); removed documents are joined to the kept member of their cluster, which
  datatrove's union-by-size picks (deterministic for the data, not always the earliest).
- kept documents are indexed (pipelines/dedup/index.py). A later build's added layer is
  deduplicated in this process against that index and within itself (`_dedup_layer`): a copy of
  a document kept before is removed naming it.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pyarrow as pa
from datatrove.data import Document
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.dedup.minhash import (
    MinhashConfig,
    MinhashDedupBuckets,
    MinhashDedupCluster,
    MinhashDedupFilter,
    MinhashDedupSignature,
)
from datatrove.pipeline.writers import ParquetWriter

from mixforge.config import MixforgeConfig, section_hash
from mixforge.ledger import parquet_files, shard_counts
from mixforge.pipelines.run import (LayerPlan, StageInputs, StageOptions, StageResult, default_workers, plan_stage,
                                    run_pipeline, run_stage)
from mixforge.pipelines.dedup.index import EXACT, NEAR, earlier_duplicates, index_rows, near_within, write_index
from mixforge.pipelines.ingest import DOC_SCHEMA, REMOVED_SCHEMA, docs_reader, docs_writer
from mixforge.workspace import atomic_write_parquet



def normalised(text: pl.Expr) -> pl.Expr:
    """The text exact dedup compares: lowercase, whitespace collapsed."""
    return text.str.to_lowercase().str.replace_all(r"\s+", " ").str.strip_chars()


def find_exact_duplicates(files: list[Path], key=lambda text: normalised(text).hash(seed=0)) -> dict[str, str]:
    """id of each exact duplicate -> id of the first document with the same normalised text.

    polars' 64-bit `hash` (`key`) only finds candidates: a document is dropped when its normalised
    text also has the same 128-bit xxh3 digest as the kept one's (a false match has odds of 2^-128),
    so a collision of the first hash never removes a document. The candidates' texts are read a
    second time, one file at a time: memory holds ids and digests, never the duplicates' texts."""
    frames = [pl.read_parquet(f, columns=["id", "text"]).select("id", key(pl.col("text")).alias("h")) for f in files]
    if not frames:
        return {}
    table = pl.concat(frames).with_row_index("order")
    candidates = table.filter(pl.len().over("h") > 1)
    if candidates.height == 0:
        return {}
    ids = candidates["id"].implode()
    digests = pl.concat([_text_digests(pl.read_parquet(f, columns=["id", "text"]).filter(pl.col("id").is_in(ids))) for f in files])
    groups = candidates.join(digests, on="id")
    first = groups.group_by("h", "digest").agg(pl.col("id").sort_by("order").first().alias("kept_id"), pl.col("order").min().alias("first"))
    dups = groups.join(first, on=["h", "digest"]).filter(pl.col("order") != pl.col("first"))
    return dict(zip(dups["id"].to_list(), dups["kept_id"].to_list()))


def _text_digests(docs: pl.DataFrame) -> pl.DataFrame:
    import xxhash

    norm = docs.select(normalised(pl.col("text")))["text"].to_list()
    return pl.DataFrame({"id": docs["id"], "digest": [xxhash.xxh3_128_digest(t.encode("utf-8")) for t in norm]},
                        schema={"id": pl.String, "digest": pl.Binary})


class SkipIds(PipelineStep):
    """Drops the given documents from the stream (exact duplicates: their removed rows are
    written afterwards, once near-duplicates are known, see `_write_duplicates`)."""

    name = "🫂 Skip exact duplicates"
    type = "🫂 - DEDUP"

    def __init__(self, ids: set[str]):
        super().__init__()
        self.ids = ids

    def run(self, data, rank: int = 0, world_size: int = 1):
        for doc in data:
            if doc.id in self.ids:
                self.stat_update("skipped")
                continue
            yield doc


class RecordClusterIds(PipelineStep):
    """Writes (id, MinHash cluster) of kept documents that belong to a cluster, so removed
    near-duplicates can name the document that was kept."""

    name = "🫂 Cluster ids"
    type = "🫂 - DEDUP"

    def __init__(self, folder: str):
        super().__init__()
        self.folder = folder

    def run(self, data, rank: int = 0, world_size: int = 1):
        ids, clusters = [], []
        for doc in data:
            cluster = doc.metadata.pop("minhash_cluster_id", -1)
            if cluster >= 0:
                ids.append(doc.id)
                clusters.append(cluster)
            yield doc
        atomic_write_parquet(Path(self.folder) / f"{rank:05d}.parquet", pa.table({"id": pa.array(ids, pa.string()), "cluster": pa.array(clusters, pa.int64())}))


def _near_row(writer, doc: Document) -> dict:
    return {"id": doc.id, "cluster": int(doc.metadata.get("minhash_cluster_id", -1))}


def dedup_fingerprint(cfg: MixforgeConfig, upstream_fingerprint: str) -> str:
    return section_hash(upstream_fingerprint, cfg.dedup.model_dump())


def run_dedup(cfg: MixforgeConfig, inputs: StageInputs, options: StageOptions = StageOptions()) -> StageResult:
    """Deduplicate `filter/docs` into `dedup/docs`. After a build, only the shards filter added
    are deduplicated: against each other, and against every document kept before (the index)."""
    in_dir = Path(inputs["filter"].docs_dir)
    d = cfg.dedup
    planned = plan_stage(cfg, "dedup", dedup_fingerprint, inputs["filter"], options.force)
    ws, plan, files = planned.ws, planned.layer, planned.files
    workers = default_workers(cfg.workers)
    mh = MinhashConfig(n_grams=d.n_grams, num_buckets=d.num_buckets, hashes_per_bucket=d.hashes_per_bucket, seed=d.seed)
    exact_key = lambda text: normalised(text).hash(seed=0)  # noqa: E731

    def body(partial: Path) -> None:
        if plan.incremental:
            return _dedup_layer(d, files, partial, plan, mh if d.minhash else None, exact_key)
        sizes = [shard_counts([f])[0] for f in files]  # documents per task, for the progress rate
        exact = find_exact_duplicates(files, exact_key) if d.exact else {}
        work, logs = partial / "work", partial / "logs"
        unique = [docs_reader(str(in_dir)), SkipIds(set(exact))]
        pipeline = list(unique)
        if d.minhash and files:
            run_pipeline(cfg, unique + [MinhashDedupSignature(str(work / "sigs"), config=mh)], len(files), workers, logs / "mh1", "dedup: minhash signatures", sizes)
            run_pipeline(cfg, [MinhashDedupBuckets(str(work / "sigs"), str(work / "buckets"), config=mh)], mh.num_buckets, workers, logs / "mh2", "dedup: minhash buckets")
            run_pipeline(cfg, [MinhashDedupCluster(str(work / "buckets"), str(work / "remove"), config=mh, save_cluster_id=True)], 1, 1, logs / "mh3", "dedup: minhash clusters")
            _complete_cluster_files(work / "remove", len(files))
            near_writer = ParquetWriter(str(work / "near"), output_filename="${rank}.parquet", adapter=_near_row, compression=None)
            pipeline += [
                MinhashDedupFilter(str(work / "remove"), exclusion_writer=near_writer, load_cluster_ids=True),
                RecordClusterIds(str(work / "kept_clusters")),
            ]
        pipeline.append(docs_writer(str(partial / "docs"), cfg.shard_mb))
        run_pipeline(cfg, pipeline, len(files), workers, logs / "final", "dedup: write", sizes)
        _write_duplicates(files, exact, _near_duplicates(work), {}, partial / "removed")
        write_index(parquet_files(partial / "docs"), partial / "extra" / "index", mh if d.minhash else None, work, exact_key)

    return run_stage(ws, "dedup", planned.fingerprint, body, lambda _: shard_counts(files), options.force, options.strict,
                     d.model_dump(), layer=plan, base=planned.base)


def _dedup_layer(d, files: list[Path], partial: Path, plan: LayerPlan, mh: MinhashConfig | None, exact_key) -> None:
    """An added layer, in this process: exact duplicates among the new documents, then copies of
    documents kept before (the index), then MinHash band matches among the rest (union-find, the
    earliest of each group kept). No datatrove pipeline here: a nightly layer is small next to the
    corpus, and starting the four MinHash pipelines' workers cost more than its work (bench_incremental).
    Resumable: each kept shard is written last, after its index rows."""
    if not files:  # filter kept nothing of the added files
        return
    work = partial / "work"
    exact = find_exact_duplicates(files, exact_key) if d.exact else {}
    rows = pl.concat([_new_rows(f, exact, mh, work, exact_key).with_columns(pl.lit(k, pl.Int32).alias("shard"))
                      for k, f in enumerate(files)])
    earlier = earlier_duplicates(rows, partial / "extra" / "index", partial / "docs", mh, d.exact, _text_digests)
    near = near_within(rows.filter(~pl.col("id").is_in(list(earlier))), mh.num_buckets) if mh is not None else {}
    removed = list(set(exact) | set(earlier) | set(near))
    for k, f in enumerate(files):
        name = plan.name(f"{k:05d}.parquet")
        if (partial / "docs" / name).exists():
            continue
        kept = pl.read_parquet(f).filter(~pl.col("id").is_in(removed))
        if kept.height:
            index = rows.filter((pl.col("shard") == k) & pl.col("id").is_in(kept["id"].implode())).drop("shard", "digest")
            atomic_write_parquet(partial / "extra" / "index" / name, index)
            atomic_write_parquet(partial / "docs" / name, kept.to_arrow().cast(DOC_SCHEMA))
    _write_duplicates(files, exact, near, earlier, partial / "removed", plan.removed_prefix("dedup"))


def _new_rows(f: Path, exact: dict[str, str], mh: MinhashConfig | None, scratch: Path, exact_key) -> pl.DataFrame:
    """Index rows and text digests of one new shard's documents that are not exact duplicates of
    each other (those are already removed)."""
    docs = pl.read_parquet(f, columns=["id", "text"]).filter(~pl.col("id").is_in(list(exact)))
    return index_rows(docs, mh, scratch, exact_key).join(_text_digests(docs), on="id", maintain_order="left")


def _complete_cluster_files(folder: Path, tasks: int) -> None:
    """MinhashDedupFilter reads cluster ids only for tasks that have a .remove file, and fails
    when a task has a .remove but no .clusters file: give every task both (empty if need be)."""
    folder.mkdir(parents=True, exist_ok=True)
    for rank in range(tasks):
        for suffix in ("remove", "clusters"):
            (folder / f"{rank:06d}.{suffix}").touch(exist_ok=True)


def _near_duplicates(work: Path) -> dict[str, tuple[str, int]]:
    """id of each removed near-duplicate -> (id of the kept member of its cluster, cluster)."""
    near_files = parquet_files(work / "near")
    if not near_files:
        return {}
    near = pl.concat([pl.read_parquet(f) for f in near_files])
    kept = pl.concat([pl.read_parquet(f) for f in parquet_files(work / "kept_clusters")]).rename({"id": "kept_id"})
    rows = near.join(kept, on="cluster", how="left")
    return {i: (k, c) for i, k, c in zip(rows["id"], rows["kept_id"], rows["cluster"])}


def _write_duplicates(files: list[Path], exact: dict[str, str], near: dict[str, tuple[str, int]],
                      earlier: dict[str, tuple[str, str, str]], removed: Path, prefix: str = "dedup") -> None:
    """Removed duplicates as full rows, each naming a document that was kept. An exact copy of a
    document that MinHash then removed points on to that document's kept cluster member; a
    duplicate of a document kept by an earlier build (`earlier`) names that document."""
    rows = []
    for doc_id, kept in exact.items():
        if kept in near:
            kept, cluster = near[kept]
            rows.append((doc_id, EXACT, kept, f"same normalised text as a near-duplicate (MinHash cluster {cluster}) of {kept}"))
        elif kept in earlier:
            kept = earlier[kept][0]
            rows.append((doc_id, EXACT, kept, f"same normalised text as a duplicate of {kept}"))
        else:
            rows.append((doc_id, EXACT, kept, f"same normalised text as {kept}"))
    rows += [(doc_id, NEAR, kept, f"near-duplicate of {kept} (MinHash cluster {cluster})") for doc_id, (kept, cluster) in near.items()]
    rows += [(doc_id, reason, kept, why) for doc_id, (kept, reason, why) in earlier.items()]
    if not rows:
        return
    marks = pl.DataFrame(rows, schema=["id", "reason", "kept_id", "why"], orient="row")
    for k, f in enumerate(files):  # one input shard's rows at a time
        docs = pl.read_parquet(f).join(marks, on="id", how="inner")
        docs = docs.with_columns(pl.format("{}: {}", "origin", "why").alias("detail")).sort("id")
        for reason in (EXACT, NEAR):
            part = docs.filter(pl.col("reason") == reason).select(REMOVED_SCHEMA.names)
            if part.height:
                atomic_write_parquet(removed / reason / f"{prefix}-{k:05d}.parquet", part.to_arrow().cast(REMOVED_SCHEMA))
