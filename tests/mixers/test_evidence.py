"""mixers/evidence.py on measured runs: the demo's append benchmark (tests/fixtures/carried_append.json)."""

import json
from pathlib import Path

import numpy as np
import pytest

from mixforge.mixers.evidence import CONSISTENT, fit_with_carried

FIXTURE = json.loads((Path(__file__).parents[1] / "fixtures" / "carried_append.json").read_text())


def _runs(carried_y=None):
    Xc = np.array([r["weights"] for r in FIXTURE["carried"]])
    yc = np.array([r["y"] for r in FIXTURE["carried"]]) if carried_y is None else carried_y
    Xf, yf = np.array([r["weights"] for r in FIXTURE["fresh"]]), np.array([r["y"] for r in FIXTURE["fresh"]])
    X, y = np.vstack([Xc, Xf]), np.r_[yc, yf]
    carried = np.r_[np.ones(len(Xc), bool), np.zeros(len(Xf), bool)]
    kept = np.r_[[r["kept"] for r in FIXTURE["carried"]], np.ones(len(Xf))]
    return X, y, carried, kept


def _held_out_error(model) -> float:
    """Mean absolute error on the carried mixtures retrained on today's data (never fitted on)."""
    X = np.array([r["weights"] for r in FIXTURE["retrained"]])
    return float(np.mean(np.abs(model.predict(X) - np.array([r["y"] for r in FIXTURE["retrained"]]))))


@pytest.mark.timeout(300)
def test_carried_runs_that_describe_todays_data_are_kept_beside_a_few_fresh_runs():
    """4 refresh runs, 8 components: a fit on the fresh runs alone scored a lucky 0.015 in
    cross-validation and the 48 carried runs were dropped; the runs retrained on today's data show
    the carried ones were right."""
    X, y, carried, kept = _runs()
    model, report = fit_with_carried("auto", X, y, carried, kept, folds=4, seed=0)
    evidence = report.evidence
    assert evidence["carried_used"] == 48 and not evidence["dropped"] and evidence["chosen_by"] == "consistency"
    assert evidence["consistency"]["ratio"] <= CONSISTENT
    assert "describe today's data" in evidence["why"]
    retrained = {r["run_id"]: r["y"] for r in FIXTURE["retrained"]}  # the same mixtures measured twice, two builds apart
    then = {r["run_id"]: r["y"] for r in FIXTURE["carried"] if r["run_id"] in retrained}
    assert max(abs(retrained[i] - then[i]) for i in retrained) < 0.03
    alone = _fresh_only_model(X, y, carried)
    assert _held_out_error(model) < 0.5 * _held_out_error(alone)


def _fresh_only_model(X, y, carried):
    from mixforge.mixers.model_choice import fit_predictor

    return fit_predictor("auto", X[~carried], y[~carried], folds=4, seed=0)[0]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("other", ["reflected", "shuffled"])
def test_carried_runs_that_contradict_todays_runs_are_dropped_and_the_report_says_why(other):
    """The same runs with the carried figures of another corpus: reflected (the best mixture of
    then is the worst of now, a law the carried runs fit well) or shuffled among the runs (noise)."""
    X, y, carried, kept = _runs()
    then = y[carried]
    then = 2 * then.mean() - then if other == "reflected" else np.random.default_rng(0).permutation(then)
    report = fit_with_carried("auto", *_runs(carried_y=then)[:2], carried, kept, folds=4, seed=0)[1]
    evidence = report.evidence
    assert evidence["dropped"] and evidence["carried_used"] == 0 and not evidence["consistency"]["consistent"]
    if other == "reflected":  # a law, but not today's
        assert evidence["consistency"]["ratio"] > CONSISTENT and "describe other data" in evidence["why"]
    else:
        assert evidence["consistency"]["carried_cv_spearman"] < 0.5 and "describe no law" in evidence["why"]


@pytest.mark.timeout(300)
def test_below_four_fresh_runs_contradicted_carried_runs_stay_in_and_the_report_says_why():
    """A refresh budget of 3 (the least allowed): there is no fit of today's runs alone to fall back on."""
    X, y, carried, kept = _runs()
    keep = np.r_[np.ones(carried.sum(), bool), [True, True, True, False]]
    then = 2 * y[carried].mean() - y[carried]
    X, y = _runs(carried_y=then)[:2]
    evidence = fit_with_carried("auto", X[keep], y[keep], carried[keep], kept[keep], folds=3, seed=0)[1].evidence
    assert not evidence["consistency"]["consistent"] and evidence["carried_used"] == 48 and not evidence["dropped"]
    assert "cannot be fitted alone: the carried runs stay in" in evidence["why"]
