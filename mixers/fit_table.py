"""`mixforge search fit`: a predictor fitted on any runs table (CSV or Parquet, ours or someone else's),
with its cross-validated figures and the mixture it proposes, without training a proxy."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from mixforge.errors import MixforgeError
from mixforge.mixers.model_choice import fit_predictor, interval_around, trust_warning
from mixforge.mixers.objective import Objective
from mixforge.mixture import phase_ends as phase_ends_of, phase_ends_problem, phase_lengths
from mixforge.mixers.runs_file import RunsData


def fit_table(runs: str | Path, target: str, *, eval_runs: str | Path | None = None, metrics: str | Path | None = None,
              eval_metrics: str | Path | None = None,
              id_column: str = "run_id", weight_prefix: str = "w_", weight_columns: list[str] | None = None,
              predictor: str = "auto", maximize: bool | None = None, folds: int = 5, candidates: int = 100_000,
              top_k: int = 128, kl_weight: float | str = "auto", seed: int = 0, progress=None,
              phase_ends: list[float] | None = None) -> dict:
    """Fit a predictor on a runs table from anywhere, report cross-validated (and, with `eval_runs`,
    held-out) rank correlation, and propose a mixture: the mean of the top-k of `candidates`
    Dirichlet draws around the prior, which is the runs' mean mixture (their sampling centre).
    `phase_ends`: where a schedule's phases end (e.g. [0.8, 1.0]; default equal phases): the
    proposed schedule records them and its overall mixture is the phases' length-weighted mean.
    `progress(line)`: one line per phase, with its rate (a large table takes minutes)."""
    from mixforge.mixers.runs_file import load_runs

    objective = Objective.parse(target, maximize)
    kwargs = dict(metrics=metrics, id_column=id_column, weight_prefix=weight_prefix, weight_columns=weight_columns)
    say = progress or (lambda line: None)
    start = time.perf_counter()
    data = load_runs(runs, [target], **kwargs)  # here, not in a helper: load_runs' warnings point at this line
    took = time.perf_counter() - start
    say(f"read {data.source}: {len(data):,} runs, {len(data.components)} components in {took:.1f} s ({len(data) / max(took, 1e-9):,.0f} runs/s)")
    objective.sign  # noqa: B018 - an unknown direction fails before the fit (a missing column before that)
    X, y = data.weights, objective.column(data)
    ends = table_phase_ends(phase_ends, data.phases, data.source)  # before the fit, which can take minutes
    X_eval = y_eval = None
    if eval_runs is not None:
        other = load_runs(eval_runs, [target], min_runs=2, **{**kwargs, "metrics": eval_metrics})
        _check_eval_runs(other, data, eval_runs)
        X_eval, y_eval = other.weights, objective.column(other)
    model, report = _fit_with_progress(predictor, X, y, folds, seed, X_eval, y_eval, objective.sign, say)
    w, check, penalty, prior = _table_proposal(model, report, data, X, y, objective, candidates, top_k, kl_weight, seed, say)
    return _fit_table_result(data, target, objective, model, report, X, y, ends, w, check, penalty, prior)


def _check_eval_runs(other: RunsData, data: RunsData, eval_runs: str | Path) -> None:
    """Evaluation runs must mix the training runs' components over as many phases."""
    if other.components != data.components:
        raise MixforgeError(f"{eval_runs}: components {', '.join(other.components)} differ from the training "
                            f"runs' {', '.join(data.components)}")
    if other.phases != data.phases:
        raise MixforgeError(f"{eval_runs}: {other.phases} phase(s) per run; the training runs have {data.phases}")


def _fit_with_progress(predictor: str, X: np.ndarray, y: np.ndarray, folds: int, seed: int, X_eval, y_eval, sign: int,
                       say) -> tuple:
    """fit_predictor, saying how far cross-validation is after each fit and the total time at the end."""
    start = time.perf_counter()

    def fitted(done: int, total: int) -> None:
        took = time.perf_counter() - start
        say(f"cross-validation ({predictor}): {done}/{total} fits of {len(X):,} runs in {took:.0f} s "
            f"({done / took:.2f} fits/s, about {(total - done) * took / done:.0f} s left)")

    model, report = fit_predictor(predictor, X, y, folds=folds, seed=seed, X_eval=X_eval, y_eval=y_eval, sign=sign,
                                  on_fit=fitted)
    say(f"fitted {predictor}{f' (chose {report.chosen})' if predictor == 'auto' else ''} on all {len(X):,} runs: "
        f"{time.perf_counter() - start:.0f} s in all")
    return model, report


def _table_proposal(model, report, data: RunsData, X: np.ndarray, y: np.ndarray, objective: Objective, candidates: int,
                    top_k: int, kl_weight: float | str, seed: int, say) -> tuple[np.ndarray, dict, float, np.ndarray]:
    """(the proposed weights, never_worse's check, the KL weight, the prior): per phase, seeded
    Dirichlet draws around the runs' mean mixture plus the runs themselves, scored by the model and
    the KL penalty, the best refined, then checked against the best run."""
    from mixforge.mixers.objective import kl_by_phase, trust_region_weight
    from mixforge.mixers.refine import choose, never_worse
    from mixforge.mixers.sampling import dirichlet_pool

    start = time.perf_counter()
    P, k = data.phases, len(data.components)
    prior = X.mean(axis=0)  # per phase: the runs' mean mixture of that phase
    rng = np.random.default_rng(seed)
    blocks = [np.vstack([dirichlet_pool(prior[p * k:(p + 1) * k], candidates, rng), X[:, p * k:(p + 1) * k]]) for p in range(P)]
    size = min(len(b) for b in blocks)  # a draw of all-tiny weights is dropped: keep rows aligned across phases
    pool = np.hstack([b[-size:] for b in blocks])
    penalty = trust_region_weight(report.mae, X, prior, P) if kl_weight == "auto" else float(kl_weight)

    def score(W):
        return objective.sign * model.predict(W) + penalty * kl_by_phase(W, prior, P)

    w, candidate = choose(score, pool, lambda W: np.ones(len(W), dtype=bool), seed, top_k, P)  # the runs are in the pool
    w, check = never_worse(model.predict, objective.sign, w, candidate, X, y, data.run_ids)
    took = time.perf_counter() - start
    say(f"scored {len(pool):,} candidate mixtures in {took:.1f} s ({len(pool) / max(took, 1e-9):,.0f} mixtures/s), the best of them refined")
    return w, check, penalty, prior


def _fit_table_result(data: RunsData, target: str, objective: Objective, model, report, X: np.ndarray, y: np.ndarray,
                      ends: list[float], w: np.ndarray, check: dict, penalty: float, prior: np.ndarray) -> dict:
    """What `search fit` prints and writes: the fit, the proposal (a schedule's phases and its
    overall token shares), its predicted value and interval, and the best observed run."""
    P, k = data.phases, len(data.components)
    lengths = np.array(phase_lengths(ends))  # overall token shares of a schedule: lengths @ its phases
    predicted = float(model.predict(w[None, :])[0])
    mixture = lengths @ w.reshape(P, k)  # the schedule's overall token shares
    best = int(np.argmin(objective.sign * y))
    schedule = [{"start_fraction": ([0.0] + ends)[p], "end_fraction": ends[p], "weights": dict(zip(data.components, w[p * k:(p + 1) * k].round(6).tolist()))}
                for p in range(P)] if P > 1 else None
    return {"source": data.source, "target": target, "lower_is_better": objective.sign > 0, "runs": len(data),
            "notes": data.notes, "fit": report.to_dict(), "prior": dict(zip(data.components, (lengths @ prior.reshape(P, k)).round(6).tolist())),
            "proposal": dict(zip(data.components, mixture.round(6).tolist())), "schedule": schedule, "predicted": predicted,
            "predicted_interval": interval_around(predicted, report),
            "kl_weight": penalty, "warning": trust_warning(report, len(data.components)), "fallback": check["fallback"],
            "best_observed": {"run_id": data.run_ids[best], "value": float(y[best]), "predicted": check["predicted"], "chose": check["chose"],
                "weights": dict(zip(data.components, (lengths @ X[best].reshape(P, k)).round(6).tolist()))}}


def table_phase_ends(ends: list[float] | None, phases: int, source: str) -> list[float]:
    """`search fit --phase-ends` checked against the runs table's phases (default: equal phases)."""
    if ends is None:
        return phase_ends_of(None, phases)
    problem = phase_ends_problem(list(ends)) or (None if len(ends) == phases else
                                                 f"{len(ends)} end(s), but {source} has {phases} phase(s) per run; give one end per phase")
    if problem:
        raise MixforgeError(f"--phase-ends {','.join(map(str, ends))[:80]}: {problem}")
    return [float(e) for e in ends]
