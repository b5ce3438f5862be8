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

from mixforge.errors import MixforgeError
from mixforge.mixers.model_choice import agreement, interval_of
from mixforge.mixers.objective import kl_to_prior
from mixforge.mixers.refine import choose, never_worse
from mixforge.mixers.context import Proposal, SearchContext
from mixforge.mixers.fitting import fit, rows_data, scores
from mixforge.mixers.strategies import (_iteration, _proposal, best_predicted, candidate_pool, climb_batches, random_runs,
                                        unconstrained, unseen, within)

NORMAL_90 = 1.6449  # two-sided 90% of a normal: the residual GP's share of the interval
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


def gp_rounds(ctx: SearchContext, runs: int, rng: np.random.Generator, label: str) -> tuple[list[dict], list[dict]]:
    """`runs` proxies through ctx.train: a random half (RegMix's draws), then `search.bo_rounds`
    batches by expected improvement. Returns the rows and one iteration record per refit."""
    first = max(runs // 2, min(4, runs))
    rounds = min(ctx.settings.bo_rounds, runs - first)
    sizes = [first] + (climb_batches(runs - first, [1] * rounds) if rounds > 0 else [])
    rows = random_runs(ctx, first, f"{label}: random start")
    iterations = []
    for it, size in enumerate(sizes[1:], start=2):
        predictor, report, data, y, _ = fit(rows, ctx)
        iterations.append(_iteration(it - 1, rows, y, report, ctx))
        pool = candidate_pool(ctx, ACQUISITION_POOL, rng)
        pool = unseen(pool[ctx.trainable(pool)], data.weights)
        batch = next_batch(data.weights, ctx.objective.sign * y, pool, size, ctx.seed + it)
        start = ctx.seed + len(rows)
        rows = rows + ctx.train([ctx.as_dict(w) for w in batch], list(range(start, start + len(batch))), f"{label} round {it}")
    return rows, iterations


def bayesopt(ctx: SearchContext) -> Proposal:
    rng = np.random.default_rng([ctx.seed, 4])
    rows, iterations = gp_rounds(ctx, ctx.runs, rng, "bayesopt")
    return best_predicted(ctx, "bayesopt", rows, rng, iterations)


def fidelity_split(runs: int, cheap_cost: float, cheap_share: float) -> tuple[int, int]:
    """(runs at the search's proxy, runs at the cheap one) that cost no more than `runs` runs at the
    search's proxy, `cheap_share` of it spent cheaply; at least 2 expensive runs to choose between."""
    main = min(max(2, round((1 - cheap_share) * runs)), runs)
    return main, max(int((runs - main) / cheap_cost + 1e-9), 0)


def calibrate(cheap_predicted: np.ndarray, measured: np.ndarray) -> tuple[float, float]:
    """(rho, offset) of measured ~ rho * cheap_predicted + offset (Kennedy and O'Hagan's
    autoregressive link between fidelities). Fewer than 3 runs, or a slope <= 0 (the cheap
    fidelity ranks these mixtures backwards), keep the cheap ranking: rho 1 and the mean gap."""
    if len(measured) >= 3 and np.ptp(cheap_predicted) > 0:
        rho, offset = np.polyfit(cheap_predicted, measured, 1)
        if rho > 0:
            return float(rho), float(offset)
    return 1.0, float(np.mean(measured - cheap_predicted))


def residual_gp(X: np.ndarray, residuals: np.ndarray, seed: int):
    """What the calibrated cheap predictor still gets wrong at the expensive runs: a GP with a fixed
    length scale (a handful of runs cannot fit one per component) and a learnt noise term."""
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel

    scale = max(float(np.var(residuals)), 1e-12)
    kernel = ConstantKernel(scale, (scale * 1e-3, scale * 1e3)) * Matern(0.3, "fixed", nu=2.5) + WhiteKernel(scale, (scale * 1e-4, scale * 1e2))
    return GaussianProcessRegressor(kernel, normalize_y=False, random_state=seed).fit(X, residuals)


def bayesopt_mf(ctx: SearchContext) -> Proposal:
    """Multi-fidelity bayesopt: `search.cheap_share` of the compute on cheap proxies (ctx.cheap:
    a smaller preset or fewer tokens), a few runs at the search's own proxy settings to choose.

    1. bayesopt rounds at the cheap fidelity (random half, then expected improvement);
    2. the search's predictor fitted on the cheap runs; its best candidate, then more by expected
       improvement under the cheap GP (constant liar), are trained at the search's proxy;
    3. calibration: measured ~ rho * cheap prediction + offset, plus a GP on what is left;
    4. the proposal is the best of the pool, the cheap runs and the expensive runs under the
       calibrated prediction, which at the expensive runs leans on what they measured.
    The predicted figure and its interval are in the search proxy's units."""
    n_main, n_cheap = _fidelity_budget(ctx)
    rng = np.random.default_rng([ctx.seed, 5])
    cheap_rows, iterations = gp_rounds(ctx.cheap, n_cheap, rng, "bayesopt_mf cheap")
    predictor, report, data, y, penalty = fit(cheap_rows, ctx.cheap)
    iterations.append(_iteration(len(iterations) + 1, cheap_rows, y, report, ctx.cheap))
    pool = candidate_pool(ctx, ctx.settings.candidates, rng, extra=data.weights)
    picks = _main_picks(ctx, predictor, penalty, pool, data.weights, y, n_main)
    start = ctx.seed + n_cheap
    main_rows = ctx.train([ctx.as_dict(w) for w in picks], list(range(start, start + len(picks))), "bayesopt_mf: at the search's proxy")
    main = rows_data(main_rows, ctx, min_runs=1)
    measured = ctx.objective.column(main)
    cheap_at_main = predictor.predict(main.weights)
    rho, offset = calibrate(cheap_at_main, measured)
    gp = residual_gp(main.weights, measured - (rho * cheap_at_main + offset), ctx.seed)
    calibrated = _calibrated(predictor, rho, offset, gp)
    w, check = _choose_calibrated(ctx, calibrated, rho, penalty, pool, main, measured)
    predicted, interval = _calibrated_interval(calibrated, w, report, rho)
    free = unconstrained(predictor, ctx, penalty, None, data.weights)
    free["predicted"] = rho * free["predicted"] + offset
    fidelity = _fidelity_record(ctx, cheap_rows, main_rows, rho, offset, measured, cheap_at_main)
    proposal = _proposal(ctx, "bayesopt_mf", w, None, report, y, cheap_rows + main_rows, iterations=iterations,
                         kl_weight=penalty, unconstrained=free, fidelity=fidelity, best_observed=check,
                         fallback=check and check["fallback"])
    proposal.predicted, proposal.predicted_interval = predicted, interval
    return proposal


def _fidelity_budget(ctx: SearchContext) -> tuple[int, int]:
    """(runs at the search's proxy, cheap runs); an error before any training when the cheap
    fidelity is missing or the budget leaves fewer than 4 cheap runs."""
    if ctx.cheap is None or ctx.cheap_cost is None:
        raise MixforgeError("bayesopt_mf needs the cheap fidelity's context (ctx.cheap, ctx.cheap_cost): run it through "
                            "`mixforge search`, which trains at search.cheap_proxy")
    n_main, n_cheap = fidelity_split(ctx.runs, ctx.cheap_cost, ctx.settings.cheap_share)
    if n_cheap < 4:
        raise MixforgeError(f"bayesopt_mf: {ctx.runs} runs at {ctx.cheap_cost:.2f} of a run's cost each leave {n_cheap} "
                            "cheap runs (4 needed): raise search.runs or make search.cheap_proxy cheaper")
    return n_main, n_cheap


def _main_picks(ctx: SearchContext, predictor, penalty: float, pool: np.ndarray, X: np.ndarray, y: np.ndarray,
                n_main: int) -> np.ndarray:
    """What to train at the search's proxy: the cheap predictor's best of the pool, then n_main - 1
    more by expected improvement under the cheap GP (the first pick lies that it scored the best)."""
    score = scores(predictor, pool, ctx, penalty)
    order = np.argsort(score, kind="stable")
    first = pool[order[0]]
    sign_y = ctx.objective.sign * y
    rest = unseen(pool[order[1:ACQUISITION_POOL]], np.vstack([X, first]))
    rest = next_batch(np.vstack([X, first]), np.append(sign_y, sign_y.min()), rest, n_main - 1, ctx.seed + 50)
    return np.vstack([first, rest])


def _calibrated(predictor, rho: float, offset: float, gp):
    """The cheap predictor mapped to the search proxy's units, plus the residual GP:
    f(W, return_std=False) -> values, or (values, the GP's sd)."""

    def calibrated(W: np.ndarray, return_std: bool = False):
        mu, sd = gp.predict(W, return_std=True)
        value = rho * predictor.predict(W) + offset + mu
        return (value, sd) if return_std else value

    return calibrated


def _choose_calibrated(ctx: SearchContext, calibrated, rho: float, penalty: float, pool: np.ndarray, main,
                       measured: np.ndarray) -> tuple[np.ndarray, dict | None]:
    """The best feasible mixture of the pool and the main runs under the calibrated prediction (its
    KL penalty scaled by rho into the same units), checked never to be worse than the best main run."""

    def total(W):
        return ctx.objective.sign * calibrated(W) + rho * penalty * kl_to_prior(W, ctx.prior)

    ok, pins = within(ctx)
    w, candidate = choose(total, np.vstack([pool, main.weights]), ok, [ctx.seed, 6], None, 1, pins)
    feasible = ok(main.weights)  # the runs at the search's proxy: measured in the units of the calibrated prediction
    return never_worse(calibrated, ctx.objective.sign, w, candidate, main.weights[feasible], measured[feasible],
                       [r for r, f in zip(main.run_ids, feasible) if f])


def _calibrated_interval(calibrated, w: np.ndarray, report, rho: float) -> tuple[float, dict]:
    """The calibrated prediction at `w` and its interval: the cheap fit's half width scaled by rho,
    combined with the residual GP's 90% band."""
    predicted, sd = (float(v[0]) for v in calibrated(w[None, :], return_std=True))
    cheap_half = report.interval["half_width"] if report.interval else None
    half = None if cheap_half is None else float(np.hypot(rho * cheap_half, NORMAL_90 * sd))
    return predicted, interval_of(predicted, half)


def _fidelity_record(ctx: SearchContext, cheap_rows: list[dict], main_rows: list[dict], rho: float, offset: float,
                     measured: np.ndarray, cheap_at_main: np.ndarray) -> dict:
    """The proposal's `fidelity` section: where the compute went and the calibration between fidelities."""
    return {"cheap_proxy": ctx.cheap_proxy, "cheap_cost": ctx.cheap_cost, "cheap_share": ctx.settings.cheap_share,
            "cheap_runs": len(cheap_rows), "main_runs": len(main_rows), "main_run_ids": [r["run_id"] for r in main_rows],
            "cost_in_runs": round(len(main_rows) + len(cheap_rows) * ctx.cheap_cost, 3),
            "calibration": {"rho": rho, "offset": offset, "main_measured": measured.tolist(),
                            "cheap_predicted": cheap_at_main.tolist(),
                            "spearman": agreement(cheap_at_main, measured)["spearman"] if len(measured) > 2 else None}}
