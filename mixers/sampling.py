"""Random mixtures for proxy sweeps (RegMix's recipe): Dirichlet(alpha = prior * s) with the
prior = component token shares tempered by `temperature` (0.5), the strength s drawn from
log-spaced values in [0.1, 5]; weights below 2e-4 are zeroed; duplicates are dropped; mixtures
that would repeat a component more than `max_epochs` times under the budget are rejected."""

from __future__ import annotations

import numpy as np

from mixforge.errors import MixforgeError


def tempered_prior(token_counts: dict[str, int], temperature: float = 0.5) -> dict[str, float]:
    shares = np.array([token_counts[c] for c in sorted(token_counts)], dtype=float)
    p = (shares / shares.sum()) ** temperature
    return dict(zip(sorted(token_counts), (p / p.sum()).tolist()))


def random_mixtures(token_counts: dict[str, int], n: int, seed: int, budget: int, max_epochs: float = 15,
                    temperature: float = 0.5, strengths: int = 15, min_weight: float = 2e-4) -> list[dict[str, float]]:
    """`n` distinct mixtures over the components, deterministic for a seed."""
    names = sorted(token_counts)
    prior = np.array([tempered_prior(token_counts, temperature)[c] for c in names])
    available = np.array([token_counts[c] for c in names], dtype=float)
    grid = np.logspace(np.log10(0.1), np.log10(5.0), strengths)
    rng = np.random.default_rng(seed)
    out: list[dict[str, float]] = []
    seen: set[tuple] = set()
    for _ in range(n * 200):
        if len(out) == n:
            break
        w = rng.dirichlet(prior * rng.choice(grid))
        w[w < min_weight] = 0.0
        if w.sum() == 0:
            continue
        w = w / w.sum()
        if np.any(w * budget / available > max_epochs):
            continue
        key = tuple(np.round(w, 3))
        if key in seen:
            continue
        seen.add(key)
        out.append(dict(zip(names, w.round(6).tolist())))
    if len(out) < n:
        raise MixforgeError(f"found only {len(out)} of {n} mixtures within {max_epochs} epochs for a budget of "
                            f"{budget:,} tokens: lower proxy.tokens or add data")
    return out
