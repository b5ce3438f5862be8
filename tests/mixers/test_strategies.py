"""mixers/strategies.py piece by piece: the CLIMB batches, the candidate pools (pinned, within the
bounds, phases side by side), draws near a mixture, the clip to the bounds, the influence
z-scores and the phase schedule; then regmix (one round, a schedule, and the two refresh rounds
after a data change) through a SearchContext whose `train` is a known function of the mixture.

The components are four slice labels with their real text sizes as token counts, so the proxy's
repetition cap (proxy.max_epochs over a 300,000-token run) binds: code may hold at most 34% of a
run, legal 46%. The objective, bpb = 1.5 + 0.4 * exp(-2 code - legal + quotes), is the mixing
law's convex form: its best feasible mixture fills code and legal to their caps and gives the
rest to bible, which costs nothing, before quotes, which hurts."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from hypothesis import example, given, settings, strategies as st

from conftest import SLICE
from mixforge.config import SearchConfig
from mixforge.errors import MixforgeError
from mixforge.mixers import strategies as S
from mixforge.mixers.carry import Carried
from mixforge.mixers.context import SearchContext
from mixforge.mixers.objective import Objective
from mixforge.mixers.sampling import random_mixtures

EXAMPLES = int(os.environ.get("MIXFORGE_FUZZ_EXAMPLES", "60"))
LABELS = ("bible", "code", "legal", "quotes")
COUNTS = {label: sum(len(json.loads(line)["text"].encode()) for line in (SLICE / f"{label}.jsonl").read_text().splitlines())
          for label in LABELS}
BUDGET, EPOCHS = 300_000, 4.0
SLOPES = {"bible": 0.0, "code": -2.0, "legal": -1.0, "quotes": 1.0}


def bpb(mixture: dict) -> float:
    return 1.5 + 0.4 * float(np.exp(sum(SLOPES[c] * mixture.get(c, 0.0) for c in SLOPES)))


def caps() -> np.ndarray:
    return EPOCHS * np.array([COUNTS[c] for c in LABELS], dtype=float) / BUDGET


def optimum() -> np.ndarray:
    """The best mixture under the repetition caps alone: code and legal at their caps, bible the rest."""
    cap = caps()
    return np.array([1 - cap[1] - cap[2], cap[1], cap[2], 0.0])


class Trainer:
    """A proxy trainer whose measurement is `bpb` of the mixture (schedules: the mean over phases),
    returning rows as the runs table holds them; it records every call."""

    def __init__(self):
        self.calls: list[tuple[str, list[int], list]] = []

    def __call__(self, mixtures, seeds, label, checkpoints=0):
        self.calls.append((label, list(seeds), mixtures))
        rows = []
        for mixture, seed in zip(mixtures, seeds):
            phases = mixture if isinstance(mixture, list) else [mixture]
            row = {"run_id": f"run{seed}", "bpb_x": float(np.mean([bpb(p) for p in phases])),
                   **{f"w_{c}": float(np.mean([p.get(c, 0.0) for p in phases])) for c in LABELS}}
            if len(phases) > 1:
                row["phases"] = json.dumps(phases)
            rows.append(row)
        return rows


def context(train=None, budget=BUDGET, carried=(), **search) -> SearchContext:
    options = {"target": "bpb_x", "predictor": "linear", "candidates": 2000, "top_k": 4, "runs": 16, "kl_weight": 0.0} | search
    return SearchContext(sorted(COUNTS), COUNTS, budget, EPOCHS, SearchConfig(**options), Objective.parse("bpb_x"), 0,
                         train or Trainer(), carried=list(carried))


def vector(weights: dict) -> np.ndarray:
    return np.array([weights[c] for c in LABELS])


# --- climb_batches -------------------------------------------------------------------------------

@pytest.mark.timeout(30)
def test_climb_batches_split_the_runs_4_2_1():
    assert S.climb_batches(28, [4, 2, 1]) == [16, 8, 4]
    assert S.climb_batches(16, [4, 2, 1]) == [10, 4, 2]  # floors 9, 4, 2: the first batch takes the rest
    assert S.climb_batches(7, [4, 2, 1]) == [4, 2, 1]


@pytest.mark.timeout(60)
@settings(derandomize=True, max_examples=EXAMPLES, deadline=None)
@given(runs=st.integers(3, 500))
def test_climb_batches_of_the_default_split_sum_to_the_runs_near_4_2_1(runs):
    sizes = S.climb_batches(runs, [4, 2, 1])
    assert sum(sizes) == runs and min(sizes) >= 1, sizes
    assert all(abs(size - share * runs) < 3 for size, share in zip(sizes, [4 / 7, 2 / 7, 1 / 7])), sizes


@pytest.mark.timeout(60)
@settings(derandomize=True, max_examples=EXAMPLES, deadline=None)
@example(split=[1.0, 1.0, 4.0], extra=0)
@given(split=st.lists(st.floats(0.05, 20), min_size=2, max_size=6), extra=st.integers(0, 400))
def test_climb_batches_sum_to_the_runs_and_none_is_empty(split, extra):
    runs = len(split) + extra  # a run per batch at least
    sizes = S.climb_batches(runs, split)
    assert len(sizes) == len(split) and sum(sizes) == runs and min(sizes) >= 1, sizes


@pytest.mark.timeout(60)
def test_climb_trains_its_batches_in_order_and_proposes_within_the_caps():
    train = Trainer()
    proposal = S.climb(context(train, strategy="climb"))
    assert [len(seeds) for _, seeds, _ in train.calls] == S.climb_batches(16, [4, 2, 1]) == [10, 4, 2]
    assert [seed for _, seeds, _ in train.calls for seed in seeds] == list(range(16))  # each run once, seeds in order
    w = vector(proposal.weights)
    assert abs(w.sum() - 1) < 1e-5 and (w <= caps() + 1e-6).all()


@pytest.mark.timeout(60)
def test_climb_with_fewer_runs_than_batches_is_a_clear_error():
    with pytest.raises(MixforgeError, match="runs"):
        S.climb(context(strategy="climb", runs=2))


# --- unseen, standardised ------------------------------------------------------------------------

@pytest.mark.timeout(30)
def test_unseen_drops_the_mixtures_already_run_and_keeps_the_order():
    ctx = context()
    pool = S.candidate_pool(ctx, 1000, np.random.default_rng(0))
    runs = pool[[3, 50, 120]]
    mixed = np.vstack([runs[:1], pool, runs[1:] + 1e-9])  # to 3 decimals these are the runs
    left = S.unseen(mixed, runs)
    assert len(left) == len(pool) - 3
    assert np.array_equal(left, np.delete(pool, [3, 50, 120], axis=0))
    assert np.array_equal(S.unseen(pool, np.empty((0, 4))), pool)


@pytest.mark.timeout(30)
def test_standardised_gives_z_scores_and_zeros_for_no_spread():
    scores = np.array([0.35, 0.5, 0.85, 0.6])
    z = S.standardised(scores)
    assert abs(z.mean()) < 1e-12 and abs(z.std() - 1) < 1e-12 and np.array_equal(np.argsort(z), np.argsort(scores))
    assert np.allclose(S.standardised(3 * scores + 7), z)  # the same on any scale
    assert np.array_equal(S.standardised(np.full(4, 0.4)), np.zeros(4))


# --- _clip ---------------------------------------------------------------------------------------

def _clip_inputs(draw_w, share_hi, budget, lo):
    ctx = context(budget=budget)
    cap = np.minimum(share_hi, EPOCHS * ctx.available / budget)
    return ctx, np.asarray(draw_w), np.asarray(lo), np.asarray(share_hi), cap


weights = st.lists(st.floats(1e-3, 10), min_size=4, max_size=4)
highest = st.lists(st.floats(0.05, 1.0), min_size=4, max_size=4)
budgets = st.integers(50_000, 600_000)


@pytest.mark.timeout(60)
@settings(derandomize=True, max_examples=EXAMPLES, deadline=None)
@given(w=weights, hi=highest, budget=budgets)
def test_clip_keeps_the_share_bounds_the_repetition_cap_and_the_simplex(w, hi, budget):
    ctx, w, lo, hi, cap = _clip_inputs(w, hi, budget, np.zeros(4))
    if cap.sum() < 1:  # no mixture meets these bounds (bounds() refuses them first)
        return
    out = S._clip(w, lo, hi, ctx)
    assert abs(out.sum() - 1) < 1e-9 and (out >= -1e-12).all() and (out <= cap + 1e-9).all(), (out, cap)
    inside = w / w.sum()
    if (inside <= cap).all():
        assert np.allclose(out, inside)  # a mixture already within its bounds is left alone


@pytest.mark.timeout(60)
@settings(derandomize=True, max_examples=EXAMPLES, deadline=None)
@example(w=[0.97, 0.01, 0.01, 0.01], hi=[0.3, 1.0, 1.0, 1.0], budget=50_000, lo=[0.0, 0.2, 0.2, 0.2])
@given(w=weights, hi=highest, budget=budgets, lo=st.lists(st.floats(0.0, 0.3), min_size=4, max_size=4))
def test_clip_keeps_lower_bounds_too(w, hi, budget, lo):
    ctx, w, lo, hi, cap = _clip_inputs(w, hi, budget, lo)
    if cap.sum() < 1 or lo.sum() > 1 or (lo > cap).any():
        return
    out = S._clip(w, lo, hi, ctx)
    assert abs(out.sum() - 1) < 1e-9 and (out >= lo - 1e-9).all() and (out <= cap + 1e-9).all(), (out, lo, cap)


# --- candidate pools, within, near ---------------------------------------------------------------

BOUNDED = {"pin": {"legal": 0.2}, "min_share": {"bible": 0.1}, "max_share": {"quotes": 0.5}}


def assert_allowed(ctx, W):
    """Rows are mixtures a proposal may be: on the simplex, pinned, within the bounds and the caps."""
    W = np.asarray(W).reshape(-1, 4)
    assert np.allclose(W.sum(axis=1), 1) and (W >= 0).all()
    assert np.allclose(W[:, 2], 0.2) and (W[:, 0] >= 0.1 - 1e-9).all() and (W[:, 3] <= 0.5 + 1e-9).all()
    assert (W <= caps() + 1e-9).all() and ctx.feasible(W).all()


@pytest.mark.timeout(30)
def test_candidate_pool_is_pinned_within_the_bounds_and_keeps_feasible_extra_rows():
    ctx = context(**BOUNDED)
    extra = np.array([[0.3, 0.2, 0.2, 0.3], [0.1, 0.6, 0.2, 0.1]])  # the second breaks code's cap
    pool = S.candidate_pool(ctx, 3000, np.random.default_rng(0), extra)
    assert len(pool) > 100
    assert_allowed(ctx, pool)
    assert any(np.allclose(row, extra[0]) for row in pool) and not any(np.allclose(row, extra[1]) for row in pool)
    raw = S.candidate_pool(ctx, 3000, np.random.default_rng(0), extra, constrained=False)
    assert len(raw) > len(pool) and np.allclose(raw[-2:], extra) and not ctx.feasible(raw).all()
    assert np.allclose(raw.sum(axis=1), 1)


@pytest.mark.timeout(30)
def test_candidate_pool_with_no_feasible_draw_is_a_clear_error():
    ctx = context(budget=100 * sum(COUNTS.values()))  # every component would repeat over 25 times
    with pytest.raises(MixforgeError, match="no candidate mixture meets the repetition caps"):
        S.candidate_pool(ctx, 500, np.random.default_rng(0))


@pytest.mark.timeout(30)
def test_schedule_pool_puts_independent_phases_side_by_side():
    ctx = context(**BOUNDED)
    one = S.schedule_pool(ctx, 1000, np.random.default_rng(5), 1)
    assert np.array_equal(one, S.candidate_pool(ctx, 1000, np.random.default_rng(5)))
    pool = S.schedule_pool(ctx, 1000, np.random.default_rng(5), 3)
    assert pool.shape[1] == 12 and len(pool) > 50
    assert_allowed(ctx, pool)
    blocks = pool.reshape(len(pool), 3, 4)
    assert not np.allclose(blocks[:, 0], blocks[:, 1]) and not np.allclose(blocks[:, 1], blocks[:, 2])
    ok, pins = S.within(ctx, 3)
    assert ok(pool).all() and pins.tolist() == [False, False, True, False]


@pytest.mark.timeout(30)
def test_within_needs_every_phase_allowed():
    ctx = context(**BOUNDED)
    good, bad = [0.3, 0.2, 0.2, 0.3], [0.05, 0.2, 0.2, 0.55]  # bad: bible under its lowest, quotes over its highest
    ok, _ = S.within(ctx, 2)
    assert ok(np.array([good + good, good + bad, bad + good])).tolist() == [True, False, False]
    assert S.within(ctx)[0](np.array([good, bad])).tolist() == [True, False]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("phases", [1, 2])
def test_near_draws_stay_allowed_and_close_to_the_mixture(phases):
    ctx = context(**BOUNDED)
    centre = np.array([[0.3, 0.2, 0.2, 0.3], [0.5, 0.25, 0.2, 0.05]][:phases]).ravel()
    draws = S.near(ctx, centre, 2000, np.random.default_rng(1), phases)
    assert draws.shape[1] == 4 * phases and len(draws) > 500
    assert_allowed(ctx, draws)
    assert np.abs(draws.mean(axis=0) - centre).max() < 0.03  # centred on it
    spread = np.abs(draws - centre).reshape(len(draws), phases, 4).sum(axis=2)
    pool = S.schedule_pool(ctx, 2000, np.random.default_rng(1), phases)
    wide = np.abs(pool - centre).reshape(len(pool), phases, 4).sum(axis=2)
    assert np.median(spread) < 0.2 and np.median(spread) < np.median(wide) / 2, (np.median(spread), np.median(wide))


# --- phase_schedule ------------------------------------------------------------------------------

@pytest.mark.timeout(30)
def test_phase_schedule_follows_the_phase_ends():
    ctx = context(phases=2, phase_ends=[0.25, 1.0])
    a, b = np.array([0.4, 0.1, 0.2, 0.3]), np.array([0.1, 0.3, 0.5, 0.1])
    assert S.phase_schedule(ctx, [a]) is None  # one mixture is no schedule
    schedule = S.phase_schedule(ctx, [a, b])
    assert [(p["start_fraction"], p["end_fraction"]) for p in schedule] == [(0.0, 0.25), (0.25, 1.0)]
    assert [vector(p["weights"]).tolist() for p in schedule] == [a.tolist(), b.tolist()]
    assert np.allclose(ctx.shares(np.ravel([a, b])), 0.25 * a + 0.75 * b)
    equal = S.phase_schedule(context(phases=3), [a, b, a])
    assert [p["end_fraction"] for p in equal] == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert [p["start_fraction"] for p in equal] == pytest.approx([0.0, 1 / 3, 2 / 3])


# --- regmix on a known objective -----------------------------------------------------------------

def assert_proposal_beats_the_runs(proposal, rows):
    w = vector(proposal.weights)
    assert np.abs(w - optimum()).max() < 0.01, (w, optimum())
    assert proposal.best_observed["chose"] == "proposal" and proposal.fallback is None
    assert proposal.predicted <= proposal.best_observed["predicted"]  # never predicted worse than the best run
    assert bpb(proposal.weights) < min(r["bpb_x"] for r in rows)  # and truly better than every run


@pytest.mark.timeout(60)
def test_regmix_finds_the_known_optimum_and_never_predicts_worse_than_the_best_run():
    train = Trainer()
    proposal = S.regmix(context(train))
    (label, seeds, mixtures), = train.calls
    assert label == "regmix runs" and seeds == list(range(16))
    rows = train(mixtures, seeds, label)
    assert all(S.within(context())[0](vector(m)[None, :])[0] for m in mixtures)  # RegMix's random runs are trainable
    assert_proposal_beats_the_runs(proposal, rows)
    assert proposal.runs_used == [f"run{s}" for s in range(16)]
    assert proposal.unconstrained["feasible"] is False and max(proposal.unconstrained["weights"], key=proposal.unconstrained["weights"].get) == "code"
    assert proposal.constraints["highest"] == pytest.approx(dict(zip(LABELS, [1.0] * 4)))  # no target run: only the proxy run's cap binds


@pytest.mark.timeout(60)
def test_regmix_over_two_phases_proposes_a_schedule_of_optima():
    train = Trainer()
    proposal = S.regmix(context(train, phases=2, phase_ends=[0.5, 1.0]))
    (_, _, schedules), = train.calls
    assert all(len(s) == 2 for s in schedules) and len({json.dumps(s) for s in schedules}) == 16
    assert [(p["start_fraction"], p["end_fraction"]) for p in proposal.schedule] == [(0.0, 0.5), (0.5, 1.0)]
    for phase in proposal.schedule:
        assert np.abs(vector(phase["weights"]) - optimum()).max() < 0.01
    assert proposal.predicted <= proposal.best_observed["predicted"]


def carried_runs(n: int = 8) -> list[Carried]:
    """Runs of an older build: the same objective, measured 0.05 higher, on mixtures of another seed."""
    old = random_mixtures(COUNTS, n, 777, BUDGET, EPOCHS)
    return [Carried(row={"run_id": f"old{i}", "bpb_x": bpb(m) + 0.05, **{f"w_{c}": m[c] for c in LABELS}}, phases=[m],
                    kept=0.8, build="b0", cells_then={}, measure="docs", clusters={}) for i, m in enumerate(old)]


@pytest.mark.timeout(90)
def test_regmix_after_a_data_change_trains_two_refresh_rounds_and_never_the_carried_runs():
    train = Trainer()
    proposal = S.regmix(context(train, carried=carried_runs(), refresh_runs=6))
    (label1, seeds1, first), (label2, seeds2, second) = train.calls
    assert "round 1 of 2" in label1 and "round 2 of 2: near the proposal" in label2
    assert (seeds1, seeds2) == ([0, 1, 2, 3], [4, 5])  # half of 6, at least 4, first; the rest near the proposal
    assert [i["runs"] for i in proposal.iterations] == [4, 6]
    assert proposal.runs_used == [f"run{s}" for s in range(6)]  # today's runs; the carried ones are evidence only
    distance = [np.mean([np.abs(vector(m) - optimum()).sum() for m in batch]) for batch in (first, second)]
    assert distance[1] < distance[0] and distance[1] < 0.3, distance  # round 2 measures where the proposal will be
    assert_proposal_beats_the_runs(proposal, train(first + second, seeds1 + seeds2, "again"))


@pytest.mark.parametrize("changed, runs, want", [
    ({}, 16, 6),  # an append: no component changed past 25%, still 4 to check the carried runs and 2 near the proposal
    ({"bible": 0.3, "code": 0.9, "legal": 0.26, "quotes": 0.1}, 16, 6),
    ({"bible": 0.3, "code": 0.9, "legal": 0.26, "quotes": 0.5}, 16, 8),  # 2 per changed component
    ({"bible": 0.3, "code": 0.9, "legal": 0.26, "quotes": 0.5}, 7, 7),  # never past the full budget
])
def test_auto_refresh_runs_cover_the_changed_components_and_the_proposal(changed, runs, want):
    ctx = context(carried=carried_runs(), runs=runs)
    ctx.changed = changed
    assert ctx.refresh == want
