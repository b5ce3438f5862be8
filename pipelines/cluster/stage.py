"""Cluster: faiss k-means on the embeddings (CLIMB step 2), cosine by default.

Trained on a seeded sample of `sample_per_centroid` vectors per centroid (until an iteration gains
less than `tolerance`, at most `iterations`), then every document is
assigned shard by shard: `assign/<stem>.parquet` holds id, cluster, cosine distance to the
centroid, and tokens. The GPU index is used when faiss has GPU support and CUDA is visible.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from mixforge.config import MixforgeConfig, section_hash
from mixforge.errors import ConfigError
from mixforge.pipelines.run import (StageInputs, StageOptions, StageResult, lineage, link_tree, map_shards, plan_stage,
                                    run_side_stage)
from mixforge.pipelines.samples import choose_positions, gather
from mixforge.ledger import parquet_files
from mixforge.pipelines.outputs import FIT_FILE, load_vector_shard, vector_file, vector_shards
from mixforge.workspace import Workspace, atomic_write_json, atomic_write_npy, atomic_write_parquet, read_json

MAX_AUTO_CLUSTERS = 1000  # CLIMB's K for a trillion tokens; more gave no gain in its ablation


def auto_clusters(n_docs: int) -> int:
    """sqrt(n) clusters: ~sqrt(n) documents each, so cluster statistics stay meaningful."""
    return int(np.clip(round(np.sqrt(n_docs)), 2, MAX_AUTO_CLUSTERS))


def valid_counts(shards: list[Path]) -> list[int]:
    """Documents with a usable vector, per shard."""
    return [int(pl.read_parquet(f, columns=["valid"])["valid"].sum()) for f in shards]


def training_sample(shards: list[Path], counts: list[int], size: int, seed: int) -> np.ndarray:
    """A seeded uniform sample of valid vectors (`counts` per shard), gathered shard by shard."""
    chosen = np.sort(choose_positions(sum(counts), size, seed))
    return gather(chosen, counts, lambda i: valid_vectors(shards[i]))


def valid_vectors(meta_file: Path) -> np.ndarray:
    meta, vecs = load_vector_shard(meta_file)
    return vecs[meta["valid"].to_numpy()]


@dataclass
class KMeansFit:
    centroids: np.ndarray
    device: str
    iterations: int  # Lloyd iterations run
    converged: bool  # stopped by `tolerance` before the iteration cap
    objective: float  # mean cosine distance of the sample in the last iteration's assignment


def fit_kmeans(sample: np.ndarray, k: int, iterations: int, seed: int, sample_per_centroid: int,
               tolerance: float = 0.0) -> KMeansFit:
    """faiss spherical k-means (GPU when available), at most `iterations` Lloyd iterations; stops
    early once an iteration lowers the summed cosine distance by less than `tolerance` (relative).

    faiss has no stopping rule of its own, so this runs one faiss iteration per call, starting each
    from the previous centroids: the same steps as one `niter` call (the first call's seeded random
    init, faiss's centroid update and empty-cluster split), so it stays seeded and GPU-capable."""
    import faiss

    use_gpu = faiss.get_num_gpus() > 0 if hasattr(faiss, "get_num_gpus") else False
    x = np.ascontiguousarray(sample, dtype=np.float32)
    device = "cuda" if use_gpu else "cpu"
    if len(x) == k:  # faiss takes the points as centroids and reports a meaningless objective of 0
        return KMeansFit(x / np.linalg.norm(x, axis=1, keepdims=True), device, 0, True, 0.0)
    km = faiss.Kmeans(
        x.shape[1], k, niter=1, seed=seed, spherical=True, gpu=use_gpu,
        max_points_per_centroid=sample_per_centroid, min_points_per_centroid=1, verbose=False,
    )
    used = min(len(x), k * sample_per_centroid)  # faiss subsamples beyond that (the same points each call)
    centroids, losses, converged = None, [], False
    for _ in range(iterations):
        km.train(x, init_centroids=centroids)
        centroids = km.centroids
        # the stat is the summed similarity of the assignment made from the previous centroids
        losses.append(used - km.iteration_stats[-1]["obj"])
        if len(losses) > 1 and losses[-2] - losses[-1] < tolerance * losses[-2]:
            converged = True
            break
    return KMeansFit(centroids, device, len(losses), converged, float(losses[-1] / used))


def train_kmeans(sample: np.ndarray, k: int, iterations: int, seed: int, sample_per_centroid: int,
                 tolerance: float = 0.0):
    """`fit_kmeans`, returning (centroids, device)."""
    fit = fit_kmeans(sample, k, iterations, seed, sample_per_centroid, tolerance)
    return fit.centroids, fit.device


def assign(vectors: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid by cosine; returns (cluster ids, cosine distances)."""
    import faiss

    index = faiss.IndexFlatIP(centroids.shape[1])
    index.add(np.ascontiguousarray(centroids))
    sims, ids = index.search(np.ascontiguousarray(vectors), 1)
    return ids[:, 0].astype(np.int32), (1.0 - sims[:, 0]).astype(np.float32)


def cluster_fingerprint(cfg: MixforgeConfig, upstream_fingerprint: str) -> str:
    c = cfg.cluster
    return section_hash(upstream_fingerprint, c.n_clusters, c.iterations, c.tolerance, c.sample_per_centroid, cfg.seed)


def run_cluster(cfg: MixforgeConfig, inputs: StageInputs, options: StageOptions = StageOptions()) -> StageResult:
    """k-means over the embed stage's vectors into `<workspace>/cluster/extra/`. After a build,
    only the new vectors are assigned, to the saved centroids, and the drift is reported; past
    `cluster.refit_drift` the centroids are refitted as a new version (see `incremental_assign`)."""
    upstream = inputs["embed"]  # its documents are the dedup output it embedded
    c = cfg.cluster
    planned = plan_stage(cfg, "cluster", cluster_fingerprint, upstream, options.force)
    ws, plan = planned.ws, planned.layer
    before = fit_before(ws, planned.fingerprint, plan, options.force)

    def body(partial: Path) -> dict:
        t0 = time.perf_counter()
        out = partial / "extra"
        (out / "assign").mkdir(parents=True, exist_ok=True)
        drift = None
        if plan.incremental:
            drift = incremental_assign(cfg, ws, out, plan)
            if not drift["refit"]:
                fit = read_json(out / FIT_FILE)
                return {"clusters": fit["clusters"], "centroid_version": fit["version"], "documents": drift["documents"],
                        "drift": drift, "seconds": round(time.perf_counter() - t0, 2)}
            plan.previous, plan.consumed = [], lineage(upstream.layers)  # refitted: every assignment is new
            plan.inputs = [f.name for f in parquet_files(Path(upstream.docs_dir))]
        shards = vector_shards(ws)
        counts = valid_counts(shards)
        n_valid = sum(counts)
        k = auto_clusters(n_valid) if c.n_clusters == "auto" else c.n_clusters
        if n_valid < 2 or k > n_valid:
            raise ConfigError(f"cluster.n_clusters: {k} clusters asked for, but only {n_valid} documents have embeddings")
        sample_size = min(k * c.sample_per_centroid, n_valid)
        fit_stats = {"device": "resumed"}  # a resumed stage assigns with the centroids it already fitted
        if not (out / "centroids.npy").exists():
            sample = training_sample(shards, counts, sample_size, cfg.seed)
            fit = fit_kmeans(sample, k, c.iterations, cfg.seed, c.sample_per_centroid, c.tolerance)
            atomic_write_npy(out / "centroids.npy", fit.centroids)
            fit_stats = {"device": fit.device, "iterations": fit.iterations, "converged": fit.converged,
                         "train_mean_cosine_distance": round(fit.objective, 4)}
        calls = [(str(f), str(out / "centroids.npy"), str(out / "assign" / f.name)) for f in shards]
        inertia = sum(map_shards(cfg, assign_shard, calls, "cluster: assign", counts))
        version = record_fit(out, k, drift, plan.id, before)
        summary = {"clusters": k, "centroid_version": version, "documents": n_valid, "train_sample": sample_size, **fit_stats,
                   "mean_cosine_distance": round(inertia / max(n_valid, 1), 4), "seconds": round(time.perf_counter() - t0, 2)}
        return summary | ({"drift": drift} if drift else {})

    result = run_side_stage(ws, "cluster", planned.fingerprint, body, upstream.docs_dir, force=options.force,
                            settings=c.model_dump(), layer=plan, base=planned.base)
    shutil.rmtree(ws.root / FIT_BEFORE, ignore_errors=True)
    return result


FIT_BEFORE = "cluster.before"  # a full rerun's predecessor: its centroids, fit.json and assignments (hard links)


def fit_before(ws: Workspace, fingerprint: str, plan, force: bool) -> Path | None:
    """The published fit a full rerun is about to clear (the stage runner empties a stage before
    it reruns in full), kept as hard links until the new fit has counted its transitions from it;
    a killed rerun's copy is reused. None when nothing is replaced."""
    keep, published = ws.root / FIT_BEFORE, ws.stage_dir("cluster") / "extra"
    if keep.exists():
        return keep
    done = (ws.stage_record("cluster") or {}).get("fingerprint") == fingerprint and not force
    if plan.incremental or done or not (published / "centroids.npy").exists():
        return None
    tmp = ws.root / f".{FIT_BEFORE}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    link_tree(published / "assign", tmp / "assign")
    for name in ("centroids.npy", FIT_FILE):
        if (published / name).exists():
            os.link(published / name, tmp / name)
    os.replace(tmp, keep)
    return keep


DRIFT_FILE = "drift.json"  # cluster/extra/: the latest build's drift report


def assignments(folder: Path, shards: list[str] | None = None) -> pl.DataFrame:
    files = sorted(folder.glob("*.parquet")) if shards is None else [folder / n for n in shards]
    return pl.concat([pl.read_parquet(f, columns=["cluster", "distance"]) for f in files]) if files else pl.DataFrame(
        schema={"cluster": pl.Int32, "distance": pl.Float32})


def record_fit(out: Path, k: int, drift: dict | None, layer: str, published: Path | None = None) -> int:
    """Write fit.json for centroids just fitted by build `layer` (version 1, or one more than the
    refitted ones, whose centroids stay as centroids-v<N>.npy with the mapping of their clusters
    to the new). A resumed run that already wrote it keeps it. Either way the transitions from the
    centroids before (refitted ones, or `published`: the stage a full rerun replaces) are kept."""
    previous = read_json(out / FIT_FILE) if drift else None
    if previous and previous.get("layer") == layer:
        shutil.rmtree(out / PREVIOUS_ASSIGN, ignore_errors=True)
        return previous["version"]
    version = previous["version"] + 1 if previous else 1
    done = assignments(out / "assign").filter(pl.col("cluster") >= 0)
    fit = {"version": version, "layer": layer, "clusters": k, "distance_p95": float(done["distance"].quantile(0.95) or 0.0),
           "sizes": {str(c): n for c, n in done.group_by("cluster").len().sort("cluster").iter_rows()}}
    if previous:  # each old cluster -> the nearest new centroid
        old = np.load(out / f"centroids-v{previous['version']}.npy")
        fit["previous"] = {"version": previous["version"], "mapping": assign(old, np.load(out / "centroids.npy"))[0].tolist()}
        fit["transitions"] = previous.get("transitions", []) + [
            transition(out / PREVIOUS_ASSIGN, out / f"centroids-v{previous['version']}.npy", out, previous["version"], version)]
    elif published is not None and (published / "centroids.npy").exists():  # a full rerun: from the centroids it replaces
        before = read_json(published / FIT_FILE) or {}
        step = transition(published / "assign", published / "centroids.npy", out, before.get("version"), version)
        if step["from"] != step["to"]:
            fit["transitions"] = before.get("transitions", []) + [step]
    atomic_write_json(out / FIT_FILE, fit)
    shutil.rmtree(out / PREVIOUS_ASSIGN, ignore_errors=True)
    return version


PREVIOUS_ASSIGN = "assign-previous"  # the refitted centroids' assignments, until their transitions are counted


def transition(old_assign: Path, old_centroids: Path, out: Path, old_version: int | None, new_version: int) -> dict:
    """Tokens of the documents both centroid versions assigned (joined by id, streamed), per (old
    cluster, new cluster): how a run described over the old clusters is re-expressed over the new
    ones (mixers/carry.py). Centroids are named by digest: two fits can share a version number."""
    from mixforge.digests import file_digest

    old_files, new_files = sorted(old_assign.glob("*.parquet")), sorted((out / "assign").glob("*.parquet"))
    counts = pl.DataFrame(schema={"cluster": pl.Int32, "to": pl.Int32, "tokens": pl.Int64})
    if old_files and new_files:
        old = pl.scan_parquet(old_files).select("id", "cluster", "tokens")
        new = pl.scan_parquet(new_files).select("id", pl.col("cluster").alias("to"))
        counts = (old.join(new, on="id").filter((pl.col("cluster") >= 0) & (pl.col("to") >= 0))
                  .group_by("cluster", "to").agg(pl.col("tokens").sum()).sort("cluster", "to").collect(engine="streaming"))
    return {"from_version": old_version, "to_version": new_version, "from": file_digest(old_centroids),
            "to": file_digest(out / "centroids.npy"), "tokens": [[int(a), int(b), int(t)] for a, b, t in counts.iter_rows()]}


def incremental_assign(cfg: MixforgeConfig, ws: Workspace, out: Path, plan) -> dict:
    """Assign the new shards to the saved centroids and report the drift: the share of new
    documents farther from every centroid than the fit's 95th-percentile distance, and the
    clusters whose size changed most. With `cluster.refit_drift` below that share, the saved
    centroids become centroids-v<N>.npy and the caller refits (resumable: the report is kept)."""
    drift = read_json(out / DRIFT_FILE)
    if drift and drift.get("layer") == plan.id:
        return drift
    new = [vector_file(ws, Path(n)) for n in plan.inputs]
    calls = [(str(f), str(out / "centroids.npy"), str(out / "assign" / f.name)) for f in new]
    map_shards(cfg, assign_shard, calls, "cluster: assign new", valid_counts(new))
    fit = read_json(out / FIT_FILE)
    added = assignments(out / "assign", [f.name for f in new]).filter(pl.col("cluster") >= 0)
    beyond = float((added["distance"] > fit["distance_p95"]).mean() or 0.0) if added.height else 0.0
    sizes = {int(c): n for c, n in fit["sizes"].items()}
    grown = added.group_by("cluster").len().with_columns(
        pl.col("cluster").replace_strict(sizes, default=0).alias("before")).with_columns(
        (pl.col("len") / pl.col("before").clip(1)).alias("growth")).sort(["growth", "cluster"], descending=[True, False])  # ties by cluster: reruns agree
    threshold = cfg.cluster.refit_drift
    drift = {"layer": plan.id, "documents": added.height, "centroid_version": fit["version"],
             "distance_p95": fit["distance_p95"], "share_beyond_p95": round(beyond, 4), "refit_drift": threshold,
             "refit": threshold is not None and beyond > threshold,
             "largest_growth": [{"cluster": c, "before": b, "added": n, "growth": round(g, 3)}
                                for c, n, b, g in grown.head(10).select("cluster", "len", "before", "growth").iter_rows()]}
    if drift["refit"]:
        previous = out / PREVIOUS_ASSIGN  # kept until the new fit's transitions are counted (record_fit)
        if not previous.exists():
            os.replace(out / "assign", previous)
        (out / "assign").mkdir(exist_ok=True)
        os.replace(out / "centroids.npy", out / f"centroids-v{fit['version']}.npy")
    atomic_write_json(out / DRIFT_FILE, drift)
    return drift


def assign_shard(meta_file: str, centroids_file: str, target: str) -> float:
    """Nearest centroid for every vector of one embed shard into `target` (kept when already
    there: a resumed stage uses the centroids it fitted); returns the summed cosine distance."""
    if Path(target).exists():
        return float(pl.read_parquet(target, columns=["distance"])["distance"].fill_nan(None).sum() or 0)
    meta, vecs = load_vector_shard(Path(meta_file))
    valid = meta["valid"].to_numpy()
    ids, dist = assign(vecs, np.load(centroids_file)) if len(vecs) else (np.zeros(0, np.int32), np.zeros(0, np.float32))
    ids[~valid], dist[~valid] = -1, np.nan
    atomic_write_parquet(Path(target), meta.select("id", "tokens").with_columns(pl.Series("cluster", ids), pl.Series("distance", dist)))
    return float(np.nansum(dist))
