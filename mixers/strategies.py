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

import numpy as np

from mixforge.errors import MixforgeError
from mixforge.mixers.context import Proposal, SearchContext
from mixforge.mixers.fitting import carried_rows, fit, rows_data, scores
from mixforge.mixers.model_choice import interval_around
from mixforge.mixers.refine import choose, never_worse
from mixforge.mixers.sampling import dirichlet_pool, random_mixtures

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


def refresh_runs(ctx: SearchContext, phases: int, label: str) -> tuple[list[dict], list[dict]]:
    """`ctx.refresh` new runs in two rounds, seeds ctx.seed onwards: the first half (at least 4) where models
    fitted on the carried runs disagree most (mixers/evidence.py least_sure), then the rest near the
    proposal of a fit on the carried runs and the first round, spread apart. The carried runs
    describe an older corpus, so the second round measures today's data where the proposal will be
    (on the demo's two-source change, a single round spread for disagreement left the verified
    proposal 0.008 behind the full search). Returns (rows, the rounds' iteration records)."""
    first = max(ctx.refresh - ctx.refresh // 2, min(ctx.refresh, FIRST_ROUND))
    extra = carried_rows(ctx, ctx.carried)
    data = rows_data(extra, ctx, min_runs=2, phases=phases)
    pool = schedule_pool(ctx, 4096, np.random.default_rng([ctx.seed, 4]), phases)
    rows = _train_picked(ctx, pool, data, _kept_of(data.run_ids, ctx.carried), first, ctx.seed, phases, f"{label} (round 1 of 2: where the fit is least sure)")
    predictor, report, _, y, penalty = fit(rows, ctx, phases, ctx.carried)
    iterations = [_iteration(1, rows, y, report, ctx)]
    if ctx.refresh > first:
        candidates = schedule_pool(ctx, ctx.settings.candidates, np.random.default_rng([ctx.seed, 8]), phases)
        w, _ = propose(predictor, candidates, ctx, penalty, ctx.settings.top_k, phases, rows, y)
        data = rows_data(rows + extra, ctx, min_runs=2, phases=phases)
        rows = rows + _train_picked(ctx, near(ctx, w, 4096, np.random.default_rng([ctx.seed, 9]), phases), data,
                                    _kept_of(data.run_ids, ctx.carried),
                                    ctx.refresh - first, ctx.seed + first, phases, f"{label} (round 2 of 2: near the proposal)")
    return rows, iterations


def _kept_of(run_ids: list[str], carried: list) -> np.ndarray:
    """Each row's weight for least_sure's models: a carried run's kept share, 1 for today's runs."""
    kept = {c.row["run_id"]: c.kept for c in carried}
    return np.array([kept.get(i, 1.0) for i in run_ids])


def _train_picked(ctx: SearchContext, pool: np.ndarray, data, weight: np.ndarray, n: int, seed: int, phases: int,
                  label: str) -> list[dict]:
    from mixforge.mixers.evidence import least_sure

    picked = pool[least_sure(pool, data.weights, ctx.objective.column(data), weight, n, seed)]
    mixtures = [ctx.as_dict(w) if phases == 1 else [ctx.as_dict(b) for b in w.reshape(phases, -1)] for w in picked]
    return ctx.train(mixtures, [seed + i for i in range(len(mixtures))], label)


def near(ctx: SearchContext, w: np.ndarray, n: int, rng: np.random.Generator, phases: int) -> np.ndarray:
    """Schedules [m, phases * k] drawn around w (each phase a Dirichlet centred on w's phase,
    strengths 20-200: a few points of share either way), pinned and within the bounds."""
    k = len(ctx.components)
    blocks = [dirichlet_pool(b, n, rng, NEAR_STRENGTH[0], NEAR_STRENGTH[1]) for b in np.reshape(w, (phases, k))]
    size = min(len(b) for b in blocks)
    pool = ctx.pinned(np.vstack([b[:size] for b in blocks])).reshape(phases, size, k).transpose(1, 0, 2).reshape(size, -1)
    return pool[within(ctx, phases)[0](pool)]


NEAR_STRENGTH = (20.0, 200.0)
FIRST_ROUND = 4  # the least first round: the fit that places the second is cross-validated on it


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
    rounds = []
    if ctx.carried:  # after a data change: a few new runs, with the earlier ones as evidence
        rows, rounds = refresh_runs(ctx, P, "regmix refresh runs")
    else:
        rows = random_runs(ctx, ctx.runs, "regmix runs", P)
    predictor, report, _, y, penalty = fit(rows, ctx, P, ctx.carried)
    pool = schedule_pool(ctx, s.candidates, np.random.default_rng([ctx.seed, 1]), P)
    w, check = propose(predictor, pool, ctx, penalty, s.top_k, P, rows, y)  # a convex combination of feasible mixtures stays feasible
    return _proposal(ctx, "regmix", w, predictor, report, y, rows, best_observed=check, fallback=check and check["fallback"],
                     iterations=rounds + [_iteration(len(rounds) + 1, rows, y, report, ctx)],
                     kl_weight=penalty, unconstrained=unconstrained(predictor, ctx, penalty, s.top_k, None, P),
                     schedule=phase_schedule(ctx, w.reshape(P, -1)))


def climb_batches(runs: int, split: list[float]) -> list[int]:
    """Runs per CLIMB iteration in the ratio of `split`, a run each at least; the rounding excess goes to the first."""
    if runs < len(split):
        raise MixforgeError(f"search.runs is {runs} but search.climb_split has {len(split)} iterations: "
                            f"climb needs a run per iteration at least (raise search.runs or shorten climb_split)")
    shares = np.array(split, dtype=float) / sum(split)
    sizes = np.maximum(np.floor(shares * runs).astype(int), 1)
    sizes[0] += runs - sizes.sum()
    while sizes[0] < 1:  # the floors of one run each overshot: take the overshoot from the largest later batch
        sizes[1 + int(np.argmax(sizes[1:]))] -= 1
        sizes[0] += 1
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
        if abs(gap) < 1e-9:
            return clipped / clipped.sum()
        if not free.any():  # every share sits at a bound: move those the gap can move (up from lo, down from cap)
            free = clipped < cap if gap > 0 else clipped > lo
            if not free.any():
                return clipped / clipped.sum()  # infeasible bounds: callers check lo and cap first
        w = clipped.copy()
        room = clipped[free]
        w[free] += gap * (room / room.sum() if room.sum() > 0 else np.full(len(room), 1 / len(room)))
    return w / w.sum()

