"""bayesopt (ADMIRE-BayesOpt): a Gaussian process over the mixture simplex chooses where to train
the next proxies.

A first batch of random mixtures (RegMix's Dirichlet draws, half the runs), then `search.bo_rounds`
batches, each chosen by expected improvement over a pool of candidates that keep the pins, share
bounds and repetition caps. A batch is built one mixture at a time with the constant liar: each
pick is added to the GP as if it scored the best value seen so far, so the next pick goes elsewhere.
The GP is scikit-learn's (Matern 5/2 with one length scale per component, plus a noise term,
targets standardised). The proposal is made as in climb: the best predicted mixture of a fresh
pool and the runs, by the search's predictor (auto by default) fitted on every run.
"""

from __future__ import annotations

import numpy as np

from mixforge.mixers.strategies import Proposal, SearchContext, _iteration, best_predicted, candidate_pool, climb_batches, fit, random_runs, unseen

ACQUISITION_POOL = 20_000  # candidates scored by expected improvement per pick (the GP's variance is O(n^2) each)


def fit_gp(X: np.ndarray, y: np.ndarray, seed: int):
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel

    kernel = ConstantKernel(1.0, (1e-3, 1e3)) * Matern(np.full(X.shape[1], 0.3), (1e-2, 1e2), nu=2.5) + WhiteKernel(1e-2, (1e-6, 1.0))
    return GaussianProcessRegressor(kernel, normalize_y=True, n_restarts_optimizer=2, random_state=seed).fit(X, y)


def expected_improvement(mu: np.ndarray, sd: np.ndarray, best: float) -> np.ndarray:
    """EI for minimisation."""
    from scipy.stats import norm

    sd = np.maximum(sd, 1e-12)
    z = (best - mu) / sd
    return (best - mu) * norm.cdf(z) + sd * norm.pdf(z)


def next_batch(X: np.ndarray, y: np.ndarray, pool: np.ndarray, size: int, seed: int) -> np.ndarray:
    """`size` rows of `pool` by expected improvement with the constant liar (y: lower is better)."""
    from sklearn.gaussian_process import GaussianProcessRegressor

    gp = fit_gp(X, y, seed)
    kernel, best = gp.kernel_, float(y.min())
    picks: list[int] = []
    for _ in range(min(size, len(pool))):
        mu, sd = gp.predict(pool, return_std=True)
        ei = expected_improvement(mu, sd, best)
        ei[picks] = -np.inf
        pick = int(np.argmax(ei))
        picks.append(pick)
        X, y = np.vstack([X, pool[pick]]), np.append(y, best)  # the lie: it scored the best so far
        gp = GaussianProcessRegressor(kernel, normalize_y=True, optimizer=None).fit(X, y)
    return pool[picks]


def bayesopt(ctx: SearchContext) -> Proposal:
    s = ctx.settings
    first = max(ctx.runs // 2, min(4, ctx.runs))
    rounds = min(s.bo_rounds, ctx.runs - first)
    sizes = [first] + (climb_batches(ctx.runs - first, [1] * rounds) if rounds > 0 else [])
    rng = np.random.default_rng([ctx.seed, 4])
    rows = random_runs(ctx, first, "bayesopt: random start")
    iterations = []
    for it, size in enumerate(sizes[1:], start=2):
        predictor, report, data, y, _ = fit(rows, ctx)
        iterations.append(_iteration(it - 1, rows, y, report, ctx))
        pool = candidate_pool(ctx, ACQUISITION_POOL, rng)
        pool = unseen(pool[ctx.trainable(pool)], data.weights)
        batch = next_batch(data.weights, ctx.objective.sign * y, pool, size, ctx.seed + it)
        start = ctx.seed + len(rows)
        rows = rows + ctx.train([ctx.as_dict(w) for w in batch], list(range(start, start + len(batch))), f"bayesopt round {it}")
    return best_predicted(ctx, "bayesopt", rows, rng, iterations)
