"""Merged proxies (proxy_training/merge.py) on real slice tokens: per-component runs from one
base, merged weights that are exactly the mixture's weighted average, and evaluation that gives a
component's own run figures back for its one-hot mixture."""

from __future__ import annotations

import shutil

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


@pytest.mark.timeout(300)
def test_after_a_new_component_only_its_model_trains_the_others_are_measured_as_if_retrained(tmp_path):
    config = workspace_with_tokens(tmp_path, tokens=8_000)
    cfg = load_config(config)
    cfg.proxy.base_tokens = 8_000
    first = component_runs(cfg, list(MIX))
    assert not any(r.get("trained_by") for r in first.values())

    workspace_with_tokens(tmp_path, tokens=8_000, extra=("quotes",))  # the next build: a new source, a new component
    rows = component_runs(cfg, [*MIX, "quotes"])
    assert {c: r.get("trained_by") for c, r in rows.items()} == {**{c: first[c]["run_id"] for c in MIX}, "quotes": None}
    assert all(rows[c]["run_id"] != first[c]["run_id"] for c in MIX)  # rows of today's data, not yesterday's
    assert {r["base"] for r in rows.values()} == {first["bible"]["base"]}  # the base is kept across the data change
    assert "bpb_quotes" in rows["bible"] and "bpb_quotes" not in first["bible"]  # measured on today's texts
    table = sorted((tmp_path / "ws" / "runs" / "rows").iterdir())
    again = component_runs(cfg, [*MIX, "quotes"])  # found, neither trained nor measured again
    assert {c: r["run_id"] for c, r in again.items()} == {c: r["run_id"] for c, r in rows.items()}
    assert sorted((tmp_path / "ws" / "runs" / "rows").iterdir()) == table

    # measured, yet what training again would give: a copy without the model index trains them
    shutil.copytree(tmp_path / "ws", tmp_path / "again" / "ws")
    shutil.copy(config, tmp_path / "again")
    copy = load_config(tmp_path / "again" / config.name)
    copy.proxy.base_tokens = 8_000
    shutil.rmtree(tmp_path / "again" / "ws" / "runs" / "component_models")
    for c in MIX:
        (tmp_path / "again" / "ws" / "runs" / "rows" / f"{rows[c]['run_id']}.parquet").unlink()
    retrained = component_runs(copy, [*MIX, "quotes"])
    for c in MIX:
        assert retrained[c]["run_id"] == rows[c]["run_id"] and not retrained[c].get("trained_by")
        for key in [k for k in rows[c] if k.startswith(("loss_", "bpb_", "acc_"))] + ["train_loss", "steps"]:
            assert retrained[c][key] == pytest.approx(rows[c][key], rel=1e-6), (c, key)


@pytest.mark.timeout(300)
def test_batched_component_runs_and_stacked_evaluations_equal_one_by_one(tmp_path):
    """`proxy.batched` (on CUDA by default, forced on here): the component runs train together and
    keep their final checkpoints, and merged models are scored stacked; both give what one run and
    one evaluation at a time give, up to float rounding."""
    from mixforge.proxy_training.merge import StateEvaluator

    cfgs = {}
    for mode in ("off", "on"):
        (tmp_path / mode).mkdir()
        cfgs[mode] = load_config(workspace_with_tokens(tmp_path / mode, tokens=4_000))
        cfgs[mode].proxy.base_tokens, cfgs[mode].proxy.batched, cfgs[mode].proxy.batched_group = 4_000, mode, 2
    one, together = (component_runs(cfgs[m], list(MIX)) for m in ("off", "on"))
    assert {c: r["run_id"] for c, r in one.items()} == {c: r["run_id"] for c, r in together.items()}
    for c in MIX:
        for key, value in one[c].items():
            if key.startswith(("loss_", "bpb_", "train_loss")):
                assert together[c][key] == pytest.approx(value, rel=1e-4), (c, key)
    states = {m: component_states(cfgs[m], rows) for m, rows in (("off", one), ("on", together))}
    for c in MIX:
        other = states["off"]["code" if c != "code" else "bible"]
        for n, tensor in states["off"][c].items():  # the written-out attention's rounding, grown by Adam: measured at
            drift = float((states["on"][c][n] - tensor).norm())  # most 0.4% of how far two components' models are apart
            assert drift < 0.05 * float((other[n] - tensor).norm()), (c, n)

    mixtures = [MIX, {"bible": 1.0}, {"code": 0.5, "legal": 0.5}]  # 3 states: a group of 2 and one of 1
    merged = [merged_state(states["off"], w) for w in mixtures]
    stacked = StateEvaluator(cfgs["on"]).many(merged, max_tokens=256, text="mean")
    alone = [evaluate_state(cfgs["off"], m, max_tokens=256, text="mean") for m in merged]
    assert StateEvaluator(cfgs["off"]).many(merged, max_tokens=256, text="mean") == alone  # one at a time: the same calls
    assert len({f["bpb_mean"] for f in stacked}) == 3  # each state its own figure, none mixed up
    for got, want in zip(stacked, alone):
        assert set(got) == set(want)
        for key, value in want.items():
            assert got[key] == pytest.approx(value, rel=1e-5), key
