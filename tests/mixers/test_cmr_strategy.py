"""The cmr strategy on real slice tokens: proxies continued from the base at several domain shares,
the law fitted on their checkpoints' forgetting, a proposal whose domain share is the critical
ratio within the bounds, verified against general data alone with fresh proxies."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import proxies_in_turn, workspace_with_tokens
from mixforge.config import load_config
from mixforge.errors import ConfigError
from mixforge.mixers.search import run_search, verify


@pytest.mark.timeout(600)
def test_cmr_proposes_the_critical_domain_share_and_verify_measures_its_forgetting(tmp_path):
    cfg = load_config(workspace_with_tokens(tmp_path, tokens=8_192))
    cfg.proxy.init, cfg.proxy.base_tokens = "base", 8_192
    cfg.search.cmr_domain, cfg.search.cmr_ratios, cfg.search.target, cfg.search.verify_seeds = ["code"], [0.25, 0.5, 1.0], "loss_mean", 1
    cfg.search.max_share = {"code": 0.2}  # a proposal's bound; the runs still go past it
    proposal, folder = run_search(cfg, proxies_in_turn(cfg), "cmr")

    record = proposal.cmr
    assert len(proposal.runs_used) == 4  # general alone and three domain shares, from the base
    assert {p["tokens"] for p in record["points"]} == {2_048, 4_096, 6_144, 8_192}  # one point per checkpoint
    assert record["law"]["points"] >= 3 and record["family"] == "loss"
    assert proposal.weights["code"] == pytest.approx(record["ratio"], abs=1e-5)  # the domain share is the critical ratio
    assert record["highest"] == pytest.approx(0.2) and proposal.weights["code"] <= 0.2 + 1e-9  # within the bound
    general = record["general_only"]
    assert general["code"] == 0 and proposal.weights["bible"] / proposal.weights["legal"] == pytest.approx(
        general["bible"] / general["legal"], rel=1e-4)  # the general group keeps its natural split
    assert np.isclose(record["predicted_forgetting"], record["law"]["k"] * (8_192 / record["law"]["tokens_unit"]) ** record["law"]["a"]
                      * record["ratio"] ** record["law"]["b"])
    assert (folder / "cmr.png").read_bytes()[:4] == b"\x89PNG" and "## Critical mixture ratio" in (folder / "report.md").read_text()

    checked = verify(cfg, proxies_in_turn(cfg), folder)
    v = checked["cmr"]
    assert v["forgetting"] == pytest.approx(v["general_proposal"] - v["general_only"]) and isinstance(v["within"], bool)
    assert "Verified with fresh proxies: general loss" in (folder / "report.md").read_text()


def test_cmr_continues_a_model_and_needs_its_domain_named(tmp_path):
    cfg = load_config(workspace_with_tokens(tmp_path))
    cfg.search.cmr_domain, cfg.search.target = ["code"], "loss_mean"
    with pytest.raises(ConfigError, match="Set proxy.init: base"):
        run_search(cfg, proxies_in_turn(cfg), "cmr")
    cfg.proxy.init = "base"
    for domain in ([], ["nope"], ["bible", "code", "legal"]):
        cfg.search.cmr_domain = domain
        with pytest.raises(ConfigError, match="search.cmr_domain: the domain components, some but not all"):
            run_search(cfg, proxies_in_turn(cfg), "cmr")
