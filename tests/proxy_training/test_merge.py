"""Merged proxies (proxy_training/merge.py) on real slice tokens: per-component runs from one
base, merged weights that are exactly the mixture's weighted average, and evaluation that gives a
component's own run figures back for its one-hot mixture."""

from __future__ import annotations

import pytest
import torch

from conftest import workspace_with_tokens
from mixforge.config import load_config
from mixforge.pipelines.outputs import tokens_dir
from mixforge.proxy_training.base import starting_point
from mixforge.proxy_training.data import load_shards
from mixforge.proxy_training.merge import component_runs, component_states, evaluate_state, merge_config, merged_state
from mixforge.proxy_training.runs_table import checked_tokens_summary, data_fingerprint
from mixforge.workspace import Workspace

MIX = {"bible": 0.5, "code": 0.3, "legal": 0.2}


@pytest.mark.timeout(300)
def test_merged_weights_are_the_mixtures_average_and_evaluate_like_a_run(tmp_path):
    cfg = load_config(workspace_with_tokens(tmp_path))
    assert cfg.proxy.init == "scratch"  # a merge starts from the shared base all the same
    cfg.proxy.base_tokens = 8_000
    rows = component_runs(cfg, list(MIX))
    assert len({r["base"] for r in rows.values()}) == 1 and rows["bible"]["w_bible"] == 1.0 == rows["code"]["w_code"]
    assert component_runs(cfg, list(MIX)) == rows  # found, not retrained
    states = component_states(cfg, rows)

    merged = merged_state(states, MIX)
    for name, tensor in merged.items():  # exactly the weighted average (summed in float64)
        assert torch.equal(tensor, sum(w * states[c][name].double() for c, w in MIX.items()).float()), name
    ws = Workspace(cfg.workspace_dir)
    base = starting_point(merge_config(cfg), ws, checked_tokens_summary(ws), load_shards(tokens_dir(ws) / "train"),
                          data_fingerprint(cfg, ws)).state()
    arithmetic = merged_state(states, MIX, base=base)  # base + sum w (theta - base): the same on the simplex
    assert all(torch.allclose(arithmetic[n], merged[n], rtol=0, atol=1e-6) for n in merged)
    further = merged_state(states, MIX, base=base, scale=2.0)
    assert all(torch.allclose(further[n], 2 * merged[n] - base[n], rtol=0, atol=1e-5) for n in merged)

    alone = evaluate_state(cfg, merged_state(states, {"code": 1.0}))  # a one-hot merge is the component's model
    assert set(alone) >= {"loss_bible", "bpb_code", "loss_mean", "bpb_mean"}
    for key, value in alone.items():
        assert rows["code"][key] == pytest.approx(value, rel=1e-9, abs=1e-9), key
    figures = evaluate_state(cfg, merged)
    assert figures["bpb_mean"] != alone["bpb_mean"]
    sampled = evaluate_state(cfg, merged, max_tokens=64)  # the declared windows: 2 of 32 tokens per text
    assert all(sampled[k] <= 64 for k in sampled if k.startswith("scored_tokens_"))
    assert all(sampled[k] < figures[k] for k in sampled if k.startswith("scored_tokens_"))
