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

from mixforge.budget import component_count
from mixforge.config import MixforgeConfig, section_hash
from mixforge.errors import LedgerError
from mixforge.ledger import parquet_files


from mixforge.pipelines.run import (StageInputs, StageOptions, StagePlan, StageResult, full_layer, plan_stage,
                                    resumed_plan, run_side_stage)
from mixforge.pipelines.outputs import (assignment_file, cluster_fit, load_centroids, load_components, score_file,
                                        vector_file)
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


def agreement_from_counts(counts: pl.DataFrame) -> dict:
    """NMI (arithmetic mean of the entropies, as scikit-learn's default) and purity of `group`
    against `label`, from a table of (label, group, n): the same figures as from per-document
    lists, computed from counts summed shard by shard."""
    table = counts.pivot(on="group", index="label", values="n", aggregate_function="sum").fill_null(0)
    c = table.drop("label").to_numpy().astype(np.float64)
    n = c.sum()
    if n == 0:
        return {"nmi": 1.0, "purity": 0.0}
    p, rows, cols = c / n, c.sum(axis=1) / n, c.sum(axis=0) / n
    nz = p > 0
    mi = float((p[nz] * np.log(p[nz] / np.outer(rows, cols)[nz])).sum())
    h_rows, h_cols = (float(-(x[x > 0] * np.log(x[x > 0])).sum()) for x in (rows, cols))
    if c.shape == (1, 1):  # neither labelling splits the data: a perfect match
        nmi = 1.0
    else:
        nmi = max(mi, 0.0) / max((h_rows + h_cols) / 2, np.finfo(np.float64).eps) if mi > 1e-15 else 0.0
    return {"nmi": round(nmi, 4), "purity": round(float(c.max(axis=0).sum() / n), 4)}


def _counts(labels: list, groups: list) -> pl.DataFrame:
    return pl.DataFrame({"label": [str(x) for x in labels], "group": [str(g) for g in groups]}).group_by("label", "group").agg(pl.len().alias("n"))


def purity(labels: list, groups: list) -> float:
    """Share of documents whose group's majority label is their own label."""
    return agreement_from_counts(_counts(labels, groups))["purity"]


def label_agreement(labels: list, groups: list) -> dict:
    return agreement_from_counts(_counts(labels, groups))


def component_mapping(cfg: MixforgeConfig, totals: pl.DataFrame, centroids: np.ndarray) -> tuple[str, pl.DataFrame]:
    """(key, key -> component name): the key is `cluster` (merged clusters) or `source` (source
    labels as components); names c00, c01, ... by tokens, largest first."""
    if cfg.cluster.components == "sources":
        key = "source"
        groups = totals.select(pl.col("source").unique().sort()).with_columns(pl.col("source").alias("group"))
    else:
        key = "cluster"
        kept = sorted(totals["cluster"].unique().to_list())
        count = component_count(cfg.cluster.n_components, int(totals["docs"].sum()), cfg.search.runs)
        merged = merge_clusters(centroids[kept], count, cfg.cluster.merge_distance)
        groups = pl.DataFrame({"cluster": kept, "group": [str(g) for g in merged]}, schema={"cluster": pl.Int32, "group": pl.String})
    order = totals.join(groups, on=key).group_by("group").agg(pl.col("tokens").sum()).sort(["tokens", "group"], descending=[True, False])
    width = max(2, len(str(order.height - 1)))
    names = order.with_row_index("rank").select("group", pl.format("c{}", pl.col("rank").cast(pl.String).str.zfill(width)).alias("component"))
    if key == "source":
        names = names.with_columns(pl.col("group").alias("component"))
    return key, groups.join(names, on="group").select(key, "component")


LAYOUT_VERSION = 2  # components/<shard>.parquet (version 1: one components.parquet)


def components_fingerprint(cfg: MixforgeConfig, upstream_fingerprint: str) -> str:
    c = cfg.cluster
    runs = cfg.search.runs if c.n_components == "auto" else None  # auto counts fit the run budget
    return section_hash(upstream_fingerprint, c.components, c.n_components, c.merge_distance, runs, LAYOUT_VERSION)


def check_join(kept: pl.DataFrame, joined: pl.DataFrame, what: str) -> None:
    """A join after prune must keep every kept document once: an id missing from (or repeated in)
    the side data would silently drop (or duplicate) documents downstream."""
    if joined.height != kept.height:
        missing = kept.join(joined.select("id"), on="id", how="anti")["id"].head(5).to_list()
        raise LedgerError(f"components: {kept.height} kept documents but {joined.height} after joining {what}; "
                          f"missing ids (first 5): {missing}. Rerun the build with --force.")


def shard_documents(ws: Workspace, shard: Path, text: bool = False) -> pl.DataFrame:
    """One prune shard's documents with tokens, cluster, distance and quality (checked joins)."""
    kept = pl.read_parquet(shard, columns=["id", "text", "source"] if text else ["id", "source"])
    docs = kept.join(pl.read_parquet(assignment_file(ws, shard)), on="id", maintain_order="left")
    check_join(kept, docs, f"cluster assignments ({assignment_file(ws, shard)})")
    return docs.join(pl.read_parquet(score_file(ws, shard), columns=["id", "quality"]), on="id", how="left", maintain_order="left")


def corpus_totals(ws: Workspace, shards: list[Path]) -> pl.DataFrame:
    """Per (cluster, source): documents, tokens, quality sum and count, summed shard by shard."""
    aggs = [pl.len().alias("docs"), pl.col("tokens").sum(), pl.col("quality").sum().alias("quality_sum"),
            pl.col("quality").count().alias("quality_n")]
    parts = [shard_documents(ws, f).group_by("cluster", "source").agg(aggs) for f in shards]
    return pl.concat(parts).group_by("cluster", "source").agg(pl.col(c).sum() for c in ("docs", "tokens", "quality_sum", "quality_n"))


def run_components(cfg: MixforgeConfig, inputs: StageInputs, options: StageOptions = StageOptions()) -> StageResult:
    """Merge the pruned corpus's clusters into components; write `components/<shard>.parquet`
    (id, component, cluster per prune shard) and the report. Two passes over the shards: totals
    per cluster and source, then names and report samples; memory holds one shard and the samples.
    A layer of new prune shards keeps the previous components (see `extending_plan`): only the
    new shards get component files, so the token shards can be appended to."""
    from mixforge.pipelines.cluster import ReportSample, cluster_rows, component_table, write_report

    upstream = inputs["prune"]
    planned = extending_plan(cfg, upstream, options.force)
    ws, plan = planned.ws, planned.layer
    previous = load_components(ws)  # read before the stage replaces it: the report maps old names to new

    def body(partial: Path) -> dict:
        t0 = time.perf_counter()
        shards = parquet_files(Path(upstream.docs_dir))
        totals = corpus_totals(ws, shards)
        out = partial / "extra"
        kept = read_json(out / "components.json") if plan.incremental else None
        if kept:
            key, mapping = saved_mapping(kept)
        else:
            key, mapping = component_mapping(cfg, totals, load_centroids(ws))
        totals = totals.join(mapping, on=key)
        sample = ReportSample(cfg.seed)
        new = set(plan.inputs)
        for f in shards:
            docs = shard_documents(ws, f, text=True)
            named = docs.join(mapping, on=key, maintain_order="left")
            check_join(docs, named, "component assignment")
            if f.name in new:  # an extending run keeps the earlier shards' files (carried over)
                atomic_write_parquet(out / "components" / f.name, named.select("id", "component", "cluster"))
            sample.add(named, vector_file(ws, f))
        table = component_table(totals, sample)
        summary = {"components": len(table), "documents": int(totals["docs"].sum()), "tokens": int(totals["tokens"].sum()),
                   "mode": cfg.cluster.components, "clusters": totals["cluster"].n_unique(), "extended": bool(kept)}
        if totals["source"].n_unique() > 1:
            counts = {g: totals.group_by("source", g).agg(pl.col("docs").sum().alias("n"))
                      .select(pl.col("source").alias("label"), pl.col(g).cast(pl.String).alias("group"), "n")
                      for g in ("component", "cluster")}
            summary["vs_source_labels"] = {"components": agreement_from_counts(counts["component"]),
                                           "clusters": agreement_from_counts(counts["cluster"])}
        fit = cluster_fit(ws)
        summary["centroid_version"] = fit.get("version")
        if previous and cfg.cluster.components == "clusters" and not kept:
            summary["from_previous"] = component_lineage(previous, mapping, fit)
        summary["seconds"] = round(time.perf_counter() - t0, 2)
        mapping_rows = [[k, c] for k, c in mapping.sort(key).iter_rows()]
        atomic_write_json(out / "components.json", {"summary": summary, "components": table,
                                                    "mapping": {"key": key, "rows": mapping_rows}})
        write_report(out, table, summary, cluster_rows(totals), sample)
        return summary

    return run_side_stage(ws, "components", planned.fingerprint, body, upstream.docs_dir, force=options.force,
                          settings=cfg.cluster.model_dump(), layer=plan, base=planned.base)


def saved_mapping(components: dict) -> tuple[str, pl.DataFrame]:
    """(key, key -> component) as a components run recorded it."""
    key, rows = components["mapping"]["key"], components["mapping"]["rows"]
    dtype = pl.Int32 if key == "cluster" else pl.String
    return key, pl.DataFrame({key: [r[0] for r in rows], "component": [r[1] for r in rows]}, schema={key: dtype, "component": pl.String})


def extending_plan(cfg: MixforgeConfig, upstream: StageResult, force: bool) -> StagePlan:
    """A layer over the new prune shards when the previous components still hold: the same
    centroid version, and every new document's cluster (or source) already has a component.
    Otherwise a full run, which may merge and name the components anew. Names stay as they were
    given (by size then), so after layers they need not be in size order."""
    planned = plan_stage(cfg, "components", components_fingerprint, upstream, force)
    ws, plan = planned.ws, planned.layer
    if resumed_plan(ws, "components", planned.fingerprint) and not force:
        return planned
    all_inputs = [f.name for f in parquet_files(Path(upstream.docs_dir))]
    previous = load_components(ws) or {}
    fit = cluster_fit(ws)
    if not plan.incremental or "mapping" not in previous or previous["summary"].get("centroid_version") != fit.get("version"):
        planned.layer = full_layer(plan.id, upstream.layers, all_inputs)
        return planned
    key, mapping = saved_mapping(previous)
    docs_dir = Path(upstream.docs_dir)
    for name in plan.inputs:
        values = (pl.read_parquet(assignment_file(ws, docs_dir / name), columns=["cluster"])["cluster"] if key == "cluster"
                  else pl.read_parquet(docs_dir / name, columns=["source"])["source"])
        if not values.is_in(mapping[key].to_list()).all():
            planned.layer = full_layer(plan.id, upstream.layers, all_inputs)
            return planned
    return planned


def component_lineage(previous: dict, mapping: pl.DataFrame, fit: dict | None) -> dict[str, dict[str, int]]:
    """Each component of the previous components stage -> {new component: how many of its clusters
    went there}. Names are by size, so a build can rename them; after a refit, old clusters are
    followed to their nearest new centroid (`fit.json`'s mapping)."""
    to_new = dict(zip(mapping["cluster"].to_list(), mapping["component"].to_list()))
    refit = (fit or {}).get("previous")
    if refit and previous.get("summary", {}).get("centroid_version") != refit["version"]:
        refit = None  # the previous components already used these centroids
    out: dict[str, dict[str, int]] = {}
    for row in previous.get("components", []):
        counts: dict[str, int] = {}
        for cluster in row.get("clusters", []):
            cluster = refit["mapping"][cluster] if refit and cluster < len(refit["mapping"]) else cluster
            name = to_new.get(cluster, "pruned")
            counts[name] = counts.get(name, 0) + 1
        out[row["component"]] = dict(sorted(counts.items()))
    return out
