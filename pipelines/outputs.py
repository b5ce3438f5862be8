"""Where each stage's published outputs live in a workspace, and how to read them. Later stages,
the search, the proxies and the export find earlier outputs here only; a stage writes its own
under its partial folder with the same paths relative to the stage folder (`extra/...`).

    ingest      extra/sources.json              the source manifest the published ingest read
    embed       extra/vectors/<shard>.parquet   id, tokens, valid (+ <shard>.npy: float16 vectors)
    cluster     extra/centroids.npy, fit.json   centroids; version, sizes, refits' transitions
                extra/assign/<shard>.parquet    id, tokens, cluster, distance
    quality     extra/scores/<shard>.parquet    id, heuristic, classifier, quality
    components  extra/components.json           the merge (mapping), names and report rows
                extra/components/<shard>.parquet   id, component, cluster (per prune shard)
    tokens      extra/                          tokenizer.json, train/, heldout/, documents.parquet,
                                                tasks/next_line.jsonl

(<shard>: a dedup shard's name; prune keeps the names of the shards it splits.)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from mixforge.workspace import Workspace, read_json

SOURCES_FILE = "sources.json"
FIT_FILE = "fit.json"


def sources_manifest(ws: Workspace) -> list[dict] | None:
    return read_json(ws.stage_dir("ingest") / "extra" / SOURCES_FILE)


def vector_shards(ws: Workspace) -> list[Path]:
    """Per-shard metadata files written by the embed stage (vectors beside them as .npy)."""
    return sorted((ws.stage_dir("embed") / "extra" / "vectors").glob("*.parquet"))


def vector_file(ws: Workspace, shard: Path) -> Path:
    """The embed metadata file of one dedup (or prune) shard."""
    return ws.stage_dir("embed") / "extra" / "vectors" / f"{shard.stem}.parquet"


def load_vector_shard(meta_file: Path) -> tuple[pl.DataFrame, np.ndarray]:
    """(id, tokens, valid) and the float32 vectors of one embed shard."""
    return pl.read_parquet(meta_file), np.load(meta_file.with_suffix(".npy")).astype(np.float32)


def centroids_file(ws: Workspace) -> Path:
    return ws.stage_dir("cluster") / "extra" / "centroids.npy"


def load_centroids(ws: Workspace) -> np.ndarray:
    return np.load(centroids_file(ws))


def cluster_fit(ws: Workspace) -> dict:
    """The published fit.json ({} before the cluster stage ran)."""
    return read_json(ws.stage_dir("cluster") / "extra" / FIT_FILE) or {}


def assignment_file(ws: Workspace, shard: Path) -> Path:
    """id, tokens, cluster, distance of the documents of one dedup (or prune) shard."""
    return ws.stage_dir("cluster") / "extra" / "assign" / f"{shard.stem}.parquet"


def score_file(ws: Workspace, shard: Path) -> Path:
    """The quality scores of the documents of one dedup (or prune) shard."""
    return ws.stage_dir("quality") / "extra" / "scores" / f"{shard.stem}.parquet"


def component_file(ws: Workspace, shard: Path) -> Path:
    """id, component, cluster of the documents of one prune shard."""
    return ws.stage_dir("components") / "extra" / "components" / f"{shard.stem}.parquet"


def component_files(ws: Workspace) -> list[Path]:
    return sorted((ws.stage_dir("components") / "extra" / "components").glob("*.parquet"))


def load_components(ws: Workspace) -> dict | None:
    """The components.json of a workspace (None before the stage ran)."""
    return read_json(ws.stage_dir("components") / "extra" / "components.json")


def tokens_dir(ws: Workspace) -> Path:
    """The tokens stage's outputs: tokenizer.json, train/ and heldout/ shards, documents.parquet, tasks/."""
    return ws.stage_dir("tokens") / "extra"


def tokenizer_file(ws: Workspace) -> Path:
    return tokens_dir(ws) / "tokenizer.json"


def next_line_file(ws: Workspace) -> Path:
    """The built-in next-line task drawn from held-out documents."""
    return tokens_dir(ws) / "tasks" / "next_line.jsonl"


def documents_index(ws: Workspace) -> Path:
    """documents.parquet: where each kept document's tokens are (split, component, offsets)."""
    return tokens_dir(ws) / "documents.parquet"
