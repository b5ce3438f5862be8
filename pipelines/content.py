"""What a proxy run trained on, in a basis that outlives the components.

Components are merged from fine k-means clusters (or are the sources), and a later build can
re-merge, refit or extend them. A run's row therefore also records the share of its training
tokens that came from each *cell* (fine cluster x source) of the corpus it read, with the centroids'
identity: the sampler walks each component's token stream uniformly, so a component weighted w
gives each of its cells w x (the cell's tokens / the component's tokens). Cells refine both kinds
of component (merged clusters, or sources), so a run re-expressed over any later components is
exact while the centroids stay, and goes through the documents both centroid versions assigned
after a refit (`cluster/extra/fit.json`'s transitions).
"""

from __future__ import annotations

import json

import polars as pl

from mixforge.digests import file_digest
from mixforge.ledger import parquet_files
from mixforge.pipelines.outputs import centroids_file, cluster_fit, component_files, documents_index
from mixforge.workspace import Workspace, atomic_write_parquet

CELL_COLUMNS = ("component", "cluster", "source", "tokens", "docs")


def centroid_identity(ws: Workspace) -> dict | None:
    """{"version", "digest"} of the centroids the components were merged from (None without a
    cluster stage): the digest tells two fits apart even when both are numbered version 1."""
    if not centroids_file(ws).exists():
        return None
    return {"version": cluster_fit(ws).get("version"), "digest": file_digest(centroids_file(ws))}


def cell_tokens(ws: Workspace, data: str) -> pl.DataFrame | None:
    """Training tokens and documents per (component, cluster, source) of the token shards built now (None when
    the workspace has no components or document index: a tokens stage made by hand). Cached under
    runs/content/ by the data fingerprint `data`, so a sweep computes it once."""
    cache = ws.root / "runs" / "content" / f"cells-v2-{data[:24]}.parquet"
    if data and cache.exists():
        return pl.read_parquet(cache)
    index = documents_index(ws)
    components = component_files(ws)
    docs = parquet_files(ws.docs_dir("prune")) if ws.docs_dir("prune").is_dir() else []
    if not index.exists() or not components or not docs:
        return None
    trained = pl.scan_parquet(index).filter(pl.col("split") == "train").select("id", "component", "length")
    clusters = pl.scan_parquet(components).select("id", "cluster")
    sources = pl.scan_parquet(docs).select("id", "source")
    cells = (trained.join(clusters, on="id").join(sources, on="id")
             .group_by("component", "cluster", "source").agg(pl.col("length").sum().alias("tokens"), pl.len().alias("docs"))
             .sort("component", "cluster", "source").collect(engine="streaming"))
    cells = cells.with_columns(pl.col("cluster").cast(pl.Int64), pl.col("tokens").cast(pl.Int64), pl.col("docs").cast(pl.Int64))
    cells = cells.select(CELL_COLUMNS)
    if data:
        atomic_write_parquet(cache, cells)
    return cells


def run_content(cells: pl.DataFrame, phases: list[dict[str, float]], centroids: dict | None, build: str) -> str:
    """The `content` column of a run's row (JSON): per phase, [cluster, source, share of the phase's
    tokens, the cell's training tokens and documents then] for every cell it drew from; the
    centroids' identity and the build. Shares of a phase sum to 1."""
    totals = dict(cells.group_by("component").agg(pl.col("tokens").sum()).iter_rows())
    out = []
    for weights in phases:
        rows = []
        for comp, cluster, source, tokens, docs in cells.iter_rows():
            share = weights.get(comp, 0.0) * tokens / totals[comp] if totals[comp] else 0.0
            if share > 0:
                rows.append([int(cluster), source, round(share, 8), int(tokens), int(docs)])
        out.append(rows)
    return json.dumps({"centroids": centroids, "build": build, "phases": out})
