"""The predictor's evidence after a data change: today's runs (fresh) and earlier runs carried
over today's components (mixers/carry.py).

A carried run measured an older corpus, so how much it counts is chosen, not assumed: each
treatment (carried runs left out, or in with weight `lam` x the share of their data still kept
unchanged, plus a 0/1 `carried` feature the models can use for an offset between builds) is
cross-validated on the fresh runs only (carried runs are in every training split and never
scored), and the best out-of-fold Spearman wins (ties: fewer carried). Below RANKED_FROM fresh runs
the mean absolute error decides instead: a refresh budget is small, and a Spearman over 4 runs
takes 5 values, two swapped runs apart, where the error of every prediction still counts.

With no more fresh runs than components, a fit on the fresh runs alone is underdetermined and its
cross-validated error is luck (on the demo's append benchmark, a line through 3 of 4 refresh runs
scored 0.015 while the 48 carried runs predicted today's retraining of their own mixtures within
0.000-0.022). There the question asked of the fresh runs is the one they can answer: do the
carried runs describe today's data? A model fitted on the carried runs alone predicts the fresh
ones; they are used when that model ranks the carried runs (cross-validated Spearman at least
LOW_CV), its error on today's runs is at most CONSISTENT times its own cross-validated error, and
it beats the mean of the other fresh runs. When carried runs do not help, they are dropped and the
report says so. Refresh runs go where the models fitted on the carried runs disagree most, spread
apart (`least_sure`).
"""

from __future__ import annotations

import numpy as np

from mixforge.mixers.model_choice import LOW_CV, fit_bases, fit_predictor

RANKED_FROM = 8  # fresh runs from which the choice is by out-of-fold Spearman (below: by mean absolute error)
CARRIED_WEIGHTS = (0.25, 1.0)  # lam: a carried run counts lam x its kept share; 0 (left out) is always tried too
# the mean absolute error of n runs drawn like the carried runs' own errors varies by about
# 0.75/sqrt(n) of itself (half-normal errors): at 4 fresh runs, twice the error is 2.6 sd out
CONSISTENT = 2.0


class WithoutCarriedFlag:
    """A model fitted with the `carried` feature (column `at`), predicting today's runs (flag 0)."""

    def __init__(self, model, at: int):
        self.model, self.at = model, at

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.model.predict(np.insert(X, self.at, 0.0, axis=1))


def fit_with_carried(name: str, X: np.ndarray, y: np.ndarray, carried: np.ndarray, kept: np.ndarray, folds: int, seed: int,
                     n_content: int = 0):
    """(model, report) for runs X, y of which `carried` are carried runs (kept: their unchanged
    share); X's last `n_content` columns are content features. The report covers the fresh runs;
    report.evidence says what was used and why."""
    fresh = ~carried
    trials: dict[float, tuple] = {}
    if fresh.sum() >= 4:
        trials[0.0] = fit_predictor(name, X[fresh], y[fresh], folds=folds, seed=seed, n_content=n_content)
    at = X.shape[1] - n_content  # the flag goes with the weights: the content model reads content alone
    flagged = np.insert(X, at, carried.astype(float), axis=1)
    for lam in CARRIED_WEIGHTS:
        weight = np.where(carried, lam * kept, 1.0)
        trials[lam] = fit_predictor(name, flagged, y, folds=folds, seed=seed, train_only=carried, sample_weight=weight,
                                    n_content=n_content)
    ranked = fresh.sum() >= RANKED_FROM
    figures = {lam: (r.spearman, -r.mae) if ranked else (-r.mae, r.spearman) for lam, (_, r) in trials.items()}
    with_carried = max(CARRIED_WEIGHTS, key=lambda lam: (figures[lam], -lam))  # the best treatment that uses them
    consistency = None
    if fresh.sum() > X.shape[1] - n_content:
        best = max(figures, key=lambda lam: (figures[lam], -lam))
    else:  # too few fresh runs to fit alone: keep the carried runs unless today's runs contradict them
        consistency = _consistency(name, X, y, carried, folds, seed, n_content)
        best = with_carried if consistency["consistent"] else (0.0 if 0.0 in trials else with_carried)
    model, report = trials[best]
    if best:
        model = WithoutCarriedFlag(model, at)
    report.evidence = {
        "fresh_runs": int(fresh.sum()), "carried_runs": int(carried.sum()), "carried_used": int(carried.sum()) if best else 0,
        "carried_weight": best, "chosen_by": "consistency" if consistency else "spearman" if ranked else "mae",
        "cv_spearman": {f"{lam:g}": round(r.spearman, 4) for lam, (_, r) in trials.items()},
        "cv_mae": {f"{lam:g}": r.mae for lam, (_, r) in trials.items()},
        "cv_spearman_without_carried": round(trials[0.0][1].spearman, 4) if 0.0 in trials else None,
        "cv_spearman_with_carried": round(trials[with_carried][1].spearman, 4),
        "dropped": best == 0.0, "consistency": consistency,
        "why": _why(best, ranked, consistency),
    }
    return model, report


def _consistency(name: str, X: np.ndarray, y: np.ndarray, carried: np.ndarray, folds: int, seed: int, n_content: int) -> dict:
    """How well a model of the carried runs alone predicts today's runs, against its own
    cross-validated error on the carried runs (ratio near 1: they describe the same data) and
    against the mean of the other fresh runs (which knows nothing of mixtures)."""
    model, report = fit_predictor(name, X[carried], y[carried], folds=folds, seed=seed, n_content=n_content)
    fresh = y[~carried]
    fresh_mae = float(np.mean(np.abs(model.predict(X[~carried]) - fresh)))
    others_mean = (fresh.sum() - fresh) / (len(fresh) - 1)
    mean_mae = float(np.mean(np.abs(others_mean - fresh)))
    ratio = fresh_mae / max(report.mae, 1e-12)
    consistent = report.spearman >= LOW_CV and ratio <= CONSISTENT and fresh_mae < mean_mae
    return {"fresh_mae": fresh_mae, "carried_cv_mae": report.mae, "carried_cv_spearman": round(report.spearman, 4),
            "ratio": round(ratio, 4), "limit": CONSISTENT, "fresh_mean_mae": mean_mae, "consistent": bool(consistent)}


def _why(best: float, ranked: bool, consistency: dict | None) -> str:
    used = f"each counts {best:g} x its kept share"
    if consistency is not None:
        figures = (f"a model of the carried runs alone predicts today's runs with error {consistency['fresh_mae']:.4g}, "
                   f"{consistency['ratio']:.2g} x its cross-validated error on them ({consistency['carried_cv_mae']:.4g})")
        if best and consistency["consistent"]:
            return f"too few runs of today to fit alone, and {figures}: the carried runs describe today's data, {used}"
        if best:  # below 4 fresh runs there is no fit without them to fall back on
            return f"{figures}, yet fewer than 4 runs of today cannot be fitted alone: the carried runs stay in, {used}"
        if consistency["carried_cv_spearman"] < LOW_CV:
            return (f"a model of the carried runs alone ranks them poorly (cross-validated Spearman "
                    f"{consistency['carried_cv_spearman']:.2f}): the carried runs describe no law of their data, left out")
        worse = (f"more than {CONSISTENT:g} x" if consistency["ratio"] > CONSISTENT else
                 f"no better than the mean of the other fresh runs ({consistency['fresh_mean_mae']:.4g})")
        return f"{figures}, {worse}: the carried runs describe other data, left out"
    kind = "ranking" if ranked else "error"
    if best == 0.0:
        return f"carried runs did not improve the cross-validated {kind} on today's runs: left out"
    return f"carried runs improve the cross-validated {kind} on today's runs: {used}"


def least_sure(pool: np.ndarray, X: np.ndarray, y: np.ndarray, weight: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Indices of n rows of `pool` where models fitted on (X, y) disagree most, each discounted
    by its closeness to the runs already there and to those picked before it (so the picks spread
    out rather than crowd one corner)."""
    models = fit_bases(X, y, ("linear", "mixing_law", "lightgbm"), seed, weight)
    spread = np.std([m.predict(pool) for m in models.values()], axis=0)
    spread = spread / (spread.max() or 1.0)
    near = np.min(np.abs(pool[:, None, :] - X[None, :, :]).sum(axis=2), axis=1) if len(X) else np.full(len(pool), 2.0)
    picked: list[int] = []
    for _ in range(min(n, len(pool))):
        score = (spread + 1e-6) * near
        score[picked] = -1
        i = int(np.argmax(score))
        picked.append(i)
        near = np.minimum(near, np.abs(pool - pool[i]).sum(axis=1))
    return np.array(picked, dtype=int)
