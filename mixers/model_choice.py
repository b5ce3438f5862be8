"""Which predictor, chosen by cross-validation, and how far to trust what it predicts.

`fit_predictor(name, X, y)` returns the fitted model and its `FitReport`. Every base model
(lightgbm, mixing_law, linear, law_boost) is fitted on the same K folds; `ensemble` (equal
weights) and `stacked` (non-negative weights summing to 1, fitted on out-of-fold predictions)
are weighted sums of the bases' predictions, so they cost no fits of their own.

`auto` takes the candidate with the best out-of-fold Spearman (ties: the smaller mean absolute
error, then the simpler, earlier in CANDIDATES). Its own figure is nested, so the choice is never
scored on the runs that made it: for each outer fold the choice is made on inner out-of-fold
predictions from models that never saw that fold, then scored on it. The inner models are fitted
once per pair of folds left out (K(K-1)/2 fits per base, each serving two outer folds); the
stacked weights of an outer fold come from the same inner predictions.

Intervals are split-conformal over the report's out-of-fold residuals: the half width is the
ceil((n+1)(1-alpha))-th smallest absolute residual, so a new run's value falls inside with
probability about 1-alpha when runs are exchangeable (`interval_coverage` checks it on held-out runs).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from itertools import combinations

import numpy as np

from mixforge.budget import search_runs
from mixforge.mixers.predictors import ENSEMBLE, Columns, LawBoostPredictor, WeightedPredictor, make_predictor

BASES = ("linear", "mixing_law", "lightgbm", "law_boost")
CANDIDATES = BASES + ("ensemble", "stacked")  # auto's choices, simplest first
ORDER = BASES + ("content",)  # with content features (a workspace search), auto also weighs the content model
INTERVAL_LEVEL = 0.9
REGRET_K = (1, 3, 10)
LOW_CV = 0.5  # below this cross-validated Spearman a proposal is close to a guess


@dataclass
class FitReport:
    """Cross-validated (and, with evaluation runs, held-out) agreement of predictions with truth.
    For `auto`: `chosen`, every candidate's CV figures, and the nested figures as the headline."""

    predictor: str
    runs: int
    folds: int
    spearman: float
    pearson: float
    kendall: float
    mae: float
    oof_predictions: list[float] = field(default_factory=list)  # out-of-fold, in run order
    chosen: str | None = None  # what `auto` chose (the predictor itself otherwise)
    candidates: dict[str, dict] = field(default_factory=dict)  # {name: {"spearman", "mae"}} out-of-fold
    stacked_weights: dict[str, float] | None = None
    interval: dict | None = None  # {"level", "half_width"}: prediction +- half_width
    eval: dict | None = None  # {"runs", "spearman", ..., "coverage", "regret"} on held-out runs
    evidence: dict | None = None  # fresh and carried runs used, CV with and without the carried (mixers/evidence.py)

    def to_dict(self, with_predictions: bool = False) -> dict:
        d = asdict(self)
        if not with_predictions:
            d.pop("oof_predictions")
            if d["eval"]:
                d["eval"] = {k: v for k, v in d["eval"].items() if k not in ("predictions", "actual")}
        return d


def agreement(pred: np.ndarray, actual: np.ndarray) -> dict:
    from scipy.stats import kendalltau, pearsonr, spearmanr

    if np.ptp(pred) == 0 or np.ptp(actual) == 0:  # correlation undefined: no ranking at all
        return {"spearman": 0.0, "pearson": 0.0, "kendall": 0.0, "mae": float(np.mean(np.abs(pred - actual)))}
    return {"spearman": float(spearmanr(pred, actual).statistic), "pearson": float(pearsonr(pred, actual).statistic),
            "kendall": float(kendalltau(pred, actual).statistic), "mae": float(np.mean(np.abs(pred - actual)))}


def _spearman(pred: np.ndarray, actual: np.ndarray) -> float:
    return agreement(pred, actual)["spearman"]


def bases_for(name: str, content: bool = False) -> tuple[str, ...]:
    if name in ("auto", "stacked"):
        return ORDER if content else BASES
    if name == "ensemble":
        return ENSEMBLE
    if name == "law_boost":
        return ("mixing_law", "law_boost")  # the law is fitted once and shared
    return (name,)


def fit_bases(X: np.ndarray, y: np.ndarray, names: tuple[str, ...], seed: int,
              sample_weight: np.ndarray | None = None, n_content: int = 0) -> dict[str, object]:
    """The named models fitted on (X, y); with `n_content`, X's last n_content columns are content
    features, which the content model reads alone and the others skip."""
    models: dict[str, object] = {}
    for name in names:
        if name == "law_boost" and "mixing_law" in models:
            model = LawBoostPredictor(seed=seed, law=_inner(models["mixing_law"]))
        else:
            model = make_predictor(name, seed)
        if n_content:
            model = Columns(model, slice(X.shape[1] - n_content, None) if name == "content" else slice(0, X.shape[1] - n_content))
        models[name] = model.fit(X, y, sample_weight)
    return models


def _inner(model):
    return model.model if isinstance(model, Columns) else model


def stack_weights(P: dict[str, np.ndarray], y: np.ndarray) -> dict[str, float]:
    """Non-negative weights summing to 1 that best combine the bases' predictions P (least
    squares; the sum is held by a heavily weighted extra row)."""
    from scipy.optimize import nnls

    names = [m for m in ORDER if m in P]
    scale = 1e3 * max(float(np.abs(y).max()), 1.0)
    A = np.vstack([np.column_stack([P[m] for m in names]), np.full(len(names), scale)])
    w, _ = nnls(A, np.append(y, scale))
    w = w / w.sum() if w.sum() > 0 else np.full(len(names), 1 / len(names))
    return dict(zip(names, w.tolist()))


def combine(name: str, P: dict[str, np.ndarray], weights: dict[str, float] | None = None) -> np.ndarray:
    """A candidate's predictions from the bases' predictions."""
    if name == "ensemble":
        return np.mean([P[m] for m in ENSEMBLE], axis=0)
    if name == "stacked":
        return sum(w * P[m] for m, w in weights.items())
    return P[name]


def _fold_ids(n: int, folds: int, seed: int, train_only: np.ndarray | None = None) -> np.ndarray:
    """Fold of each run; -1 for `train_only` runs (in every training split, never scored)."""
    from sklearn.model_selection import KFold

    ids = np.full(n, -1, dtype=int)
    scored = np.flatnonzero(~train_only) if train_only is not None else np.arange(n)
    for f, (_, test) in enumerate(KFold(folds, shuffle=True, random_state=seed).split(scored)):
        ids[scored[test]] = f
    return ids


def _split_predictions(X, y, fold_id, left_out: tuple[int, ...], names, seed,
                       sample_weight=None, n_content: int = 0) -> tuple[tuple[int, ...], dict[str, np.ndarray]]:
    """Bases fitted without the folds `left_out`, predicting the left-out runs (NaN elsewhere: unused)."""
    rows = np.isin(fold_id, left_out)
    models = fit_bases(X[~rows], y[~rows], names, seed, None if sample_weight is None else sample_weight[~rows], n_content)
    out = {m: np.full(len(X), np.nan) for m in models}
    for m, model in models.items():  # only these rows are read: predicting all would cost 2.5-5x (1000 trees per row)
        out[m][rows] = model.predict(X[rows])
    return left_out, out


def _parallel(jobs: list, workers: int, on_done=None) -> list:
    """Split fits in threads: LightGBM, BLAS and the least-squares solver release the GIL.
    `on_done(k)` after the k-th job to finish."""
    import threading

    finished, lock = [0], threading.Lock()

    def run(job):
        out = job()
        if on_done:
            with lock:
                finished[0] += 1
                on_done(finished[0])
        return out

    if workers <= 1 or len(jobs) <= 1:
        return [run(job) for job in jobs]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(run, jobs))


def cross_validate(name: str, X: np.ndarray, y: np.ndarray, folds: int = 5, seed: int = 42,
                   workers: int | None = None, on_fit=None, train_only: np.ndarray | None = None,
                   sample_weight: np.ndarray | None = None, n_content: int = 0) -> tuple[FitReport, dict]:
    """The report, and what the final fit needs: {"chosen", "stacked_weights"}. `on_fit(done, total)`
    after each split's fits (from the worker threads). `train_only` runs (carried evidence) are in
    every training split and never scored: folds, figures and stacked weights cover the other runs."""
    n = len(X)
    scored = np.ones(n, dtype=bool) if train_only is None else ~train_only
    folds = max(2, min(folds, int(scored.sum())))
    fold_all = _fold_ids(n, folds, seed, train_only)
    names = bases_for(name, n_content > 0)
    choices = tuple(m for m in names if m in ORDER) + ("ensemble", "stacked")  # simplest first
    nested = name in ("auto", "stacked")  # the stacked weights need inner predictions too
    splits = [(f,) for f in range(folds)] + (list(combinations(range(folds), 2)) if nested else [])
    workers = workers or min(4, os.cpu_count() or 1)
    done = dict(_parallel([lambda s=s: _split_predictions(X, y, fold_all, s, names, seed, sample_weight, n_content) for s in splits], workers,
                          on_fit and (lambda k: on_fit(k, len(splits)))))
    outer = _outer_predictions(done, fold_all, folds, names, scored)
    fold_id, ys = fold_all[scored], y[scored]
    if not nested:
        return _report(name, len(ys), folds, combine(name, outer), ys), {"chosen": name}

    inner_preds = {f: _inner_predictions(done, fold_all, f, folds, names, scored) for f in range(folds)}
    oof = _candidate_oof(choices, outer, inner_preds, fold_id, ys, folds)
    candidates = {c: {"spearman": round(_spearman(oof[c], ys), 4), "mae": float(np.mean(np.abs(oof[c] - ys)))} for c in choices}
    if name == "stacked":
        report = _report(name, len(ys), folds, oof["stacked"], ys)
        report.candidates = candidates
        return report, {"chosen": "stacked", "stacked_weights": stack_weights(outer, ys)}

    nested_pred = _nested_choice(choices, oof, inner_preds, fold_id, ys, folds)
    # ties in rank (few scored runs: a Spearman over 2 or 3 takes a handful of values) go to the
    # smaller error, then to the simplest
    chosen = max(choices, key=lambda c: (candidates[c]["spearman"], -candidates[c]["mae"], -choices.index(c)))
    report = _report("auto", len(ys), folds, nested_pred, ys)
    report.chosen, report.candidates = chosen, candidates
    return report, {"chosen": chosen, "stacked_weights": stack_weights(outer, ys)}


def _outer_predictions(done: dict, fold_all: np.ndarray, folds: int, names: tuple, scored: np.ndarray) -> dict[str, np.ndarray]:
    """Each base's out-of-fold predictions of the scored runs: fold f predicted by the bases fitted without f."""
    outer = {m: np.zeros(len(fold_all)) for m in names}
    for f in range(folds):
        rows = fold_all == f
        for m in names:
            outer[m][rows] = done[(f,)][m][rows]
    return {m: p[scored] for m, p in outer.items()}  # from here on: the scored runs only


def _inner_predictions(done: dict, fold_all: np.ndarray, f: int, folds: int, names: tuple,
                       scored: np.ndarray) -> dict[str, np.ndarray]:
    """Predictions of every run outside fold f by bases that never saw fold f or the run's own fold."""
    out = {m: np.full(len(fold_all), np.nan) for m in names}
    for g in range(folds):
        if g != f:
            rows = fold_all == g
            for m in names:
                out[m][rows] = done[tuple(sorted((f, g)))][m][rows]
    return {m: p[scored] for m, p in out.items()}


def _candidate_oof(choices: tuple, outer: dict[str, np.ndarray], inner_preds: dict[int, dict], fold_id: np.ndarray,
                   ys: np.ndarray, folds: int) -> dict[str, np.ndarray]:
    """Each candidate's out-of-fold predictions; fold f's stacked weights come from the inner
    predictions of the runs outside f, so no run is predicted by weights fitted on it."""
    outer_weights = {f: stack_weights({m: p[fold_id != f] for m, p in inner_preds[f].items()}, ys[fold_id != f])
                     for f in range(folds)}
    oof = {c: np.zeros(len(ys)) for c in choices}
    for f in range(folds):
        rows = fold_id == f
        for c in choices:
            oof[c][rows] = combine(c, {m: p[rows] for m, p in outer.items()}, outer_weights[f])
    return oof


def _nested_choice(choices: tuple, oof: dict[str, np.ndarray], inner_preds: dict[int, dict], fold_id: np.ndarray,
                   ys: np.ndarray, folds: int) -> np.ndarray:
    """auto's nested figure: for each outer fold, the candidate chosen on the inner predictions of
    the runs outside it predicts that fold (the choice is never scored on the runs that made it)."""
    nested_pred = np.zeros(len(ys))
    for f in range(folds):  # choose on the inner predictions of the runs outside f, score on f
        rows, others = fold_id == f, fold_id != f
        inner = {c: _inner_candidate(c, inner_preds[f], ys, fold_id, f, folds)[others] for c in choices}
        scores = {c: (_spearman(p, ys[others]), -float(np.mean(np.abs(p - ys[others])))) for c, p in inner.items()}
        pick = max(choices, key=lambda c: (*scores[c], -choices.index(c)))
        nested_pred[rows] = oof[pick][rows]
    return nested_pred


def _inner_candidate(c: str, P: dict[str, np.ndarray], y: np.ndarray, fold_id: np.ndarray, f: int, folds: int) -> np.ndarray:
    """Candidate c's inner predictions for outer fold f; stacked weights for inner fold g come from
    the inner predictions of the other inner folds (never from g itself)."""
    if c != "stacked":
        return combine(c, P)
    out = np.full(len(y), np.nan)
    for g in range(folds):
        if g == f:
            continue
        rows, fit_rows = fold_id == g, (fold_id != f) & (fold_id != g)
        w = stack_weights({m: p[fit_rows] for m, p in P.items()}, y[fit_rows])
        out[rows] = combine("stacked", {m: p[rows] for m, p in P.items()}, w)
    return out


def _report(name: str, n: int, folds: int, oof: np.ndarray, y: np.ndarray) -> FitReport:
    report = FitReport(name, n, folds, **agreement(oof, y), oof_predictions=oof.tolist(), chosen=name)
    report.interval = {"level": INTERVAL_LEVEL, "half_width": conformal_half_width(oof - y, INTERVAL_LEVEL)}
    return report


def conformal_half_width(residuals: np.ndarray, level: float) -> float | None:
    """The ceil((n+1) * level)-th smallest absolute residual (None when too few runs bound it:
    fewer than 9 for 90%)."""
    r = np.sort(np.abs(residuals))
    k = int(np.ceil((len(r) + 1) * level))
    return float(r[k - 1]) if k <= len(r) else None


def interval_around(predicted: float, report: FitReport) -> dict:
    """{"level", "low", "high"} around a prediction (low and high None when too few runs bound it)."""
    return interval_of(predicted, report.interval["half_width"] if report.interval else None)


def interval_of(predicted: float, half: float | None) -> dict:
    return {"level": INTERVAL_LEVEL, "low": None if half is None else predicted - half,
            "high": None if half is None else predicted + half}


def final_model(name: str, X: np.ndarray, y: np.ndarray, plan: dict, seed: int = 42, sample_weight: np.ndarray | None = None,
                n_content: int = 0):
    """The chosen predictor fitted on every run."""
    chosen = plan["chosen"]
    bases = tuple(m for m in ORDER if m in plan["stacked_weights"]) if chosen == "stacked" else bases_for(chosen)
    models = fit_bases(X, y, bases, seed, sample_weight, n_content)
    if chosen == "stacked":
        return WeightedPredictor(models, plan["stacked_weights"])
    if chosen == "ensemble":
        return WeightedPredictor(models, {m: 1 / len(ENSEMBLE) for m in ENSEMBLE})
    return models[chosen]


def held_out(report: FitReport, pred: np.ndarray, actual: np.ndarray, sign: int = 1) -> dict:
    """Agreement on evaluation runs, interval coverage, and top-k regret: how much worse the
    truly best of the predicted top k is than the true best (objective units, >= 0)."""
    out = {"runs": len(actual), **agreement(pred, actual), "predictions": pred.tolist(), "actual": actual.tolist()}
    if report.interval and report.interval["half_width"] is not None:
        out["coverage"] = float(np.mean(np.abs(pred - actual) <= report.interval["half_width"]))
    order, best = np.argsort(sign * pred, kind="stable"), float(np.min(sign * actual))
    out["regret"] = {f"top{k}": float(np.min(sign * actual[order[:k]]) - best) for k in REGRET_K if k <= len(actual)}
    out["top1_is_best"] = bool(out["regret"]["top1"] == 0)
    return out


def fit_predictor(name: str, X: np.ndarray, y: np.ndarray, folds: int = 5, seed: int = 42,
                  X_eval: np.ndarray | None = None, y_eval: np.ndarray | None = None, sign: int = 1,
                  workers: int | None = None, on_fit=None, train_only: np.ndarray | None = None,
                  sample_weight: np.ndarray | None = None, n_content: int = 0):
    """(model fitted on all runs, FitReport). `sign`: +1 when lower y is better (for regret);
    `on_fit(done, total)` as cross-validation's fits finish. `train_only`: runs fitted on but never
    scored (carried evidence), each counting `sample_weight` (see mixers/evidence.py). `n_content`:
    X's last columns are content features (mixers/content_space.py), read by the content model alone."""
    if name == "content" and not n_content:
        from mixforge.errors import ConfigError

        raise ConfigError("the content predictor reads what each run trained on: it serves searches on a workspace, "
                          "not runs tables (choose another predictor)")
    from threadpoolctl import threadpool_limits

    # one BLAS thread per fit: the fits already run in parallel, and OpenBLAS's threads on the law's
    # tall, thin Jacobians cost 5x the CPU for a slower fit (160,000 runs: 33 s -> 7 s)
    with threadpool_limits(1, user_api="blas"):
        report, plan = cross_validate(name, X, y, folds, seed, workers, on_fit, train_only, sample_weight, n_content)
        report.stacked_weights = plan.get("stacked_weights") if plan["chosen"] == "stacked" else None
        model = final_model(name, X, y, plan, seed, sample_weight, n_content)
    if X_eval is not None and y_eval is not None:
        report.eval = held_out(report, model.predict(X_eval), np.asarray(y_eval, dtype=float), sign)
    return model, report


def fit_report(name: str, X: np.ndarray, y: np.ndarray, folds: int = 5, seed: int = 42,
               X_eval: np.ndarray | None = None, y_eval: np.ndarray | None = None) -> FitReport:
    return fit_predictor(name, X, y, folds, seed, X_eval, y_eval)[1]


def trust_warning(report: FitReport | dict, components: int) -> str | None:
    """A plain warning when the cross-validated ranking is too weak to trust the proposal."""
    fit = report if isinstance(report, dict) else report.to_dict()
    if fit["spearman"] >= LOW_CV:
        return None
    return (f"the predictor ranks held-out runs poorly (cross-validated Spearman {fit['spearman']:.2f} over {fit['runs']} runs): "
            f"the proposal is close to a guess. Train more runs (search.runs; RegMix used 512 for 17 components, aim for at least "
            f"{search_runs('auto', components)}) or use fewer components (cluster.n_components).")
