"""Runs carried across builds (issue 23): a run's content (cell shares) re-expressed over the
components of a later build, by hand on a tiny case and on real builds of the slice (an append, a
re-merge, a refit), and a search after an append that trains only its refresh runs, in process
and through the scheduled flow's `--then search`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import yaml

from conftest import SLICE, SLICE_KINDS, proxies_in_turn

LABELS = ("bible", "code", "legal", "manuals")


def _records(label: str) -> list[dict]:
    return [json.loads(line) for line in (SLICE / f"{label}.jsonl").read_text().splitlines()]


def _write(path, records) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def _project(root, **search) -> "object":
    """The first 10 documents of four slice labels, 3 components, small proxies; returns the config path."""
    from mixforge.config import load_config

    for label in LABELS:
        _write(root / "data" / label / "part-000.jsonl", _records(label)[:10])
    sources = [{"path": f"data/{label}", "label": label, "kind": SLICE_KINDS[label]} for label in LABELS]
    config = root / "mixforge.yaml"
    config.write_text(yaml.safe_dump({
        "workspace": str(root / "ws"), "workers": 2, "sources": sources, "cluster": {"n_components": 3},
        "search": {"target": "bpb_mean", "candidates": 1000, "runs": 5, **search},
        "proxy": {"vocab_size": 512, "tokens": 4_000, "seq_len": 32, "batch_size": 8, "warmup_steps": 5}}))
    load_config(config)
    return config


def _today(cfg):
    from mixforge.mixers.carry import today
    from mixforge.proxy_training.runs_table import data_fingerprint
    from mixforge.workspace import Workspace

    ws = Workspace(cfg.workspace_dir)
    return today(ws, data_fingerprint(cfg, ws))


def _settings(cfg, row):
    return {**cfg.proxy.model_dump(include={"preset", "seq_len", "batch_size", "lr", "schedule", "tokens"}),
            "tokenizer_sha256": row["tokenizer_sha256"]}


@pytest.mark.timeout(60)
def test_a_run_goes_through_a_refit_by_the_documents_both_versions_assigned():
    """By hand: cluster 0 (60% of the run; 100 tokens, 10 documents) sent 80% of its tokens to new
    cluster 0 and 20% to new cluster 1; cluster 1 (40%) sent all to new cluster 1. New clusters 0
    and 1 are components A and B: the run was 0.6 x 0.8 = 0.48 A and 0.6 x 0.2 + 0.4 = 0.52 B."""
    from mixforge.mixers.carry import Today, carry

    content = {"centroids": {"version": 1, "digest": "old"}, "build": "b0001",
               "phases": [[[0, "web", 0.6, 100, 10], [1, "web", 0.4, 50, 5]]]}
    row = {"run_id": "r1", "data": "then", "content": json.dumps(content), "preset": "tiny", "seq_len": 32, "batch_size": 8,
           "lr": 1e-3, "schedule": "cosine", "tokenizer_sha256": "t", "tokens": 4000, "bpb_mean": 2.0}
    cells = pl.DataFrame({"component": ["A", "B"], "cluster": [0, 1], "source": ["web", "web"], "tokens": [80, 70], "docs": [8, 7]})
    now = Today(cells, "cluster", {0: "A", 1: "B"}, {"version": 2, "digest": "new"},
                [{"from": "old", "to": "new", "tokens": [[0, 0, 80], [0, 1, 20], [1, 1, 50]]}], "now")
    settings = {k: row[k] for k in ("preset", "seq_len", "batch_size", "lr", "schedule", "tokenizer_sha256")} | {"tokens": 4000}
    carried, skipped = carry([row], now, settings, phases=1)
    assert skipped == {} and len(carried) == 1
    assert carried[0].weights == pytest.approx({"A": 0.48, "B": 0.52})
    assert carried[0].kept == pytest.approx(1.0)  # every document's cell is still there, none smaller (8 and 2 + 5)

    gone = Today(cells.filter(pl.col("cluster") == 1).with_columns(pl.lit(35).alias("tokens"), pl.lit(3).alias("docs")),
                 "cluster", {1: "B"}, now.centroids, now.transitions, "now")  # new cluster 0 pruned, cluster 1 down to 3 of 7
    carried, _ = carry([row], gone, settings, phases=1)
    assert carried[0].weights == pytest.approx({"B": 1.0}) and carried[0].kept == pytest.approx(0.52 * 3 / 7)
    unknown = Today(cells, "cluster", {0: "A", 1: "B"}, {"version": 3, "digest": "other"}, [], "now")
    assert carry([row], unknown, settings, phases=1)[1] == {"centroids refitted without a record of where their documents went": 1}
    other = {**row, "tokenizer_sha256": "u"}  # a full rebuild retrained the tokenizer: bits per byte still compare
    assert len(carry([other], now, settings, phases=1, targets=["bpb_mean"])[0]) == 1
    assert carry([other], now, settings, phases=1, targets=["loss_mean"])[1] == {
        "trained with another tokenizer, and the target is counted in its tokens (a loss)": 1}
    assert carry([{**row, "lr": 1.0}], now, settings, phases=1)[1] == {"trained at other proxy settings": 1}
    older = {**row, "content": json.dumps({**content, "phases": [[cell[:4] for cell in content["phases"][0]]]})}
    assert carry([older], now, settings, phases=1)[0][0].measure == "tokens"  # rows recorded before documents were


@pytest.mark.timeout(900)
def test_a_run_is_carried_across_a_remerge_an_append_refits_and_a_new_source_never_as_a_result(tmp_path):
    from mixforge.config import load_config
    from mixforge.mixers.carry import carry
    from mixforge.pipelines.build import build
    from mixforge.proxy_training.proxy import run_proxy
    from mixforge.proxy_training.runs_table import RunsTable
    from mixforge.workspace import Workspace

    cfg = load_config(_project(tmp_path))
    build(cfg)
    ws = tmp_path / "ws"
    comps = sorted(json.loads((ws / "tokens" / "_stage.json").read_text())["counts"]["components"])
    mixture = dict(zip(comps, [0.5, 0.3, 0.2]))
    row = run_proxy(cfg, mixture)
    content = json.loads(row["content"])
    assert content["build"] == "b0001" and content["centroids"]["version"] == 1
    assert sum(cell[2] for cell in content["phases"][0]) == pytest.approx(1.0) and all(len(cell) == 5 for cell in content["phases"][0])
    # by hand from the build's files: each component's tokens per cluster
    index = pl.read_parquet(ws / "tokens" / "extra" / "documents.parquet").filter(pl.col("split") == "train")
    clusters = pl.concat([pl.read_parquet(f, columns=["id", "cluster"]) for f in (ws / "components" / "extra" / "components").glob("*.parquet")])
    per_cluster = index.join(clusters, on="id").group_by("component", "cluster").agg(pl.col("length").sum())

    cfg.cluster.n_components = 2  # a different merge of the same clusters
    build(cfg)
    today = _today(cfg)
    assert today.key == "cluster" and sorted(set(today.mapping.values())) == ["c00", "c01"]
    carried, skipped = carry([row], today, _settings(cfg, row), phases=1)
    expected: dict[str, float] = {}
    for comp, cluster, tokens in per_cluster.iter_rows():
        total = per_cluster.filter(pl.col("component") == comp)["length"].sum()
        new = today.mapping[cluster]
        expected[new] = expected.get(new, 0.0) + mixture[comp] * tokens / total
    assert skipped == {} and carried[0].weights == pytest.approx(expected, abs=1e-6) and carried[0].kept == pytest.approx(1.0)

    _write(tmp_path / "data" / "code" / "part-001.jsonl", _records("code")[10:14])  # an append
    build(cfg)
    carried, _ = carry([row], _today(cfg), _settings(cfg, row), phases=1)
    assert carried[0].kept == pytest.approx(1.0) and sum(carried[0].weights.values()) == pytest.approx(1.0)
    retrained = run_proxy(cfg, carried[0].weights)  # the run's own mixture, re-expressed: trained anew on today's data
    assert retrained["run_id"] != row["run_id"] and retrained["content"] != row["content"]
    assert RunsTable(Workspace(ws)).load().height == 2  # a carried run is never answered as already trained

    cfg.cluster.refit_drift = 1e-9  # any drift refits the centroids as version 2
    _write(tmp_path / "data" / "legal" / "part-001.jsonl", _records("dictionary")[:8])
    build(cfg)
    fit = json.loads((ws / "cluster" / "extra" / "fit.json").read_text())
    step = fit["transitions"][-1]
    assert fit["version"] == 2 and step["from"] == content["centroids"]["digest"] and step["from_version"] == 1
    both = sum(t for _, _, t in step["tokens"])
    assert 0 < both <= pl.concat([pl.read_parquet(f) for f in (ws / "cluster" / "extra" / "assign").glob("*.parquet")])["tokens"].sum()
    assert not (ws / "cluster" / "extra" / "assign-previous").exists()
    carried, skipped = carry([row], _today(cfg), _settings(cfg, row), phases=1)
    assert skipped == {} and sum(carried[0].weights.values()) == pytest.approx(1.0) and 0 < carried[0].kept <= 1

    settings = yaml.safe_load((tmp_path / "mixforge.yaml").read_text())  # a new source: the build reruns in full
    _write(tmp_path / "data" / "quotes" / "part-000.jsonl", _records("quotes")[:10])
    settings["sources"].append({"path": "data/quotes", "label": "quotes", "kind": SLICE_KINDS["quotes"]})
    settings["cluster"] = {"n_components": 3, "refit_drift": 1e-9}
    (tmp_path / "mixforge.yaml").write_text(yaml.safe_dump(settings))
    refitted = json.loads((ws / "cluster" / "extra" / "fit.json").read_text())
    cfg = load_config(tmp_path / "mixforge.yaml")
    build(cfg)
    fit = json.loads((ws / "cluster" / "extra" / "fit.json").read_text())
    assert fit["transitions"][:-1] == refitted["transitions"] and fit["transitions"][-1]["from"] == step["to"]
    carried, skipped = carry([row], _today(cfg), _settings(cfg, row), phases=1)  # through both refits
    assert skipped == {} and sum(carried[0].weights.values()) == pytest.approx(1.0) and 0 < carried[0].kept <= 1


def _evidence(folder) -> dict:
    return json.loads((folder / "proposal.json").read_text())["evidence"]


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_a_search_after_an_append_trains_only_its_refresh_runs_also_when_scheduled(tmp_path):
    from mixforge.config import load_config
    from mixforge.mixers.search import run_search
    from mixforge.pipelines.build import build

    config = _project(tmp_path, runs=8, refresh_runs=6)
    cfg = load_config(config)
    build(cfg)
    first, _ = run_search(cfg, proxies_in_turn(cfg), "regmix")
    assert first.evidence["trained"] == 8 and first.evidence["carried"] == 0

    _write(tmp_path / "data" / "bible" / "part-001.jsonl", _records("bible")[10:13])
    _write(tmp_path / "data" / "code" / "part-001.jsonl", _records("code")[10:12])
    script = ("import json, sys; from mixforge.flows.scheduled import scheduled_build_flow as f; "
              "print(json.dumps(f(sys.argv[1], then=['search'])))")
    run = subprocess.run([sys.executable, "-c", script, str(config)], capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    folder = json.loads(run.stdout.strip().splitlines()[-1])["search"]
    evidence = _evidence(Path(folder))
    assert evidence["carried"] == 8 and evidence["refresh_runs"] == 6 and evidence["trained"] == 6
    assert evidence["carried_from"] == ["b0001"] and evidence["carried_kept_share"] == pytest.approx(1.0)
    assert sorted(r["run_id"] for r in evidence["carried_runs"]) == sorted(first.runs_used)  # marked, with build and kept share
    report = (Path(folder) / "report.md").read_text()
    assert "6 trained, 0 reused exactly, 8 carried from earlier builds (b0001" in report
    proposal = json.loads((Path(folder) / "proposal.json").read_text())
    assert proposal["fit"]["evidence"]["fresh_runs"] == 6 and proposal["fit"]["evidence"]["carried_runs"] == 8
    assert proposal["fit"]["evidence"]["cv_spearman_without_carried"] is not None
    assert [i["runs"] for i in proposal["iterations"]] == [4, 6]  # 4 where the fit is least sure, then 2 near its proposal

    # again through the CLI: the same refresh runs, reused, none trained
    out = subprocess.run([sys.executable, "-m", "mixforge.cli", "search", str(config)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "0 trained, 6 reused exactly, 8 carried" in " ".join(out.stdout.split())


@pytest.mark.timeout(60)
@pytest.mark.parametrize("refresh", [-1, 0, 1, 2])
def test_too_few_refresh_runs_to_cross_validate_are_refused_naming_the_field(tmp_path, refresh):
    """The carried runs' weight is chosen by cross-validation on today's runs: fewer than 3 cannot
    be cross-validated (the fit crashed on 1 or 2)."""
    from mixforge.config import load_config
    from mixforge.errors import ConfigError

    with pytest.raises(ConfigError, match=r"line \d+, field `search.refresh_runs`: .*must be at least 3.*\(got "):
        _project(tmp_path, refresh_runs=refresh)
    assert load_config(_project(tmp_path, refresh_runs=3)).search.refresh_runs == 3


def test_runs_carry_only_to_searches_that_start_the_same_way():
    """proxy.init: a run from scratch is no evidence for a search whose runs continue from a base
    (nor the reverse), and a user's checkpoint only for the same checkpoint."""
    from mixforge.mixers.carry import _unfit

    settings = {"preset": "tiny", "seq_len": 32, "batch_size": 8, "lr": 1e-3, "schedule": "constant", "tokens": 64,
                "tokenizer_sha256": "t", "start": "scratch"}
    row = {k: v for k, v in settings.items() if k != "start"} | {"content": "{}"}
    assert _unfit(row, settings, 1, None) is None
    from_base = row | {"base": "b0123456789ab"}
    assert _unfit(from_base, settings, 1, None) == "trained from another starting point (proxy.init)"
    assert _unfit(from_base, settings | {"start": "base"}, 1, None) is None  # a base of an earlier build
    assert _unfit(row, settings | {"start": "base"}, 1, None) == "trained from another starting point (proxy.init)"
    mine = row | {"base": "u0123456789ab"}
    assert _unfit(mine, settings | {"start": "u0123456789ab"}, 1, None) is None
    assert _unfit(mine, settings | {"start": "ufedcba987654"}, 1, None) is not None
