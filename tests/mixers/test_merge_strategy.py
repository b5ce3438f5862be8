"""The merge strategy on real slice tokens: one run per component from the base, candidates scored
by evaluating merged models under the pins and bounds, the proposal's figure that of its merged
model on the whole target, verify with fresh proxies, and after a build that adds a component, a
search that trains that component's model alone."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import proxies_in_turn, workspace_with_tokens
from mixforge.config import load_config
from mixforge.errors import ConfigError
from mixforge.mixers.search import run_search, verify
from mixforge.proxy_training.merge import component_runs, component_states, evaluate_state, merged_state
from mixforge.proxy_training.proxy import run_flops
from mixforge.proxy_training.runs_table import tokens_summary
from mixforge.workspace import Workspace



@pytest.mark.timeout(600)
def test_merge_proposes_within_the_bounds_from_merged_models_and_verifies_with_fresh_proxies(tmp_path):
    cfg = load_config(workspace_with_tokens(tmp_path, tokens=12_000))
    cfg.proxy.base_tokens = 8_000
    cfg.search.target, cfg.search.merge_candidates, cfg.search.merge_eval_tokens = "bpb_mean", 24, 256
    cfg.search.pin, cfg.search.max_share, cfg.search.verify_seeds = {"legal": 0.2}, {"code": 0.5}, 1
    proposal, folder = run_search(cfg, proxies_in_turn(cfg), "merge")

    rows = component_runs(cfg, ["bible", "code", "legal"])  # found: the search trained these, one per component
    assert proposal.runs_used == [r["run_id"] for r in rows.values()]
    w = proposal.weights
    assert w["legal"] == pytest.approx(0.2) and w["code"] <= 0.5 + 1e-9 and sum(w.values()) == pytest.approx(1, abs=1e-5)
    (it,) = proposal.iterations
    assert it["candidates"] > 8 and len(it["finalists"]) == 8
    best = min(it["finalists"], key=lambda f: f["whole"])
    assert proposal.weights == best["weights"]  # the best finalist on the whole target
    assert all(f["whole"] != f["sampled"] for f in it["finalists"])  # scored on a sample first, then on everything
    state = merged_state(component_states(cfg, rows), proposal.weights)
    assert proposal.predicted == pytest.approx(best["whole"], abs=1e-6)  # its figure: the merged model's, whole target
    assert evaluate_state(cfg, state, max_tokens=0)["bpb_mean"] == pytest.approx(proposal.predicted, rel=1e-5)

    report = (folder / "report.md").read_text()
    assert "merged model's" in report and json.loads((folder / "proposal.json").read_text())["strategy"] == "merge"
    checked = verify(cfg, proxies_in_turn(cfg), folder)
    assert checked["results"]["proposal"]["predicted"] == proposal.predicted  # beside fresh proxies' figure
    assert np.isfinite(checked["results"]["proposal"]["mean"]) and "uniform" in checked["results"]
    assert proposal.evidence["trained"] == 3 and "remeasured" not in proposal.evidence
    vocab = tokens_summary(Workspace(cfg.workspace_dir))["tokenizer"]["vocab_size"]
    per_run, base_tokens = run_flops(cfg, vocab), -(-8_000 // (32 * 8)) * 32 * 8  # the base's whole steps
    assert proposal.evidence["flops"] == {"runs": 3 * per_run, "base": run_flops(cfg, vocab, base_tokens), "online": 0,
                                          "total": 3 * per_run + run_flops(cfg, vocab, base_tokens)}
    assert "Training FLOPs: " in report

    workspace_with_tokens(tmp_path, tokens=12_000, extra=("quotes",))  # the next build adds a source
    again, folder = run_search(cfg, proxies_in_turn(cfg), "merge")
    assert again.evidence["trained"] == 1 and again.evidence["remeasured"] == 3  # only the new component trains
    assert set(again.weights) == {"bible", "code", "legal", "quotes"} and again.weights["legal"] == pytest.approx(0.2)
    assert "3 measured on today's data with an earlier build's model" in (folder / "report.md").read_text()
    assert again.evidence["flops"] == {"runs": per_run, "base": 0, "online": 0, "total": per_run, "base_trained_earlier": True}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("target", ["acc_next_line", {"bpb_bible": 1.0, "bpb_code": 1.0}])
def test_merge_needs_one_held_out_text_target(tmp_path, target):
    cfg = load_config(workspace_with_tokens(tmp_path))
    cfg.search.target = target
    with pytest.raises(ConfigError, match="merge strategy measures merged models on held-out text"):
        run_search(cfg, proxies_in_turn(cfg), "merge")
