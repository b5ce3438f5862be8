"""Runs described by what they trained on: the token-weighted mean of the centroid embeddings
of the fine clusters their tokens came from (a point in the embedding space), projected onto the
directions the components span (at most CONTENT_DIMS).

A mixture over today's components maps linearly (each component is its clusters' token-weighted
centroid mean); a carried run maps through its own cluster shares, which need not match any
mixture of today's components. The `content` predictor (predictors.py) fits a Gaussian process
on these features: a smooth function of content rather than of component names, the
description Marin found to keep its evidence when buckets are re-split (embedding-histogram
features, out-of-fold Spearman 0.835 vs 0.803 with raw weights).
"""

from __future__ import annotations

import numpy as np

CONTENT_DIMS = 8


class ContentSpace:
    def __init__(self, centroids: np.ndarray, cluster_shares: dict[str, dict[int, float]], components: list[str]):
        """cluster_shares: per component, its tokens' share per cluster (today's)."""
        self.centroids = np.asarray(centroids, dtype=float)
        means = np.array([self._point(cluster_shares[c]) for c in components])
        self.center = means.mean(axis=0)
        _, _, vt = np.linalg.svd(means - self.center, full_matrices=False)
        self.basis = vt[: max(1, min(CONTENT_DIMS, len(components) - 1))].T  # d x r
        self.of_components = (means - self.center) @ self.basis  # k x r

    def _point(self, shares: dict[int, float]) -> np.ndarray:
        total = sum(shares.values())
        return sum(s * self.centroids[c] for c, s in shares.items() if 0 <= c < len(self.centroids)) / (total or 1.0)

    @property
    def dims(self) -> int:
        return self.basis.shape[1]

    def of_mixtures(self, W: np.ndarray) -> np.ndarray:
        """Features of mixtures W [n, k] over today's components."""
        return np.asarray(W) @ self.of_components

    def of_clusters(self, shares: dict[int, float]) -> np.ndarray:
        """Features of a run from its tokens' share per cluster."""
        return (self._point(shares) - self.center) @ self.basis


class WithContent:
    """A model fitted on [weights | content features], predicting mixtures from their weights."""

    def __init__(self, model, space: ContentSpace):
        self.model, self.space = model, space

    def predict(self, W: np.ndarray) -> np.ndarray:
        return self.model.predict(np.hstack([W, self.space.of_mixtures(W)]))


def content_space(ws, now, components: list[str]) -> ContentSpace | None:
    """Today's content space over `components` from the workspace's centroids (None before a
    cluster stage or without today's cells)."""
    from mixforge.pipelines.outputs import centroids_file

    path = centroids_file(ws)
    if now is None or not path.exists():
        return None
    shares: dict[str, dict[int, float]] = {}
    for comp, cluster, tokens in now.cells.select("component", "cluster", "tokens").iter_rows():
        shares.setdefault(comp, {})
        shares[comp][int(cluster)] = shares[comp].get(int(cluster), 0.0) + tokens
    return ContentSpace(np.load(path), shares, components)
