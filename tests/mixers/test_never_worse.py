"""Proposals never predicted worse than the best observed feasible run: tables whose best run sits
in a corner the simulated candidates around the prior never reach, for `search fit` (fit_table)
and for the strategies (regmix with and without phases, climb) inside caps and bounds."""

import json
import os

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings, strategies as st

from mixforge.mixers.model_choice import fit_predictor
from mixforge.mixers.refine import refine
from mixforge.mixers.runs_file import load_runs
from mixforge.mixers.fit_table import fit_table

ROUNDING = 1e-6  # the proposal's weights are written to 6 decimals
FUZZ = int(os.environ.get("MIXFORGE_FUZZ_EXAMPLES", "12"))


def corner_table(path, runs=40, k=5, phases=1, seed=0, slope=1.0):
    """Runs around the uniform mixture and one near component c0's corner; the loss falls
    linearly with c0's share (in every phase), so that corner run is the best."""
    rng = np.random.default_rng(seed)
    cols, loss = {"run_id": [f"r{i:02d}" for i in range(runs)]}, np.full(runs, 3.0)
    for p in range(phases):
        w = rng.dirichlet(np.full(k, 4.0), size=runs)
        w[-1] = [0.92] + [0.08 / (k - 1)] * (k - 1)
        loss -= slope * w[:, 0] / phases
        for c in range(k):
            cols[f"phase{p}_w_c{c}" if phases > 1 else f"w_c{c}"] = w[:, c]
    cols["bpb_x"] = loss + rng.normal(0, 0.002, runs)
    pl.DataFrame(cols).write_csv(path)
    return path


def predictions(path, out, predictor="linear"):
    """(predicted proposal, predicted best observed run) by a refit of the same model (fit_table's
    fit is deterministic), so the check does not trust fit_table's own figures."""
    data = load_runs(path, ["bpb_x"])
    model, _ = fit_predictor(predictor, data.weights, data.targets["bpb_x"], folds=5, seed=0)
    k = len(data.components)
    w = (np.ravel([[ph["weights"][c] for c in data.components] for ph in out["schedule"]]) if out["schedule"]
         else np.array([out["proposal"][c] for c in data.components]))
    best = data.weights[int(np.argmin(data.targets["bpb_x"]))]
    assert w.shape == best.shape and np.allclose(w.reshape(-1, k).sum(axis=1), 1, atol=1e-5) and (w >= 0).all()
    return float(model.predict(w[None, :])[0]), float(model.predict(best[None, :])[0]), best


@pytest.mark.timeout(120)
def test_fit_table_proposal_is_never_predicted_worse_than_the_best_observed_run(tmp_path):
    path = corner_table(tmp_path / "runs.csv")
    out = fit_table(path, "bpb_x", predictor="linear", candidates=200, top_k=32)
    proposal, best, _ = predictions(path, out)
    assert proposal <= best + ROUNDING, (proposal, best)  # before: the top-32 mean around the prior, predicted 0.05 worse
    assert out["best_observed"]["run_id"] == "r39" and abs(out["best_observed"]["predicted"] - best) < 1e-9

    # a KL weight that keeps every candidate near the prior: no refinement beats the corner run,
    # so the proposal is that run's mixture and says why
    out = fit_table(path, "bpb_x", predictor="linear", candidates=200, top_k=32, kl_weight=50.0)
    proposal, best, weights = predictions(path, out)
    assert proposal <= best + ROUNDING
    assert out["fallback"] and "best observed run r39" in out["fallback"] and out["best_observed"]["chose"] == "best observed run"
    assert np.allclose(list(out["proposal"].values()), weights, atol=1e-6)


@pytest.mark.timeout(120)
def test_fit_table_schedules_are_never_predicted_worse(tmp_path):
    path = corner_table(tmp_path / "runs.csv", phases=2, seed=1)
    for kl in ("auto", 50.0):
        out = fit_table(path, "bpb_x", predictor="linear", candidates=200, top_k=32, kl_weight=kl)
        proposal, best, _ = predictions(path, out)
        assert proposal <= best + ROUNDING, (kl, proposal, best)
        assert len(out["schedule"]) == 2


@pytest.mark.timeout(300)
@settings(derandomize=True, max_examples=FUZZ, deadline=None)
@given(runs=st.integers(10, 24), k=st.integers(2, 5), phases=st.integers(1, 2), seed=st.integers(0, 10_000),
       slope=st.floats(-2, 2), kl=st.sampled_from(["auto", 0.0, 0.5, 20.0]), top_k=st.integers(1, 64))
def test_fit_table_invariant_on_generated_tables(tmp_path_factory, runs, k, phases, seed, slope, kl, top_k):
    path = corner_table(tmp_path_factory.mktemp("t") / "runs.csv", runs, k, phases, seed, slope)
    out = fit_table(path, "bpb_x", predictor="linear", candidates=100, top_k=top_k, kl_weight=kl, seed=seed)
    proposal, best, _ = predictions(path, out)
    assert proposal <= best + ROUNDING, (proposal, best)
    assert out["predicted"] <= out["best_observed"]["predicted"]  # unrounded: exact


@pytest.mark.timeout(60)
def test_refine_keeps_pins_bounds_and_the_simplex_and_never_scores_worse():
    rng = np.random.default_rng(0)
    starts = rng.dirichlet(np.ones(4), size=6)
    starts[:, 3] = 0.2  # pinned
    starts[:, :3] *= 0.8 / starts[:, :3].sum(axis=1, keepdims=True)
    starts[:, 0] = np.minimum(starts[:, 0], 0.3)
    starts[:, 1] += 0.8 - starts[:, :3].sum(axis=1)

    def score(W):
        return -W[:, 0] + 0.1 * W[:, 2]  # wants c0 up to its bound

    def ok(W):
        return W[:, 0] <= 0.3 + 1e-12

    out = refine(score, starts, ok, seed=0, frozen=np.array([False, False, False, True]))
    assert np.allclose(out.sum(axis=1), 1) and (out >= 0).all() and np.allclose(out[:, 3], 0.2)
    assert ok(out).all() and (score(out) <= score(starts) + 1e-12).all()
    assert np.allclose(out[:, 0], 0.3, atol=1e-3)  # found the bound
    again = refine(score, starts, ok, seed=0, frozen=np.array([False, False, False, True]))
    assert np.array_equal(out, again)  # seeded


def _context(strategy_settings, train, components=("a", "b", "c", "d")):
    from mixforge.config import SearchConfig
    from mixforge.mixers.objective import Objective
    from mixforge.mixers.context import SearchContext

    counts = {c: 1_000_000 * (1 + 9 * (c != "a")) for c in components}  # a: small, so the prior gives it little
    settings = SearchConfig(target="bpb_x", predictor="linear", candidates=100, top_k=32, **strategy_settings)
    return SearchContext(sorted(counts), counts, 1000, 4.0, settings, Objective.parse("bpb_x"), 0, train)


def _synthetic(components=("a", "b", "c", "d")):
    """Proxies replaced by a known function: the loss falls with component a's share (the
    last phase counts double), so the best runs are those nearest a's corner. Returns the
    train function and the rows it measured."""
    measured = []

    def train(mixtures, seeds, label, checkpoints=0):
        rows = []
        for mixture, seed in zip(mixtures, seeds):
            phases = mixture if isinstance(mixture, list) else [mixture]
            a = np.array([ph.get("a", 0.0) for ph in phases])
            row = {"run_id": f"s{seed}", "bpb_x": 3.0 - float(np.average(a, weights=np.arange(1, len(a) + 1))),
                   **{f"w_{c}": float(np.mean([ph.get(c, 0.0) for ph in phases])) for c in components}}
            if len(phases) > 1:
                row["phases"] = json.dumps(phases)
            rows.append(row)
        measured.extend(rows)
        return rows
    return train, measured


def _predicted(ctx, proposal, rows, phases):
    """(predicted proposal, best feasible run's id and prediction) by a refit of the search's own
    model (the fit is deterministic), whatever the proposal says of itself."""
    from mixforge.mixers.fitting import fit

    predictor, _, data, y, _ = fit(rows, ctx, phases)
    k = len(ctx.components)
    w = (np.ravel([[ph["weights"][c] for c in ctx.components] for ph in proposal.schedule]) if proposal.schedule
         else np.array([proposal.weights[c] for c in ctx.components]))
    assert ctx.feasible(w.reshape(-1, k)).all() and np.allclose(w.reshape(-1, k).sum(axis=1), 1, atol=1e-5)
    feasible = ctx.feasible(data.weights.reshape(-1, k)).reshape(len(data), phases).all(axis=1)
    best = int(np.flatnonzero(feasible)[np.argmin(y[feasible])])
    return float(predictor.predict(w[None, :])[0]), data.run_ids[best], float(predictor.predict(data.weights[best][None, :])[0])


@pytest.mark.timeout(120)
@pytest.mark.parametrize("strategy", ["regmix", "regmix2", "climb"])
def test_strategies_never_propose_worse_than_the_best_feasible_run(strategy):
    from mixforge.mixers import strategies
    from mixforge.mixers.report import markdown

    phases = 2 if strategy == "regmix2" else 1
    bounds = {"runs": 24, "phases": phases, "max_share": {"a": 0.3}}  # some runs sit above a's bound: never proposed
    for kl in ("auto", 20.0):  # 20: every candidate stays near the prior, so only the runs themselves can win
        train, rows = _synthetic()
        ctx = _context({**bounds, "kl_weight": kl}, train)
        proposal = getattr(strategies, strategy.rstrip("2"))(ctx)
        assert max(ph["a"] for r in rows for ph in json.loads(r.get("phases") or "[]") or [{"a": r["w_a"]}]) > 0.3  # the best run breaks it
        predicted, best_id, best = _predicted(ctx, proposal, rows, phases)
        assert predicted <= best + ROUNDING, (kl, predicted, best)
        assert proposal.best_observed["run_id"] == best_id and abs(proposal.best_observed["predicted"] - best) < 1e-9
        if kl == 20.0:
            assert proposal.fallback and f"best observed run {best_id}" in proposal.fallback
            assert proposal.best_observed["chose"] == "best observed run"
            assert f"**Fallback:** {proposal.fallback}" in markdown(proposal.to_dict(), None)  # report.md says why


@pytest.mark.timeout(120)
def test_cli_search_fit_reports_the_best_run_beside_the_proposal(tmp_path):
    import subprocess

    from conftest import mixforge_cmd

    path = corner_table(tmp_path / "runs.csv")
    base = mixforge_cmd() + ["search", "fit", "--runs", str(path), "--target", "bpb_x", "--predictor", "linear", "--candidates", "200"]
    run = subprocess.run(base + ["--json"], capture_output=True, text=True, timeout=100)
    assert run.returncode == 0, run.stderr[-2000:]
    out = json.loads(run.stdout)
    assert out["predicted"] <= out["best_observed"]["predicted"] and "fallback" in out
    run = subprocess.run(base, capture_output=True, text=True, timeout=100)
    assert run.returncode == 0 and f"best observed run r39: {out['best_observed']['value']:.4f} (predicted" in " ".join(run.stdout.split())
