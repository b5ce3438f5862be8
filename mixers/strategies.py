"""Search strategies: each trains proxies through `ctx.train` (the caller decides how: one
process, a worker pool, Prefect tasks), fits a predictor on what they measured and proposes a
mixture. Finished runs are never retrained: mixtures and seeds are deterministic, so a rerun asks
for the same run ids and the runs table answers.

- regmix: n random mixtures, fit, score >= 100,000 simulated candidates, average the top k.
- climb: iterative bootstrapping: a random first batch, then each iteration fits on every run so
  far, scores a large candidate pool and trains the next batch drawn from the top of the pool
  (batches split 4:2:1 as CLIMB); the proposal is the best predicted mixture.
- influence: train a proxy with checkpoints, measure each component's group influence on the
  target at each checkpoint, and move the mixture towards the components that help:
  w = normalise(previous * exp(z / temperature)), z the influence standardised across components,
  one proxy per round; with phases > 1 the
  checkpoints give one mixture per training phase (a multi-phase schedule).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
import polars as pl

from mixforge.config import SearchConfig
from mixforge.errors import ConfigError, MixforgeError
from mixforge.mixers.objective import Objective, kl_to_prior
from mixforge.mixers.model_choice import fit_predictor, interval_around
from mixforge.mixers.runs_data import RunsData, load_runs
from mixforge.mixers.sampling import dirichlet_pool, feasible, random_mixtures, tempered_prior

TrainFn = Callable[..., list[dict]]  # (mixtures, seeds, label, checkpoints=0) -> run rows, in order


@dataclass
class SearchContext:
    components: list[str]
    token_counts: dict[str, int]  # training tokens per component: the natural mixture
    budget: int  # tokens per proxy run
    max_epochs: float
    settings: SearchConfig
    objective: Objective
    seed: int
    train: TrainFn
    influence_inputs: Callable | None = None  # (run_id) -> (checkpoint paths, component streams, target stream, seq_len)

    @property
    def natural(self) -> np.ndarray:
        counts = np.array([self.token_counts[c] for c in self.components], dtype=float)
        return counts / counts.sum()

    @property
    def prior(self) -> np.ndarray:
        p = tempered_prior(self.token_counts, self.settings.temperature)
        return np.array([p[c] for c in self.components])

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        s = self.settings
        unknown = sorted((set(s.min_share) | set(s.max_share)) - set(self.components))
        if unknown:
            raise ConfigError(f"search.min_share/max_share name unknown component(s) {', '.join(unknown)}; "
                              f"known: {', '.join(self.components)}")
        lo = np.array([s.min_share.get(c, 0.0) for c in self.components])
        hi = np.array([s.max_share.get(c, 1.0) for c in self.components])
        if lo.sum() > 1 or hi.sum() < 1 or np.any(lo > hi):
            raise ConfigError(f"search.min_share / max_share cannot be met: minimums sum to {lo.sum():.3g}, "
                              f"maximums to {hi.sum():.3g}")
        return lo, hi

    def feasible(self, w: np.ndarray) -> np.ndarray:
        lo, hi = self.bounds()
        return feasible(w, np.array([self.token_counts[c] for c in self.components], dtype=float), self.budget,
                        self.max_epochs, lo, hi)

    def as_dict(self, w: np.ndarray) -> dict[str, float]:
        return dict(zip(self.components, np.round(w, 6).tolist()))


@dataclass
class Proposal:
    strategy: str
    objective: str
    targets: dict[str, float]
    lower_is_better: bool
    weights: dict[str, float]
    predicted: float | None  # the target's predicted value (objective units for a combination)
    predicted_interval: dict | None  # {"level", "low", "high"} (conformal, see model_choice)
    natural: dict[str, float]
    prior: dict[str, float]
    fit: dict | None  # FitReport, without per-run predictions
    fit_points: dict | None  # {"actual": [...], "predicted": [...]} out-of-fold, for the plot
    runs_used: list[str]
    iterations: list[dict] = field(default_factory=list)
    schedule: list[dict] | None = None  # multi-phase: [{"start_fraction", "end_fraction", "weights"}]
    seed: int = 0
    settings: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def rows_data(rows: list[dict], ctx: SearchContext, min_runs: int = 2) -> RunsData:
    table = pl.DataFrame(rows).unique("run_id", maintain_order=True)
    return load_runs("this search's runs", list(ctx.objective.targets), table=table,
                     weight_columns=[f"w_{c}" for c in ctx.components], min_runs=min_runs)


def candidate_pool(ctx: SearchContext, n: int, rng: np.random.Generator) -> np.ndarray:
    s = ctx.settings
    pool = dirichlet_pool(ctx.prior, n, rng, s.min_strength, s.max_strength)
    pool = pool[ctx.feasible(pool)]
    if not len(pool):
        raise MixforgeError("no candidate mixture meets the repetition cap and share bounds: loosen search.min_share/"
                            "max_share or lower proxy.tokens")
    return pool


def scores(predictor, W: np.ndarray, ctx: SearchContext) -> np.ndarray:
    """Lower is better: the predicted objective plus the KL penalty towards the prior."""
    return ctx.objective.sign * predictor.predict(W) + ctx.settings.kl_weight * kl_to_prior(W, ctx.prior)


def fit(rows: list[dict], ctx: SearchContext):
    """Predictor fitted on the runs, and its cross-validated report."""
    data = rows_data(rows, ctx, min_runs=4)  # CLIMB fits on its first batch; the fit report says how little that is
    y = ctx.objective.column(data)
    predictor, report = fit_predictor(ctx.settings.predictor, data.weights, y, folds=ctx.settings.folds, seed=ctx.seed)
    return predictor, report, data, y


def _proposal(ctx: SearchContext, strategy: str, w: np.ndarray, predictor, report, y, rows, **extra) -> Proposal:
    predicted = float(predictor.predict(w[None, :])[0]) if predictor is not None else None
    return Proposal(
        strategy=strategy, objective=ctx.objective.label, targets=ctx.objective.targets,
        lower_is_better=ctx.objective.sign > 0, weights=ctx.as_dict(w), predicted=predicted,
        predicted_interval=interval_around(predicted, report) if predictor is not None else None,
        natural=ctx.as_dict(ctx.natural), prior=ctx.as_dict(ctx.prior),
        fit=report.to_dict() if report else None,
        fit_points={"actual": y.tolist(), "predicted": report.oof_predictions} if report else None,
        runs_used=sorted({r["run_id"] for r in rows}), seed=ctx.seed,
        settings=ctx.settings.model_dump(), **extra)


def regmix(ctx: SearchContext) -> Proposal:
    s = ctx.settings
    mixtures = random_mixtures(ctx.token_counts, s.runs, ctx.seed, ctx.budget, ctx.max_epochs, s.temperature,
                               min_strength=s.min_strength, max_strength=s.max_strength)
    rows = ctx.train(mixtures, [ctx.seed + i for i in range(len(mixtures))], "regmix runs")
    predictor, report, _, y = fit(rows, ctx)
    pool = candidate_pool(ctx, s.candidates, np.random.default_rng([ctx.seed, 1]))
    top = pool[np.argsort(scores(predictor, pool, ctx), kind="stable")[: s.top_k]]
    w = top.mean(axis=0)  # a convex combination of feasible mixtures stays feasible
    return _proposal(ctx, "regmix", w, predictor, report, y, rows, iterations=[_iteration(1, rows, y, report, ctx)])


def climb_batches(runs: int, split: list[float]) -> list[int]:
    shares = np.array(split, dtype=float) / sum(split)
    sizes = np.maximum(np.floor(shares * runs).astype(int), 1)
    sizes[0] += runs - sizes.sum()
    return sizes.tolist()


def climb(ctx: SearchContext) -> Proposal:
    s = ctx.settings
    sizes = climb_batches(s.runs, s.climb_split)
    rng = np.random.default_rng([ctx.seed, 2])
    first = random_mixtures(ctx.token_counts, sizes[0], ctx.seed, ctx.budget, ctx.max_epochs, s.temperature,
                            min_strength=s.min_strength, max_strength=s.max_strength)
    rows = ctx.train(first, [ctx.seed + i for i in range(len(first))], "climb iteration 1")
    iterations = []
    for it, size in enumerate(sizes[1:], start=2):
        predictor, report, data, y = fit(rows, ctx)
        iterations.append(_iteration(it - 1, rows, y, report, ctx))
        pool = candidate_pool(ctx, s.candidates, rng)
        seen = {tuple(np.round(r, 3)) for r in data.weights}
        pool = pool[[tuple(np.round(r, 3)) not in seen for r in pool]]
        top = pool[np.argsort(scores(predictor, pool, ctx), kind="stable")[: 4 * size]]
        picked = top[np.sort(rng.choice(len(top), size=min(size, len(top)), replace=False))]
        mixtures = [ctx.as_dict(w) for w in picked]
        start = ctx.seed + len(rows)
        rows = rows + ctx.train(mixtures, list(range(start, start + len(mixtures))), f"climb iteration {it}")
    predictor, report, data, y = fit(rows, ctx)
    iterations.append(_iteration(len(sizes), rows, y, report, ctx))
    pool = np.vstack([candidate_pool(ctx, s.candidates, rng), data.weights])
    w = pool[int(np.argmin(scores(predictor, pool, ctx)))]  # CLIMB: the best predicted mixture
    return _proposal(ctx, "climb", w, predictor, report, y, rows, iterations=iterations)


def _iteration(n: int, rows: list[dict], y: np.ndarray, report, ctx: SearchContext) -> dict:
    best = int(np.argmin(ctx.objective.sign * y))
    return {"iteration": n, "runs": len(rows), "best_observed": float(y[best]), "cv_spearman": report.spearman}


def influence(ctx: SearchContext) -> Proposal:
    """Rounds of: train one proxy (with `phases` checkpoints) on the current mixture, measure group
    influence at each checkpoint, update the mixture. One proxy per round, `influence_rounds` rounds."""
    s = ctx.settings
    if ctx.influence_inputs is None:
        raise MixforgeError("the influence strategy needs proxy checkpoints: run it through `mixforge search`")
    lo, hi = ctx.bounds()
    w = _clip(ctx.prior, lo, hi, ctx)
    rows, iterations, schedule = [], [], None
    for r in range(s.influence_rounds):
        row = ctx.train([ctx.as_dict(w)], [ctx.seed + r], f"influence round {r + 1}", checkpoints=s.phases)[0]
        rows.append(row)
        ckpts, streams, target, seq_len = ctx.influence_inputs(row["run_id"])
        per_phase = []
        for p, ckpt in enumerate(ckpts):
            infl = group_influence_at(ckpt, streams, target, seq_len, seed=ctx.seed + p)
            scores_ = np.array([infl.get(c, 0.0) for c in ctx.components])
            per_phase.append(_clip(w * np.exp(standardised(scores_) / s.influence_temperature), lo, hi, ctx))
            if p == len(ckpts) - 1:
                last_influence = dict(zip(ctx.components, scores_.round(4).tolist()))
        schedule = [{"start_fraction": p / len(per_phase), "end_fraction": (p + 1) / len(per_phase),
                     "weights": ctx.as_dict(pw)} for p, pw in enumerate(per_phase)] if len(per_phase) > 1 else None
        w = np.mean(per_phase, axis=0)  # equal phases: the schedule's overall token shares
        target_value = sum(row[t] * wt for t, wt in ctx.objective.targets.items()) if ctx.objective.single else None
        iterations.append({"iteration": r + 1, "runs": len(rows), "best_observed": target_value,
                           "influence": last_influence})
    return _proposal(ctx, "influence", w, None, None, None, rows, iterations=iterations, schedule=schedule)


def standardised(scores_: np.ndarray) -> np.ndarray:
    """Influence as z-scores across components: gradient cosines at a small checkpoint sit close
    together (0.35-0.85 on the demo), so only their spread says which component helps more; a
    temperature in standard deviations means the same on any corpus."""
    spread = scores_.std()
    return (scores_ - scores_.mean()) / spread if spread > 0 else np.zeros_like(scores_)


def group_influence_at(checkpoint, streams: dict, target: np.ndarray, seq_len: int, seed: int) -> dict[str, float]:
    from mixforge.proxy_training.influence import group_influence
    from mixforge.proxy_training.train import load_checkpoint

    model, _ = load_checkpoint(checkpoint)
    return group_influence(model, streams, target, seq_len, seed=seed)


def _clip(w: np.ndarray, lo: np.ndarray, hi: np.ndarray, ctx: SearchContext) -> np.ndarray:
    """Nearest mixture (by repeated clip and renormalise) within the share bounds and the repetition cap."""
    cap = np.minimum(hi, ctx.max_epochs * np.array([ctx.token_counts[c] for c in ctx.components]) / ctx.budget)
    w = np.asarray(w, dtype=float) / np.sum(w)
    for _ in range(100):
        clipped = np.clip(w, lo, cap)
        free = (clipped > lo) & (clipped < cap)
        gap = 1 - clipped.sum()
        if abs(gap) < 1e-9 or not free.any():
            return clipped / clipped.sum()
        w = clipped.copy()
        w[free] += gap * clipped[free] / clipped[free].sum()
    return w / w.sum()


STRATEGIES = {"regmix": regmix, "climb": climb, "influence": influence}
