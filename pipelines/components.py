"""Components: the units a mixture weighs (CLIMB step 4).

Clusters that survived pruning are merged into super-clusters by agglomerative clustering on
their centroids (a target count, or CLIMB's Euclidean distance threshold), or
the source labels are used as components (`cluster.components: sources`). Components are
numbered by size (tokens). The stage also measures how well components recover the source
labels (normalised mutual information and purity) and writes the cluster report.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import polars as pl

from mixforge.config import MixforgeConfig, section_hash
from mixforge.errors import LedgerError
from mixforge.ledger import parquet_files
from mixforge.pipelines.cluster import load_assignments, load_centroids
from mixforge.pipelines.quality import load_scores
from mixforge.stage_runner import StageResult, run_side_stage
from mixforge.workspace import Workspace, atomic_write_json, atomic_write_parquet, read_json


def merge_clusters(centroids: np.ndarray, n_components: int | None, distance: float | None) -> np.ndarray:
    """Super-cluster index for each centroid row (Euclidean on unit vectors). A target count
    uses Ward linkage (balanced components: on the demo NMI 0.73 vs 0.63 for average linkage at
    8 components, and no 4-document component); a distance threshold uses average linkage, so
    the threshold means "mean centroid distance", as in CLIMB."""
    n = len(centroids)
    if n == 1 or (n_components is not None and n_components >= n):
        return np.arange(n)
    from sklearn.cluster import AgglomerativeClustering

    if distance is not None:
        model = AgglomerativeClustering(n_clusters=None, distance_threshold=distance, linkage="average")
    else:
        model = AgglomerativeClustering(n_clusters=n_components, linkage="ward")
    return model.fit_predict(centroids)


def purity(labels: list, groups: list) -> float:
    """Share of documents whose group's majority label is their own label."""
    frame = pl.DataFrame({"label": labels, "group": groups})
    majority = frame.group_by("group", "label").len().group_by("group").agg(pl.col("len").max())
    return float(majority["len"].sum() / max(frame.height, 1))


def label_agreement(labels: list, groups: list) -> dict:
    from sklearn.metrics import normalized_mutual_info_score

    return {"nmi": round(float(normalized_mutual_info_score(labels, groups)), 4), "purity": round(purity(labels, groups), 4)}


def assign_components(cfg: MixforgeConfig, docs: pl.DataFrame, centroids: np.ndarray) -> pl.DataFrame:
    """id -> component name (c00, c01, ... by tokens, largest first)."""
    if cfg.cluster.components == "sources":
        raw = docs.select("id", "tokens", pl.col("source").alias("group"))
    else:
        kept = sorted(docs["cluster"].unique().to_list())
        merged = merge_clusters(centroids[kept], cfg.cluster.n_components, cfg.cluster.merge_distance)
        mapping = pl.DataFrame({"cluster": kept, "group": [str(g) for g in merged]}, schema={"cluster": pl.Int32, "group": pl.String})
        raw = docs.join(mapping, on="cluster").select("id", "tokens", "group")
    order = raw.group_by("group").agg(pl.col("tokens").sum()).sort(["tokens", "group"], descending=[True, False])
    width = max(2, len(str(order.height - 1)))
    names = order.with_row_index("rank").select("group", pl.format("c{}", pl.col("rank").cast(pl.String).str.zfill(width)).alias("component"))
    if cfg.cluster.components == "sources":
        names = names.with_columns(pl.col("group").alias("component"))
    return raw.join(names, on="group").select("id", "component")


def components_fingerprint(cfg: MixforgeConfig, upstream_fingerprint: str) -> str:
    c = cfg.cluster
    return section_hash(upstream_fingerprint, c.components, c.n_components, c.merge_distance)


def check_join(kept: pl.DataFrame, joined: pl.DataFrame, what: str) -> None:
    """A join after prune must keep every kept document once: an id missing from (or repeated in)
    the side data would silently drop (or duplicate) documents downstream."""
    if joined.height != kept.height:
        missing = kept.join(joined.select("id"), on="id", how="anti")["id"].head(5).to_list()
        raise LedgerError(f"components: {kept.height} kept documents but {joined.height} after joining {what}; "
                          f"missing ids (first 5): {missing}. Rerun the build with --force.")


def run_components(cfg: MixforgeConfig, upstream: StageResult, force: bool = False) -> StageResult:
    """Merge the pruned corpus's clusters into components; write components and the report."""
    from mixforge.pipelines.cluster_report import component_table, write_report

    ws = Workspace(cfg.workspace_dir)

    def body(partial: Path) -> dict:
        t0 = time.perf_counter()
        kept = pl.read_parquet(parquet_files(Path(upstream.docs_dir)), columns=["id", "text", "source"])
        docs = (
            kept.join(load_assignments(ws), on="id")
            .join(load_scores(ws).select("id", "quality"), on="id", how="left")
        )
        check_join(kept, docs, "cluster assignments (cluster/extra/assign/)")
        docs = docs.join(assign_components(cfg, docs, load_centroids(ws)), on="id")
        check_join(kept, docs, "component assignment")
        out = partial / "extra"
        atomic_write_parquet(out / "components.parquet", docs.select("id", "component", "cluster"))
        table = component_table(docs)
        summary = {"components": len(table), "documents": docs.height, "tokens": int(docs["tokens"].sum()),
                   "mode": cfg.cluster.components, "clusters": docs["cluster"].n_unique()}
        if docs["source"].n_unique() > 1:
            labels = docs["source"].to_list()
            summary["vs_source_labels"] = {"components": label_agreement(labels, docs["component"].to_list()),
                                           "clusters": label_agreement(labels, docs["cluster"].to_list())}
        summary["seconds"] = round(time.perf_counter() - t0, 2)
        atomic_write_json(out / "components.json", {"summary": summary, "components": table})
        write_report(out, docs, table, summary, ws, cfg.seed)
        return summary

    fingerprint = components_fingerprint(cfg, upstream.fingerprint)
    return run_side_stage(ws, "components", fingerprint, body, upstream.docs_dir, force=force, settings=cfg.cluster.model_dump())


def load_components(ws: Workspace) -> dict | None:
    """The components.json of a workspace (None before the stage ran)."""
    return read_json(ws.stage_dir("components") / "extra" / "components.json")
