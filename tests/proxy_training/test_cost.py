"""proxy_training/cost.py: a search's training FLOPs from its runs, new bases and online run
(end to end, with a base trained by the search: tests/mixers/test_merge_strategy.py)."""

import pytest

from conftest import workspace_with_tokens
from mixforge.config import load_config
from mixforge.proxy_training.cost import training_flops
from mixforge.proxy_training.proxy import run_flops
from mixforge.workspace import Workspace, atomic_write_json


@pytest.mark.timeout(120)
def test_runs_new_bases_and_the_online_run_are_counted_and_an_earlier_base_is_said(tmp_path):
    cfg = load_config(workspace_with_tokens(tmp_path))
    ws = Workspace(cfg.workspace_dir)
    per_run = run_flops(cfg, 512)
    assert training_flops(cfg, ws, 2, {}, {"flops": 7}, uses_base=True) == {
        "runs": 2 * per_run, "base": 0, "online": 7, "total": 2 * per_run + 7, "base_trained_earlier": True}
    atomic_write_json(ws.root / "runs" / "bases" / "b1" / "trained.json", {"tokens": 4096})  # as a finished base leaves it
    assert training_flops(cfg, ws, 0, {}, None, uses_base=True) == {
        "runs": 0, "base": run_flops(cfg, 512, 4096), "online": 0, "total": run_flops(cfg, 512, 4096)}
    assert training_flops(cfg, ws, 1, {"b1": 4096}, None, uses_base=False)["base"] == 0  # trained before this search
