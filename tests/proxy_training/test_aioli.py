"""Aioli's online run (proxy_training/aioli.py) on real slice tokens: rounds opened by one probe per
component, an exponentiated-gradient update from the measured loss drops, batches that follow the
probes and then the round's mixture exactly, and a record found again instead of retrained."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import workspace_with_tokens
from mixforge.config import load_config
from mixforge.errors import ConfigError
from mixforge.proxy_training.aioli import aioli_run, round_lengths
from mixforge.proxy_training.data import apportion

COMPONENTS = ["bible", "code", "legal"]


def test_rounds_leave_room_after_the_probes_or_say_what_to_change():
    assert round_lengths(32, 4, 3, 0.2) == ([8, 8, 8, 8], 1)
    assert round_lengths(30, 4, 3, 0.5) == ([8, 8, 7, 7], 1)
    assert round_lengths(400, 4, 3, 0.3) == ([100] * 4, 10)
    with pytest.raises(ConfigError, match="raise proxy.tokens or lower search.aioli_rounds"):
        round_lengths(12, 4, 3, 0.2)


@pytest.mark.timeout(300)
def test_the_online_run_updates_its_mixture_from_the_probes_and_trains_what_it_says(tmp_path):
    cfg = load_config(workspace_with_tokens(tmp_path, tokens=8_192))  # 32 steps of 8 x 32 tokens: 4 rounds of 8
    cfg.search.aioli_rounds, cfg.search.aioli_eval_tokens, cfg.search.aioli_eta = 4, 256, 1.5
    start = np.array([0.5, 0.25, 0.25])
    project = lambda w: w / w.sum()  # noqa: E731 (no bounds: the update itself is what is checked)
    run = aioli_run(cfg, COMPONENTS, "bpb_mean", start, project, {"test": 1})

    assert len(run["schedule"]) == len(run["rounds"]) == 4 and run["probe_steps"] == 1 and run["steps"] == 32
    w = start
    for it in run["rounds"]:  # p <- p exp(eta drop / max|drop|), from the drops it measured
        drops = np.array([it["loss_drop_per_step"][c] for c in COMPONENTS])
        w = w * np.exp(1.5 * drops / np.abs(drops).max())
        w = w / w.sum()
        assert np.allclose([it["weights"][c] for c in COMPONENTS], w, rtol=1e-12, atol=0)
    assert len({tuple(phase.values()) for phase in run["schedule"]}) == 4  # the mixture changed at every round

    # the batches: each round one probe step (8 sequences) per component, then its mixture's share of the rest
    trained = sum(apportion(np.array([phase[c] for c in COMPONENTS]), (8 - 3) * 8) + 8 for phase in run["schedule"])
    assert run["realised_shares"] == {c: round(n / 256, 6) for c, n in zip(COMPONENTS, trained.tolist())}
    assert run["tokens"] == 32 * 8 * 32 and run["flops"] > 0 and run["evaluations"] == 4 * 4
    assert np.isfinite(run["final"]["bpb_mean"])

    assert aioli_run(cfg, COMPONENTS, "bpb_mean", start, project, {"test": 1}) == run  # found, not retrained
