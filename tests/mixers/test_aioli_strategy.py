"""The aioli strategy on real slice tokens: one online run whose rounds become the proposed
schedule (pinned and within the bounds after every update), its average the proposal, both
verified with fresh proxies, and a schedule that `mixforge export` reads as phases."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import proxies_in_turn, workspace_with_tokens
from mixforge.config import load_config
from mixforge.errors import ConfigError
from mixforge.mixers.mixture_file import read_mixture
from mixforge.mixers.search import run_search, verify


@pytest.mark.timeout(600)
def test_aioli_proposes_the_schedule_it_followed_within_the_bounds_and_verifies_it(tmp_path):
    cfg = load_config(workspace_with_tokens(tmp_path, tokens=8_192))
    cfg.search.target, cfg.search.aioli_eval_tokens, cfg.search.verify_seeds = "bpb_mean", 256, 1
    cfg.search.pin, cfg.search.max_share = {"legal": 0.2}, {"code": 0.5}
    proposal, folder = run_search(cfg, proxies_in_turn(cfg), "aioli")

    phases = [p["weights"] for p in proposal.schedule]
    assert len(phases) == cfg.search.aioli_rounds == 4 and proposal.runs_used == []
    assert [(p["start_fraction"], p["end_fraction"]) for p in proposal.schedule] == [(0, .25), (.25, .5), (.5, .75), (.75, 1)]
    for w in phases:  # every round's update kept the pin and the cap
        assert w["legal"] == pytest.approx(0.2) and w["code"] <= 0.5 + 1e-6 and sum(w.values()) == pytest.approx(1, abs=1e-5)
    assert len({tuple(w.values()) for w in phases}) > 1  # it moved
    mean = {c: np.mean([w[c] for w in phases]) for c in phases[0]}
    assert proposal.weights == pytest.approx(mean, abs=2e-6)  # the proposal: the schedule's token shares
    assert proposal.online["tokens"] == 8_192 and np.isfinite(proposal.online["observed"])
    assert "## The online run" in (folder / "report.md").read_text()

    weights, provenance = read_mixture(folder)  # what `mixforge export` reads: one export per phase
    assert [p["weights"] for p in provenance["schedule"]] == phases and weights == proposal.weights

    checked = verify(cfg, proxies_in_turn(cfg), folder)
    assert {"proposal", "schedule", "uniform", "natural"} <= set(checked["results"])  # the average and the schedule, fresh
    assert all(np.isfinite(r["mean"]) for r in checked["results"].values())


def test_aioli_needs_a_held_out_target(tmp_path):
    cfg = load_config(workspace_with_tokens(tmp_path))
    cfg.search.target = "acc_next_line"
    with pytest.raises(ConfigError, match="aioli strategy measures its model on held-out text"):
        run_search(cfg, proxies_in_turn(cfg), "aioli")
