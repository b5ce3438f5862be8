"""Prune: drop clusters whose mean quality is below the threshold (CLIMB step 3), documents
without a usable embedding, and optionally within-cluster semantic duplicates (SemDeDup).

Removed documents go to removed/<reason>/prune-<shard>.parquet (prune-<build>-<shard> for a later build's layer) like every other stage's:
`low_quality_cluster` (detail names the cluster and its mean), `unembeddable`, and
`semantic_duplicate` (with the id of the kept document).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from mixforge.config import MixforgeConfig, section_hash
from mixforge.ledger import parquet_files, shard_counts

from mixforge.pipelines.run import StageInputs, StageOptions, StageResult, full_layer, map_shards, plan_stage, run_stage

from mixforge.pipelines.ingest import REMOVED_SCHEMA
from mixforge.pipelines.outputs import assignment_file, load_vector_shard, score_file, vector_file
from mixforge.workspace import Workspace, atomic_write_parquet


SEMDEDUP_BATCH_VECTORS = 250_000  # vectors held at once while SemDeDup compares within clusters (~400 MB)


def shard_marks(ws: Workspace, shard: Path) -> pl.DataFrame:
    """id, cluster, distance, quality of one shard's documents."""
    return pl.read_parquet(assignment_file(ws, shard), columns=["id", "cluster"]).join(
        pl.read_parquet(score_file(ws, shard), columns=["id", "quality"]), on="id", how="left")


def cluster_quality(ws: Workspace, shards: list[Path]) -> pl.DataFrame:
    """Per cluster: documents and mean quality (valid documents only), summed shard by shard."""
    parts = [shard_marks(ws, f).filter(pl.col("cluster") >= 0).group_by("cluster").agg(
        pl.len().alias("docs"), pl.col("quality").sum().alias("total"), pl.col("quality").count().alias("scored"))
        for f in shards]
    if not parts:
        return pl.DataFrame(schema={"cluster": pl.Int32, "docs": pl.UInt32, "quality": pl.Float64})
    return pl.concat(parts).group_by("cluster").agg(pl.col("docs").sum(), (pl.col("total").sum() / pl.col("scored").sum()).alias("quality"))


def semantic_duplicates(ids: list[str], vectors: np.ndarray, clusters: np.ndarray, threshold: float) -> dict[str, str]:
    """Within each cluster, a document whose cosine similarity to an earlier kept document is at
    least `threshold` -> that document's id (earlier = corpus order)."""
    import faiss

    out: dict[str, str] = {}
    for c in np.unique(clusters[clusters >= 0]):
        members = np.flatnonzero(clusters == c)
        if len(members) < 2:
            continue
        x = np.ascontiguousarray(vectors[members])
        index = faiss.IndexFlatIP(x.shape[1])
        index.add(x)
        lims, _, neighbours = index.range_search(x, threshold)
        kept: set[int] = set()
        for i in range(len(members)):
            earlier = [j for j in neighbours[lims[i] : lims[i + 1]] if j < i and j in kept]
            if earlier:
                out[ids[members[i]]] = ids[members[min(earlier)]]
            else:
                kept.add(i)
    return out


def cluster_batches(sizes: dict[int, int], budget: int) -> list[list[int]]:
    """Clusters grouped so that each group holds at most `budget` vectors (a larger cluster alone)."""
    batches, current, held = [], [], 0
    for c in sorted(sizes):
        if current and held + sizes[c] > budget:
            batches.append(current)
            current, held = [], 0
        current.append(c)
        held += sizes[c]
    return batches + [current] if current else batches


def semantic_duplicate_marks(ws: Workspace, shards: list[Path], sizes: dict[int, int], threshold: float,
                             budget: int = SEMDEDUP_BATCH_VECTORS, skip: set[str] | None = None) -> pl.DataFrame:
    """SemDeDup out of core over the clusters in `sizes` (cluster -> documents): in batches of
    at most `budget` vectors, each read from every shard (corpus order kept), compared within clusters.
    `skip`: documents removed before (by an earlier build), which a later document cannot duplicate."""

    rows: list[tuple[str, str]] = []
    for batch in cluster_batches(sizes, budget):
        ids, vectors, clusters = [], [], []
        for f in shards:
            meta, vecs = load_vector_shard(vector_file(ws, f))
            cl = pl.read_parquet(assignment_file(ws, f), columns=["cluster"])["cluster"].to_numpy()
            hit = np.isin(cl, batch) & ~meta["id"].is_in(list(skip or ())).to_numpy()
            ids += meta["id"].filter(pl.Series(hit)).to_list()
            vectors.append(vecs[hit])
            clusters.append(cl[hit])
        rows += semantic_duplicates(ids, np.concatenate(vectors), np.concatenate(clusters), threshold).items()
    return pl.DataFrame(rows, schema={"id": pl.String, "kept_id": pl.String}, orient="row")


def removal_marks(ws: Workspace, cfg: MixforgeConfig, shard: Path, low: dict[int, float], semantic: pl.DataFrame) -> pl.DataFrame:
    """id -> reason, why, kept_id for every document of `shard` this stage removes (`low`: the
    clusters below quality.min_cluster_score and their means; `semantic`: SemDeDup's id -> kept_id)."""
    marks = shard_marks(ws, shard)
    rows = [(i, "unembeddable", "no usable embedding (empty, zero or NaN vector)", None)
            for i in marks.filter(pl.col("cluster") < 0)["id"]]
    for i, c in marks.filter(pl.col("cluster").is_in(list(low))).select("id", "cluster").iter_rows():
        rows.append((i, "low_quality_cluster", f"cluster {c} mean quality {low[c]:.2f} < {cfg.quality.min_cluster_score}", None))
    for dup, kept in semantic.join(marks.select("id"), on="id", how="semi").iter_rows():
        rows.append((dup, "semantic_duplicate", f"cosine >= {cfg.cluster.semdedup_threshold} to {kept}", kept))
    return pl.DataFrame(rows, schema={"id": pl.String, "reason": pl.String, "why": pl.String, "kept_id": pl.String}, orient="row")


def prune_shard(cfg: MixforgeConfig, shard: str, low: dict[int, float], semantic: pl.DataFrame, partial: str,
                prefix: str = "prune") -> None:
    """Split one dedup shard into `<partial>/docs/<shard>` and its removed rows (the docs file is
    written last: when it exists, the shard is done)."""
    f, partial_dir = Path(shard), Path(partial)
    if (partial_dir / "docs" / f.name).exists():
        return
    frame = pl.read_parquet(f)
    marks = removal_marks(Workspace(cfg.workspace_dir), cfg, f, low, semantic)
    hit = frame.join(marks, on="id", how="inner").with_columns(pl.format("{}: {}", "origin", "why").alias("detail"))
    for reason in hit["reason"].unique().sort():
        part = hit.filter(pl.col("reason") == reason).select(REMOVED_SCHEMA.names)
        atomic_write_parquet(partial_dir / "removed" / reason / f"{prefix}-{f.stem}.parquet", part.to_arrow().cast(REMOVED_SCHEMA))
    atomic_write_parquet(partial_dir / "docs" / f.name, frame.join(marks, on="id", how="anti"))


def prune_fingerprint(cfg: MixforgeConfig, upstream_fingerprint: str) -> str:
    c = cfg.cluster
    return section_hash(upstream_fingerprint, cfg.quality.min_cluster_score, c.semdedup, c.semdedup_threshold)


def run_prune(cfg: MixforgeConfig, inputs: StageInputs, options: StageOptions = StageOptions()) -> StageResult:
    """Split the dedup output into `prune/docs` and removed shards, one shard at a time, with what
    the quality stage learned (its fingerprint covers embed and cluster). After a build, only
    the new shards are split, while the low-quality clusters stay the same ones (else: in full);
    SemDeDup then compares new documents with every document kept before in their cluster."""
    upstream, docs = inputs["quality"], inputs["dedup"]
    planned = plan_stage(cfg, "prune", prune_fingerprint, upstream, options.force, inputs_dir=docs.docs_dir)
    ws, plan, all_files = planned.ws, planned.layer, parquet_files(Path(docs.docs_dir))
    threshold = cfg.quality.min_cluster_score
    per_cluster = cluster_quality(ws, all_files)
    low: dict[int, float] = {}
    if threshold is not None:
        below = per_cluster.filter(pl.col("quality") < threshold)
        low = dict(zip(below["cluster"], below["quality"]))
    record = ws.stage_record("prune")  # None when resuming a started run: its saved plan stands
    if plan.incremental and record is not None and sorted(low) != record.get("settings", {}).get("low_clusters"):
        plan = full_layer(plan.id, upstream.layers, [f.name for f in all_files])  # other clusters are low now: redo all
    files = [Path(docs.docs_dir) / name for name in plan.inputs]

    def body(partial: Path) -> None:
        semantic = pl.DataFrame(schema={"id": pl.String, "kept_id": pl.String})
        if cfg.cluster.semdedup:  # low-quality clusters go whole: nothing in them to deduplicate
            sizes = {c: n for c, n in per_cluster.select("cluster", "docs").iter_rows() if c not in low}
            removed_before = set(_removed_ids(partial / "removed")) if plan.incremental else set()
            semantic = semantic_duplicate_marks(ws, all_files if plan.incremental else files, sizes,
                                                cfg.cluster.semdedup_threshold, skip=removed_before)
        (partial / "docs").mkdir(parents=True, exist_ok=True)
        calls = [(cfg, str(f), low, semantic, str(partial), plan.removed_prefix("prune")) for f in files]
        map_shards(cfg, prune_shard, calls, "prune", [pq.ParquetFile(f).metadata.num_rows for f in files])

    settings = {"min_cluster_score": threshold, "semdedup": cfg.cluster.semdedup, "low_clusters": sorted(low)}
    return run_stage(ws, "prune", planned.fingerprint, body, lambda _: shard_counts(files), options.force, options.strict,
                     settings, layer=plan, base=planned.base)


def _removed_ids(folder: Path) -> list[str]:
    files = parquet_files(folder)
    return pl.concat([pl.read_parquet(f, columns=["id"]) for f in files])["id"].to_list() if files else []
