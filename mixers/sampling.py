"""Random mixtures (RegMix's recipe), for proxy sweeps and for the candidate pools the search
scores: Dirichlet(alpha = prior * s) with the prior = component token shares tempered by
`temperature` (0.5), the strength s drawn from log-spaced values in [0.1, 5]; weights below 2e-4
are zeroed; near-duplicates are dropped; mixtures that would repeat a component more than
`max_epochs` times under the token budget, or break a share constraint, are rejected."""

from __future__ import annotations

import numpy as np

from mixforge.errors import MixforgeError


def tempered_prior(token_counts: dict[str, int], temperature: float = 0.5) -> dict[str, float]:
    shares = np.array([token_counts[c] for c in sorted(token_counts)], dtype=float)
    p = (shares / shares.sum()) ** temperature
    return dict(zip(sorted(token_counts), (p / p.sum()).tolist()))


def dirichlet_pool(prior: np.ndarray, n: int, rng: np.random.Generator, min_strength: float = 0.1,
                   max_strength: float = 5.0, strengths: int = 15, min_weight: float = 2e-4) -> np.ndarray:
    """n raw draws [n, k] (rows sum to 1; tiny weights zeroed), vectorised."""
    grid = np.logspace(np.log10(min_strength), np.log10(max_strength), strengths)
    alpha = np.maximum(prior[None, :] * rng.choice(grid, size=(n, 1)), 1e-6)
    w = rng.gamma(alpha)  # Dirichlet by normalised gammas, one strength per row
    w[w < min_weight * w.sum(axis=1, keepdims=True)] = 0.0
    total = w.sum(axis=1, keepdims=True)
    w = np.where(total > 0, w / np.where(total > 0, total, 1), 0)
    return w[total[:, 0] > 0]


def feasible(w: np.ndarray, available: np.ndarray | None, budget: int | None, max_epochs: float,
             min_share: np.ndarray | None = None, max_share: np.ndarray | None = None) -> np.ndarray:
    """Rows of w [n, k] within the repetition cap and the share bounds."""
    ok = np.ones(len(w), dtype=bool)
    if available is not None and budget:
        ok &= np.all(w * budget / np.maximum(available, 1) <= max_epochs, axis=1)
    if min_share is not None:
        ok &= np.all(w >= min_share - 1e-9, axis=1)
    if max_share is not None:
        ok &= np.all(w <= max_share + 1e-9, axis=1)
    return ok


def random_mixtures(token_counts: dict[str, int], n: int, seed: int, budget: int, max_epochs: float = 15,
                    temperature: float = 0.5, strengths: int = 15, min_weight: float = 2e-4,
                    min_strength: float = 0.1, max_strength: float = 5.0, exclude: list[dict] | None = None) -> list[dict[str, float]]:
    """`n` distinct mixtures over the components, deterministic for a seed (none near one in `exclude`)."""
    names = sorted(token_counts)
    prior = np.array([tempered_prior(token_counts, temperature)[c] for c in names])
    available = np.array([token_counts[c] for c in names], dtype=float)
    rng = np.random.default_rng(seed)
    out: list[dict[str, float]] = []
    seen = {tuple(np.round([m.get(c, 0.0) for c in names], 3)) for m in exclude or []}
    for _ in range(200):
        if len(out) == n:
            break
        pool = dirichlet_pool(prior, max(4 * n, 64), rng, min_strength, max_strength, strengths, min_weight)
        for w in pool[feasible(pool, available, budget, max_epochs)]:
            key = tuple(np.round(w, 3))
            if key in seen:
                continue
            seen.add(key)
            out.append(dict(zip(names, w.round(6).tolist())))
            if len(out) == n:
                break
    if len(out) < n:
        raise MixforgeError(f"found only {len(out)} of {n} mixtures within {max_epochs} epochs for a budget of "
                            f"{budget:,} tokens: lower proxy.tokens or add data")
    return out
