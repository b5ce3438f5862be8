"""Search strategies: each trains proxies through `ctx.train` (the caller decides how: one
process, a worker pool, Prefect tasks), fits a predictor on what they measured and proposes a
mixture. Finished runs are never retrained: mixtures and seeds are deterministic, so a rerun asks
for the same run ids and the runs table answers.

- regmix: n random mixtures, fit, score >= 100,000 simulated candidates, average the top k
  (with search.phases > 1: random schedules, a fit over the schedule, a proposed schedule).
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

import json
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
import polars as pl

from mixforge.budget import search_runs
from mixforge.config import SearchConfig
from mixforge.errors import ConfigError, MixforgeError
from mixforge.mixers.objective import Objective, kl_by_phase, trust_region_weight
from mixforge.mixers.model_choice import fit_predictor, interval_around
from mixforge.mixers.refine import choose, never_worse
from mixforge.mixers.runs_data import RunsData, load_runs
from mixforge.mixers.sampling import dirichlet_pool, feasible, random_mixtures, tempered_prior
from mixforge.mixture import phase_ends as phase_ends_of, phase_lengths

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
    target_tokens: int | None = None  # the training run a proposal is for (None: no repetition cap on proposals)
    cheap: SearchContext | None = None  # bayesopt_mf: the same search at the cheap fidelity (its train, tokens, caps)
    cheap_cost: float | None = None  # FLOPs of a cheap run per run at this context's proxy settings
    cheap_proxy: dict | None = None  # the proxy settings the cheap fidelity changes
    carried: list = field(default_factory=list)  # earlier runs over today's components (mixers/carry.py Carried)
    changed: dict = field(default_factory=dict)  # per component, the share of its tokens new or gone since they ran
    content: object = None  # mixers/content_space.py ContentSpace of today's components (workspace searches)

    @property
    def natural(self) -> np.ndarray:
        counts = np.array([self.token_counts[c] for c in self.components], dtype=float)
        return counts / counts.sum()

    @property
    def prior(self) -> np.ndarray:
        p = tempered_prior(self.token_counts, self.settings.temperature)
        return np.array([p[c] for c in self.components])

    @property
    def runs(self) -> int:
        return search_runs(self.settings.runs, len(self.components))

    @property
    def refresh(self) -> int:
        """Runs a search with carried runs trains: search.refresh_runs, or for auto 2 per component
        changed past CHANGED_SHARE (at least 4), within the full budget."""
        from mixforge.mixers.carry import CHANGED_SHARE

        n = self.settings.refresh_runs
        if n == "auto":
            n = max(4, 2 * sum(share > CHANGED_SHARE for share in self.changed.values()))
        return min(int(n), self.runs)

    @property
    def available(self) -> np.ndarray:
        return np.array([self.token_counts[c] for c in self.components], dtype=float)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """(lowest, highest) share per component of a proposal: min_share, max_share, pins (both
        ends) and the target run's repetition cap (available x max_epochs / target_tokens)."""
        s = self.settings
        unknown = sorted((set(s.min_share) | set(s.max_share) | set(s.pin)) - set(self.components))
        if unknown:
            raise ConfigError(f"search.min_share/max_share/pin name unknown component(s) {', '.join(unknown)}; "
                              f"known: {', '.join(self.components)}")
        lo = np.array([s.pin.get(c, s.min_share.get(c, 0.0)) for c in self.components])
        hi = np.array([s.pin.get(c, s.max_share.get(c, 1.0)) for c in self.components])
        if self.target_tokens:
            hi = np.minimum(hi, self.available * s.max_epochs / self.target_tokens)
        if lo.sum() > 1 + 1e-9 or hi.sum() < 1 - 1e-9 or np.any(lo > hi + 1e-12):
            within = f" within {s.max_epochs:g} epochs of {self.target_tokens:,} target tokens" if self.target_tokens else ""
            over = [c for c, low, high in zip(self.components, lo, hi) if low > high + 1e-12]
            raise ConfigError(f"search.min_share / max_share / pin cannot be met{within}: minimums sum to {lo.sum():.3g}, "
                              f"maximums to {hi.sum():.3g}" + (f"; above their highest share: {', '.join(over)}" if over else "")
                              + ". Loosen them, raise search.max_epochs or lower search.target_tokens.")
        return lo, hi

    def trainable(self, w: np.ndarray) -> np.ndarray:
        """Rows of w a proxy run can train on (its own repetition cap, proxy.max_epochs)."""
        return feasible(w, self.available, self.budget, self.max_epochs)

    def feasible(self, w: np.ndarray) -> np.ndarray:
        """Rows of w a proposal may be: trainable, within the bounds (see `bounds`)."""
        lo, hi = self.bounds()
        return self.trainable(w) & feasible(w, None, None, 0, lo, hi)

    def pinned(self, w: np.ndarray) -> np.ndarray:
        """Rows of w with the pinned shares set and the others scaled to fill the rest."""
        pins = self.settings.pin
        if not pins:
            return w
        fixed = np.array([c in pins for c in self.components])
        w = np.array(w, dtype=float, copy=True)
        rest = w[:, ~fixed].sum(axis=1, keepdims=True)
        w[:, ~fixed] = np.where(rest > 0, w[:, ~fixed] / np.where(rest > 0, rest, 1), 1 / max((~fixed).sum(), 1)) * (1 - sum(pins.values()))
        w[:, fixed] = [pins[c] for c in np.array(self.components)[fixed]]
        return w

    def as_dict(self, w: np.ndarray) -> dict[str, float]:
        return dict(zip(self.components, np.round(w, 6).tolist()))

    def phase_ends(self, phases: int) -> list[float]:
        """Where each of `phases` phases ends, as a share of training (search.phase_ends, else equal)."""
        return phase_ends_of(self.settings.phase_ends if phases > 1 else None, phases)

    def shares(self, w: np.ndarray) -> np.ndarray:
        """Overall token shares of a mixture or a schedule [phases * k]: the phases' mean weighted by their lengths."""
        blocks = np.asarray(w, dtype=float).reshape(-1, len(self.components))
        return np.array(phase_lengths(self.phase_ends(len(blocks)))) @ blocks


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
    kl_weight: float | None = None  # the KL penalty the candidates were scored with
    unconstrained: dict | None = None  # {"weights", "predicted", "largest_share", "feasible"} without pins, bounds, caps
    constraints: dict | None = None  # {"target_tokens", "max_epochs", "pin", "lowest", "highest"}: the bounds per component
    seed: int = 0
    settings: dict = field(default_factory=dict)
    fidelity: dict | None = None  # bayesopt_mf: cheap runs, main runs, cost and the calibration between them
    best_observed: dict | None = None  # the best observed feasible run, predicted by the same model (mixers/refine.py never_worse)
    fallback: str | None = None  # why the proposal is that run's mixture, when it is
    evidence: dict | None = None  # runs trained, reused exactly and carried from earlier builds (search.run_search)

    def to_dict(self) -> dict:
        return asdict(self)


def rows_data(rows: list[dict], ctx: SearchContext, min_runs: int = 2, phases: int = 1) -> RunsData:
    """The runs as a RunsData; with `phases` > 1, their schedules (the rows' `phases`) as
    phase<p>_w_<c> columns, one block per phase (see `run_phases`)."""
    table = pl.DataFrame(rows).unique("run_id", maintain_order=True)
    if phases == 1:
        return load_runs("this search's runs", list(ctx.objective.targets), table=table,
                         weight_columns=[f"w_{c}" for c in ctx.components], min_runs=min_runs)
    schedules = [json.loads(r["phases"]) if r.get("phases") else [] for r in table.to_dicts()]
    if any(len(sch) != phases for sch in schedules):
        raise MixforgeError(f"this search's runs mix schedules of {sorted({len(sch) for sch in schedules})} phases; expected {phases}")
    columns = {f"phase{p}_w_{c}": [sch[p].get(c, 0.0) for sch in schedules] for p in range(phases) for c in ctx.components}
    table = table.drop([c for c in table.columns if c.startswith("w_")]).with_columns(pl.Series(k, v) for k, v in columns.items())
    return load_runs("this search's runs", list(ctx.objective.targets), table=table, min_runs=min_runs)


def run_phases(rows: list[dict]) -> int:
    """The phases of the runs' schedules when every run trained one of the same length (regmix
    with search.phases); else 1: their token shares (w_ columns) describe them."""
    lengths = {len(json.loads(r["phases"])) if r.get("phases") else 1 for r in rows}
    return lengths.pop() if len(lengths) == 1 else 1


def schedule_pool(ctx: SearchContext, n: int, rng: np.random.Generator, phases: int, extra: np.ndarray | None = None,
                  constrained: bool = True) -> np.ndarray:
    """Candidate schedules [m, phases * k]: independent candidate pools side by side, each phase
    pinned and within the bounds (so their mean, the schedule's token shares, is too). One phase:
    candidate_pool, `extra` rows included."""
    if phases == 1:
        return candidate_pool(ctx, n, rng, extra, constrained)
    blocks = [candidate_pool(ctx, n, rng, constrained=constrained) for _ in range(phases)]
    size = min(len(b) for b in blocks)
    return np.hstack([b[:size] for b in blocks])


def candidate_pool(ctx: SearchContext, n: int, rng: np.random.Generator, extra: np.ndarray | None = None,
                   constrained: bool = True) -> np.ndarray:
    """Dirichlet draws around the prior (and `extra` rows, e.g. the observed runs), pinned and
    within the bounds; `constrained=False`: every draw, for the unconstrained optimum."""
    s = ctx.settings
    pool = dirichlet_pool(ctx.prior, n, rng, s.min_strength, s.max_strength)
    if extra is not None:
        pool = np.vstack([pool, extra])
    if not constrained:
        return pool
    pool = ctx.pinned(pool)
    pool = pool[ctx.feasible(pool)]
    if not len(pool):
        raise MixforgeError("no candidate mixture meets the repetition caps, pins and share bounds: loosen search.min_share/"
                            "max_share/pin, raise search.max_epochs, or lower search.target_tokens or proxy.tokens")
    return pool


def kl_weight(ctx: SearchContext, report, X: np.ndarray, phases: int = 1) -> float:
    """search.kl_weight, or for `auto` the cross-validated MAE per median KL of the runs from the
    prior: leaving the region the runs cover costs what the predictor typically gets wrong."""
    if ctx.settings.kl_weight != "auto":
        return float(ctx.settings.kl_weight)
    return trust_region_weight(report.mae, X, np.tile(ctx.prior, phases), phases)


def scores(predictor, W: np.ndarray, ctx: SearchContext, penalty: float, phases: int = 1) -> np.ndarray:
    """Lower is better: the predicted objective plus the KL penalty towards the prior (summed
    over the phases of schedules)."""
    return ctx.objective.sign * predictor.predict(W) + penalty * kl_by_phase(W, np.tile(ctx.prior, phases), phases)


def fit(rows: list[dict], ctx: SearchContext, phases: int = 1, carried: list | None = None):
    """Predictor fitted on the runs (on their schedules when `phases` > 1), its cross-validated
    report, the runs, their objective values and the KL penalty for scoring candidates. With
    `carried` runs (mixers/carry.py), they are evidence as mixers/evidence.py decides; the data
    and values returned are the runs' own."""
    if carried:
        return _fit_with_carried(rows, ctx, phases, carried)
    data = rows_data(rows, ctx, min_runs=4, phases=phases)  # CLIMB fits on its first batch; the fit report says how little that is
    y = ctx.objective.column(data)
    space = ctx.content if phases == 1 else None
    X = data.weights if space is None else np.hstack([data.weights, space.of_mixtures(data.weights)])
    predictor, report = fit_predictor(ctx.settings.predictor, X, y, folds=ctx.settings.folds, seed=ctx.seed,
                                      n_content=space.dims if space else 0)
    return _reading_weights(predictor, space), report, data, y, kl_weight(ctx, report, data.weights, phases)


def _reading_weights(model, space):
    """A model fitted with content features, as a predictor of mixtures (their weights alone)."""
    from mixforge.mixers.content_space import WithContent

    return model if space is None else WithContent(model, space)


def _carried_rows(ctx: SearchContext, carried: list) -> list[dict]:
    """Carried runs as rows over today's components (their own w_ columns named older components)."""
    out = []
    for c in carried:
        row = {k: v for k, v in c.row.items() if not k.startswith("w_") and k not in ("phases", "phase_ends")}
        row.update({f"w_{comp}": c.weights.get(comp, 0.0) for comp in ctx.components})
        if len(c.phases) > 1:
            row["phases"] = json.dumps([{comp: ph.get(comp, 0.0) for comp in ctx.components} for ph in c.phases])
        out.append(row)
    return out


def _fit_with_carried(rows: list[dict], ctx: SearchContext, phases: int, carried: list):
    from mixforge.mixers.evidence import fit_with_carried

    extra = _carried_rows(ctx, carried)
    data = rows_data(rows + extra, ctx, min_runs=2, phases=phases)
    y = ctx.objective.column(data)  # a combination's z-scores over every run used
    is_carried = np.isin(np.array(data.run_ids), [r["run_id"] for r in extra])
    by_id = {r["run_id"]: c for r, c in zip(extra, carried)}
    kept = np.array([by_id[i].kept if i in by_id else 1.0 for i in data.run_ids])
    space, X = ctx.content if phases == 1 else None, data.weights
    if space is not None:  # a carried run's content is its own, not that of its mixture over today's components
        X = np.hstack([X, np.array([space.of_clusters(by_id[i].clusters) if i in by_id else space.of_mixtures(w[None, :])[0]
                                    for i, w in zip(data.run_ids, data.weights)])])
    predictor, report = fit_with_carried(ctx.settings.predictor, X, y, is_carried, kept, ctx.settings.folds, ctx.seed,
                                         space.dims if space else 0)
    own = rows_data(rows, ctx, min_runs=2, phases=phases)
    return _reading_weights(predictor, space), report, own, y[~is_carried], kl_weight(ctx, report, data.weights, phases)


def refresh_runs(ctx: SearchContext, phases: int, label: str) -> list[dict]:
    """`ctx.refresh` new runs where the predictor fitted on the carried runs is least sure, among
    candidates inside the caps, pins and bounds (mixers/evidence.py least_sure), seeds ctx.seed onwards."""
    from mixforge.mixers.evidence import least_sure

    extra = _carried_rows(ctx, ctx.carried)
    data = rows_data(extra, ctx, min_runs=2, phases=phases)
    pool = schedule_pool(ctx, 4096, np.random.default_rng([ctx.seed, 4]), phases)
    kept = np.array([c.kept for c in ctx.carried])
    picked = pool[least_sure(pool, data.weights, ctx.objective.column(data), kept, ctx.refresh, ctx.seed)]
    mixtures = [ctx.as_dict(w) if phases == 1 else [ctx.as_dict(b) for b in w.reshape(phases, -1)] for w in picked]
    return ctx.train(mixtures, [ctx.seed + i for i in range(len(mixtures))], label)


def within(ctx: SearchContext, phases: int = 1):
    """(feasible(W) per row of schedules [n, phases * k], the pinned components): what a proposal may be."""
    k = len(ctx.components)
    return (lambda W: ctx.feasible(W.reshape(-1, k)).reshape(len(W), phases).all(axis=1),
            np.array([c in ctx.settings.pin for c in ctx.components]))


def propose(predictor, pool: np.ndarray, ctx: SearchContext, penalty: float, top_k: int | None, phases: int,
            rows: list[dict], y: np.ndarray) -> tuple[np.ndarray, dict | None]:
    """The proposal, never predicted worse than the best observed feasible run (mixers/refine.py):
    the runs (pinned, where then feasible) join the pool, its best candidates are refined, the
    top-k mean (top_k None: the best) is taken and compared with the best feasible run. `y`: the
    runs' objective values, in rows_data(rows) order. Returns (w, the comparison's record)."""
    k = len(ctx.components)
    data = rows_data(rows, ctx, min_runs=1, phases=phases)
    ok, pins = within(ctx, phases)
    runs = ctx.pinned(data.weights.reshape(-1, k)).reshape(len(data), -1)
    pool = np.vstack([pool, runs[ok(runs)]])
    w, candidate = choose(lambda W: scores(predictor, W, ctx, penalty, phases), pool, ok, [ctx.seed, 6], top_k, phases, pins)
    feasible = ok(data.weights)
    return never_worse(predictor.predict, ctx.objective.sign, w, candidate, data.weights[feasible], np.asarray(y)[feasible],
                       [r for r, f in zip(data.run_ids, feasible) if f])


def unconstrained(predictor, ctx: SearchContext, penalty: float, top_k: int | None, extra: np.ndarray | None,
                  phases: int = 1) -> dict:
    """The proposal the same rule makes without pins, share bounds and repetition caps, and what
    the constraints cost in predicted objective (>= 0 means the constrained one is predicted worse)."""
    pool = schedule_pool(ctx, ctx.settings.candidates, np.random.default_rng([ctx.seed, 3]), phases, extra, constrained=False)
    w = choose(lambda W: scores(predictor, W, ctx, penalty, phases), pool, lambda W: np.ones(len(W), dtype=bool), [ctx.seed, 7],
               top_k, phases)[0]  # refined as the proposal is, so the constraints' cost compares like with like
    shares = ctx.shares(w)
    return {"weights": ctx.as_dict(shares), "predicted": float(predictor.predict(w[None, :])[0]),
            "largest_share": float(shares.max()), "feasible": bool(ctx.feasible(w.reshape(phases, -1)).all())}


def phase_schedule(ctx: SearchContext, blocks) -> list[dict] | None:
    """A schedule, one mixture per phase, each phase from where the last ended to its end in
    search.phase_ends (None for a single mixture)."""
    if len(blocks) < 2:
        return None
    ends = ctx.phase_ends(len(blocks))
    return [{"start_fraction": start, "end_fraction": end, "weights": ctx.as_dict(b)}
            for start, end, b in zip([0.0] + ends[:-1], ends, blocks)]


def _proposal(ctx: SearchContext, strategy: str, w: np.ndarray, predictor, report, y, rows, **extra) -> Proposal:
    """w: a mixture, or a schedule [phases * k] (then `weights` are its token shares, see `SearchContext.shares`)."""
    predicted = float(predictor.predict(w[None, :])[0]) if predictor is not None else None
    return Proposal(
        strategy=strategy, objective=ctx.objective.label, targets=ctx.objective.targets,
        lower_is_better=ctx.objective.sign > 0, weights=ctx.as_dict(ctx.shares(w)), predicted=predicted,
        predicted_interval=interval_around(predicted, report) if predictor is not None else None,
        natural=ctx.as_dict(ctx.natural), prior=ctx.as_dict(ctx.prior),
        fit=report.to_dict() if report else None,
        fit_points={"actual": y.tolist(), "predicted": report.oof_predictions} if report else None,
        runs_used=list(dict.fromkeys(r["run_id"] for r in rows)), seed=ctx.seed, constraints=_constraints(ctx),
        settings=ctx.settings.model_dump(), **extra)


def _constraints(ctx: SearchContext) -> dict:
    lo, hi = ctx.bounds()
    return {"target_tokens": ctx.target_tokens, "max_epochs": ctx.settings.max_epochs, "pin": ctx.settings.pin,
            "lowest": ctx.as_dict(lo), "highest": ctx.as_dict(hi)}


PHASE_SEED = 100_003  # phase p of a random schedule draws with seed + p * PHASE_SEED


def random_runs(ctx: SearchContext, n: int, label: str, phases: int = 1) -> list[dict]:
    """n proxies on RegMix's random mixtures, seeds ctx.seed onwards (the same first runs in
    every strategy, so a second strategy on the same workspace reuses them); with `phases` > 1,
    on random schedules: an independent draw per phase, each trainable in the whole budget (so
    the schedule is too)."""
    s = ctx.settings
    draws = [random_mixtures(ctx.token_counts, n, ctx.seed + p * PHASE_SEED, ctx.budget, ctx.max_epochs, s.temperature,
                             min_strength=s.min_strength, max_strength=s.max_strength) for p in range(phases)]
    mixtures = draws[0] if phases == 1 else [list(schedule) for schedule in zip(*draws)]
    return ctx.train(mixtures, [ctx.seed + i for i in range(len(mixtures))], label)


def regmix(ctx: SearchContext) -> Proposal:
    """With search.phases > 1 the runs train random schedules, the predictor is fitted over the
    whole schedule (phase<p>_w_<c>), and the proposal is the mean of the top-k candidate schedules."""
    s, P = ctx.settings, ctx.settings.phases
    if ctx.carried:  # after a data change: a few new runs, with the earlier ones as evidence
        rows = refresh_runs(ctx, P, "regmix refresh runs")
    else:
        rows = random_runs(ctx, ctx.runs, "regmix runs", P)
    predictor, report, _, y, penalty = fit(rows, ctx, P, ctx.carried)
    pool = schedule_pool(ctx, s.candidates, np.random.default_rng([ctx.seed, 1]), P)
    w, check = propose(predictor, pool, ctx, penalty, s.top_k, P, rows, y)  # a convex combination of feasible mixtures stays feasible
    return _proposal(ctx, "regmix", w, predictor, report, y, rows, best_observed=check, fallback=check and check["fallback"],
                     iterations=[_iteration(1, rows, y, report, ctx)],
                     kl_weight=penalty, unconstrained=unconstrained(predictor, ctx, penalty, s.top_k, None, P),
                     schedule=phase_schedule(ctx, w.reshape(P, -1)))


def climb_batches(runs: int, split: list[float]) -> list[int]:
    shares = np.array(split, dtype=float) / sum(split)
    sizes = np.maximum(np.floor(shares * runs).astype(int), 1)
    sizes[0] += runs - sizes.sum()
    return sizes.tolist()


def climb(ctx: SearchContext) -> Proposal:
    s = ctx.settings
    sizes = climb_batches(ctx.runs, s.climb_split)
    rng = np.random.default_rng([ctx.seed, 2])
    rows = random_runs(ctx, sizes[0], "climb iteration 1")
    iterations = []
    for it, size in enumerate(sizes[1:], start=2):
        predictor, report, data, y, penalty = fit(rows, ctx)
        iterations.append(_iteration(it - 1, rows, y, report, ctx))
        pool = dirichlet_pool(ctx.prior, s.candidates, rng, s.min_strength, s.max_strength)
        pool = unseen(pool[ctx.trainable(pool)], data.weights)  # the next batch explores: proxies need not keep the proposal's bounds
        top = pool[np.argsort(scores(predictor, pool, ctx, penalty), kind="stable")[: 4 * size]]
        picked = top[np.sort(rng.choice(len(top), size=min(size, len(top)), replace=False))]
        mixtures = [ctx.as_dict(w) for w in picked]
        start = ctx.seed + len(rows)
        rows = rows + ctx.train(mixtures, list(range(start, start + len(mixtures))), f"climb iteration {it}")
    return best_predicted(ctx, "climb", rows, rng, iterations)


def unseen(pool: np.ndarray, X: np.ndarray) -> np.ndarray:
    """Rows of pool not already run (to 3 decimals)."""
    seen = {tuple(np.round(r, 3)) for r in X}
    return pool[[tuple(np.round(r, 3)) not in seen for r in pool]]


def best_predicted(ctx: SearchContext, strategy: str, rows: list[dict], rng: np.random.Generator, iterations: list[dict]) -> Proposal:
    """The last fit on every run, and its best predicted mixture of a fresh pool and the runs
    (CLIMB's proposal), pinned and within the bounds."""
    predictor, report, data, y, penalty = fit(rows, ctx)
    iterations.append(_iteration(len(iterations) + 1, rows, y, report, ctx))
    pool = candidate_pool(ctx, ctx.settings.candidates, rng, extra=data.weights)
    w, check = propose(predictor, pool, ctx, penalty, None, 1, rows, y)
    return _proposal(ctx, strategy, w, predictor, report, y, rows, iterations=iterations, kl_weight=penalty,
                     best_observed=check, fallback=check and check["fallback"],
                     unconstrained=unconstrained(predictor, ctx, penalty, None, data.weights))


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
        schedule = phase_schedule(ctx, per_phase)
        w = ctx.shares(np.ravel(per_phase))  # the schedule's overall token shares
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
    cap = np.minimum(hi, ctx.max_epochs * ctx.available / ctx.budget)  # hi holds the target run's cap
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

