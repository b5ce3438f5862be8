"""Prune: drop clusters whose mean quality is below the threshold (CLIMB step 3), documents
without a usable embedding, and optionally within-cluster semantic duplicates (SemDeDup).

Removed documents go to removed/<reason>/prune-<shard>.parquet like every other stage's:
`low_quality_cluster` (detail names the cluster and its mean), `unembeddable`, and
`semantic_duplicate` (with the id of the kept document).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from mixforge.config import MixforgeConfig, section_hash
from mixforge.ledger import parquet_files, shard_counts
from mixforge.pipelines.cluster import load_assignments
from mixforge.pipelines.quality import load_scores
from mixforge.pipelines.records import REMOVED_SCHEMA
from mixforge.stage_runner import StageResult, run_stage
from mixforge.workspace import Workspace, atomic_write_parquet


def cluster_quality(marks: pl.DataFrame) -> pl.DataFrame:
    """Per cluster: documents and mean quality (valid documents only)."""
    return marks.filter(pl.col("cluster") >= 0).group_by("cluster").agg(pl.len().alias("docs"), pl.col("quality").mean().alias("quality"))


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


def removal_marks(ws: Workspace, cfg: MixforgeConfig) -> pl.DataFrame:
    """id -> reason, detail, kept_id for every document this stage removes."""
    marks = load_assignments(ws).join(load_scores(ws).select("id", "quality"), on="id", how="left")
    rows = [(i, "unembeddable", "no usable embedding (empty, zero or NaN vector)", None)
            for i in marks.filter(pl.col("cluster") < 0)["id"]]
    threshold = cfg.quality.min_cluster_score
    if threshold is not None:
        low = cluster_quality(marks).filter(pl.col("quality") < threshold)
        means = dict(zip(low["cluster"], low["quality"]))
        for i, c in marks.filter(pl.col("cluster").is_in(list(means))).select("id", "cluster").iter_rows():
            rows.append((i, "low_quality_cluster", f"cluster {c} mean quality {means[c]:.2f} < {threshold}", None))
    if cfg.cluster.semdedup:
        from mixforge.pipelines.embed import load_vectors

        ids, vectors, _, _ = load_vectors(ws)
        clusters = marks.select("id", "cluster").join(pl.DataFrame({"id": ids}).with_row_index("i"), on="id").sort("i")["cluster"].to_numpy()
        already = {r[0] for r in rows}
        for dup, kept in semantic_duplicates(ids, vectors, clusters, cfg.cluster.semdedup_threshold).items():
            if dup not in already and kept not in already:
                rows.append((dup, "semantic_duplicate", f"cosine >= {cfg.cluster.semdedup_threshold} to {kept}", kept))
    return pl.DataFrame(rows, schema={"id": pl.String, "reason": pl.String, "why": pl.String, "kept_id": pl.String}, orient="row")


def prune_fingerprint(cfg: MixforgeConfig, upstream_fingerprint: str) -> str:
    c = cfg.cluster
    return section_hash(upstream_fingerprint, cfg.quality.min_cluster_score, c.semdedup, c.semdedup_threshold)


def run_prune(cfg: MixforgeConfig, upstream: StageResult, docs: StageResult, force: bool = False, strict: bool = False) -> StageResult:
    """Split `docs` (the dedup output) into `prune/docs` and removed shards.
    `upstream` is the quality stage (its fingerprint covers embed and cluster)."""
    ws = Workspace(cfg.workspace_dir)
    files = parquet_files(Path(docs.docs_dir))

    def body(partial: Path) -> None:
        marks = removal_marks(ws, cfg)
        (partial / "docs").mkdir(parents=True, exist_ok=True)
        for f in files:
            frame = pl.read_parquet(f)
            hit = frame.join(marks, on="id", how="inner")
            atomic_write_parquet(partial / "docs" / f.name, frame.join(marks, on="id", how="anti"))
            hit = hit.with_columns(pl.format("{}: {}", "origin", "why").alias("detail"))
            for reason in hit["reason"].unique().sort():
                part = hit.filter(pl.col("reason") == reason).select(REMOVED_SCHEMA.names)
                atomic_write_parquet(partial / "removed" / reason / f"prune-{f.stem}.parquet", part.to_arrow().cast(REMOVED_SCHEMA))

    fingerprint = prune_fingerprint(cfg, upstream.fingerprint)
    settings = {"min_cluster_score": cfg.quality.min_cluster_score, "semdedup": cfg.cluster.semdedup}
    return run_stage(ws, "prune", fingerprint, body, lambda _: shard_counts(files), force, strict, settings)
