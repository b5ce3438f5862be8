"""Phase boundaries (issue 23, item 6): `search.phase_ends` / `search fit --phase-ends` give a
multi-phase schedule phases of unequal length (Marin's swarm: 80% then 20% of training). The
sampler, proxy runs and their ids, regmix and verify, `search fit` and the schedule export follow
them; equal phases stay the default and keep today's run ids.

MIXFORGE_FUZZ_EXAMPLES scales the number of examples of the config fuzz (CI runs the seeded default)."""

import json
import os
import subprocess

import numpy as np
import polars as pl
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import proxies_in_turn, FIXTURES, mixforge_cmd, slice_token_streams, workspace_with_tokens
from mixforge.config import load_config
from mixforge.errors import ConfigError, MixforgeError
from mixforge.mixers.fit_table import fit_table
from mixforge.mixers.search import run_search, verify
from mixforge.proxy_training.data import MixtureSampler
from mixforge.proxy_training.proxy import run_id_for, run_proxy
from mixforge.proxy_training.runs_table import RunsTable
from mixforge.workspace import Workspace

EXAMPLES = int(os.environ.get("MIXFORGE_FUZZ_EXAMPLES", "150"))
FUZZ = settings(derandomize=True, max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
EARLY, LATE = {"bible": 1.0}, {"code": 1.0}  # one component per phase: a sequence's component says its phase


def _config(folder, search: dict):
    path = folder / "mixforge.yaml"
    path.write_text(yaml.safe_dump({"workspace": "ws", "sources": [{"path": "a.jsonl"}], "search": search}))
    return path


fraction = st.floats(min_value=0, max_value=1, exclude_min=True, exclude_max=True)
good_ends = st.lists(fraction, min_size=0, max_size=5, unique=True).map(lambda xs: sorted(xs) + [1.0])
not_a_number = st.one_of(st.text(max_size=5), st.none(), st.booleans(), st.lists(st.integers(), max_size=2),
                         st.sampled_from([float("nan"), float("inf")]))
bad_ends = st.one_of(
    good_ends.filter(lambda e: len(e) > 1).map(lambda e: e[:-2] + [e[-1], e[-2]]),  # not increasing
    good_ends.filter(lambda e: len(e) > 1).map(lambda e: e[:1] + e),  # an end twice
    st.tuples(good_ends, st.one_of(st.floats(max_value=0), st.floats(min_value=1, exclude_min=True)),
              st.integers(0, 5)).map(lambda t: t[0][:t[2]] + [t[1]] + t[0][t[2]:]),  # an end outside (0, 1]
    good_ends.map(lambda e: e[:-1] or [0.5]),  # the last end is not 1
    st.tuples(good_ends, not_a_number, st.integers(0, 5)).map(lambda t: t[0][:t[2]] + [t[1]] + t[0][t[2]:]),  # not a number
    st.one_of(st.floats(), st.text(max_size=5), st.dictionaries(st.text(max_size=3), st.floats(), max_size=2), st.just([])),  # not a list
)


@pytest.mark.timeout(300)
@FUZZ
@given(ends=good_ends, bad=bad_ends, off=st.integers(1, 3))
def test_config_phase_ends_load_or_fail_naming_the_field(tmp_path, ends, bad, off):
    cfg = load_config(_config(tmp_path, {"phases": len(ends), "phase_ends": ends}))
    assert cfg.search.phase_ends == ends and load_config(_config(tmp_path, {"phases": len(ends)})).search.phase_ends is None
    for search in ({"phases": len(bad) if isinstance(bad, list) and bad else 2, "phase_ends": bad},  # a bad list
                   {"phases": len(ends) + off, "phase_ends": ends}):  # a good list, one end per phase missing
        with pytest.raises(ConfigError, match=r"line \d+, field `search.phase_ends`: .*\(got ") as err:
            load_config(_config(tmp_path, search))
        assert "\n  ... and" not in str(err.value) and len(str(err.value)) < 600


@pytest.mark.timeout(120)
def test_sampler_trains_each_phase_its_share_of_the_sequences(tmp_path):
    _, streams = slice_token_streams(tmp_path)
    s = MixtureSampler(streams, [EARLY, LATE], seq_len=64, token_budget=201 * 64, seed=0, phase_ends=[0.8, 1.0])
    comps = s.components()
    assert comps[:161] == ["bible"] * 161 and comps[161:] == ["code"] * 40  # 160.8 of 201 sequences: largest remainder
    assert s.weights == pytest.approx({"bible": 0.8, "code": 0.2})  # the phases' length-weighted mean
    assert s.summary()["phase_ends"] == [0.8, 1.0] and s.summary()["components"]["bible"]["sequences"] == 161
    equal = MixtureSampler(streams, [EARLY, LATE], seq_len=64, token_budget=201 * 64, seed=0)
    assert equal.components().count("bible") == 101 and equal.summary()["phase_ends"] == [0.5, 1.0]  # the default: equal
    for ends in ([0.8], [0.8, 0.9], [1.0, 1.0], [0.0, 1.0]):
        with pytest.raises(MixforgeError, match="phase ends"):
            MixtureSampler(streams, [EARLY, LATE], seq_len=64, token_budget=201 * 64, seed=0, phase_ends=ends)


@pytest.mark.timeout(300)
def test_a_proxy_run_trains_and_records_its_phase_ends_under_its_own_id(tmp_path):
    cfg = load_config(workspace_with_tokens(tmp_path, tokens=2_000))
    cfg.search.phases, cfg.search.phase_ends = 2, [0.8, 1.0]
    schedule = [{"bible": 0.6, "code": 0.4}, {"code": 0.5, "legal": 0.5}]
    row = run_proxy(cfg, schedule)
    assert json.loads(row["phase_ends"]) == [0.8, 1.0] and json.loads(row["phases"])[1]["legal"] == 0.5
    assert (row["w_bible"], row["w_code"], row["w_legal"]) == pytest.approx((0.48, 0.42, 0.1))  # 0.8 x phase 0 + 0.2 x phase 1
    cfg.search.phase_ends = None  # equal phases: another run, with no phase_ends, under the id equal phases always had
    equal = run_proxy(cfg, schedule)
    assert equal["run_id"] != row["run_id"] and equal.get("phase_ends") is None
    assert equal["w_legal"] == pytest.approx(0.25)
    sha, data = "tokenizer-sha", "data"
    assert run_id_for(cfg, schedule, 0, sha, data, [0.5, 1.0]) == run_id_for(cfg, schedule, 0, sha, data)
    assert run_id_for(cfg, schedule, 0, sha, data, [0.8, 1.0]) != run_id_for(cfg, schedule, 0, sha, data)
    assert run_id_for(cfg, schedule[0], 0, sha, data, [0.8, 1.0]) == run_id_for(cfg, schedule[0], 0, sha, data)
    table = RunsTable(Workspace(cfg.workspace_dir)).load()
    assert table.height == 2 and set(table["phase_ends"].to_list()) == {"[0.8, 1.0]", None}
    cfg.search.phases, cfg.search.phase_ends = 3, [0.2, 0.8, 1.0]
    with pytest.raises(ConfigError, match=r"search.phase_ends \[0.2, 0.8, 1.0\] ends 3 phases; this schedule has 2"):
        run_proxy(cfg, schedule)


@pytest.mark.timeout(300)
def test_checkpoints_for_influences_phases_are_saved_at_the_phase_ends(tmp_path):
    from mixforge.proxy_training.proxy import checkpoint_dir
    from mixforge.proxy_training.train import checkpoints, read_checkpoint

    cfg = load_config(workspace_with_tokens(tmp_path, tokens=2_000))
    cfg.search.phases, cfg.search.phase_ends = 2, [0.8, 1.0]
    row = run_proxy(cfg, {"bible": 0.5, "code": 0.5}, checkpoints=2)  # what influence asks for: one checkpoint per phase
    saved = [read_checkpoint(f)["step"] for f in checkpoints(checkpoint_dir(Workspace(cfg.workspace_dir), row["run_id"]))]
    assert saved == [round(0.8 * row["steps"]), row["steps"]]



@pytest.mark.timeout(600)
def test_regmix_proposes_and_verify_trains_a_schedule_with_the_configs_phase_ends(tmp_path):
    cfg = load_config(workspace_with_tokens(tmp_path, tokens=2_000))
    cfg.search.target, cfg.search.runs, cfg.search.candidates, cfg.search.top_k = "bpb_code", 6, 500, 16
    cfg.search.phases, cfg.search.phase_ends = 2, [0.8, 1.0]
    proposal, folder = run_search(cfg, proxies_in_turn(cfg), "regmix")
    assert [(ph["start_fraction"], ph["end_fraction"]) for ph in proposal.schedule] == [(0.0, 0.8), (0.8, 1.0)]
    weighted = {c: 0.8 * proposal.schedule[0]["weights"][c] + 0.2 * proposal.schedule[1]["weights"][c] for c in proposal.weights}
    assert proposal.weights == pytest.approx(weighted, abs=2e-6)
    runs = RunsTable(Workspace(cfg.workspace_dir)).load().filter(pl.col("run_id").is_in(proposal.runs_used))
    assert runs.height == 6 and set(runs["phase_ends"]) == {"[0.8, 1.0]"}
    checked = verify(cfg, proxies_in_turn(cfg), folder, seeds=1)
    trained = RunsTable(Workspace(cfg.workspace_dir)).load().filter(pl.col("run_id") == checked["results"]["schedule"]["run_ids"][0])
    assert trained["phase_ends"][0] == "[0.8, 1.0]" and checked["results"]["schedule"]["predicted"] == pytest.approx(proposal.predicted)
    assert checked["results"]["proposal"]["predicted"] is not None  # a single mixture: the same mixture in every phase
    cfg.search.phase_ends = None
    with pytest.raises(ConfigError, match=r"phases end at \[0.8, 1.0\] .* set search.phase_ends: \[0.8, 1.0\]"):
        verify(cfg, proxies_in_turn(cfg), folder, seeds=1)


def _phased_table(path):
    """The demo's 48 real runs as 2-phase schedules: run i's mixture then run i+1's, run i's bpb."""
    runs = pl.read_parquet(FIXTURES / "demo_runs.parquet")
    comps = [c for c in runs.columns if c.startswith("w_")]
    nxt = runs.select(comps).to_numpy()[np.r_[1:runs.height, 0]]
    table = runs.select("run_id", "bpb_reference", *[pl.col(c).alias(f"phase0_{c}") for c in comps]).with_columns(
        pl.Series(f"phase1_{c}", nxt[:, j]) for j, c in enumerate(comps))
    table.write_parquet(path)
    return [c[2:] for c in comps]


@pytest.mark.timeout(300)
def test_search_fit_phase_ends_record_the_fractions_and_weigh_the_mixture(tmp_path):
    comps = _phased_table(tmp_path / "phased.parquet")
    run = subprocess.run(mixforge_cmd() + ["search", "fit", "--runs", str(tmp_path / "phased.parquet"), "--target", "bpb_reference",
                                           "--predictor", "linear", "--candidates", "2000", "--phase-ends", "0.8,1.0", "--json"],
                         capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-2000:]
    out = json.loads(run.stdout)
    assert [(ph["start_fraction"], ph["end_fraction"]) for ph in out["schedule"]] == [(0.0, 0.8), (0.8, 1.0)]
    first, second = (np.array([ph["weights"][c] for c in comps]) for ph in out["schedule"])
    assert np.allclose([out["proposal"][c] for c in comps], 0.8 * first + 0.2 * second, atol=2e-6)
    equal = fit_table(tmp_path / "phased.parquet", "bpb_reference", predictor="linear", candidates=2000)
    assert [ph["end_fraction"] for ph in equal["schedule"]] == [0.5, 1.0]
    # the fit over the phases and the proposed phases are the same; only the boundaries and the overall mixture differ
    assert [ph["weights"] for ph in equal["schedule"]] == [ph["weights"] for ph in out["schedule"]]
    assert equal["predicted"] == pytest.approx(out["predicted"]) and equal["proposal"] != out["proposal"]
    for ends, message in (([0.5, 0.9], "not at the end of training"), ([0.3, 0.6, 1.0], "3 end\\(s\\), but .* has 2 phase"),
                          ([0.8, 0.8], "not after entry 0")):
        with pytest.raises(MixforgeError, match="--phase-ends .*" + message):
            fit_table(tmp_path / "phased.parquet", "bpb_reference", predictor="linear", candidates=2000, phase_ends=ends)
    bad = subprocess.run(mixforge_cmd() + ["search", "fit", "--runs", str(tmp_path / "phased.parquet"), "--target", "bpb_reference",
                                           "--phase-ends", "0.8;1"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "--phase-ends '0.8;1': expected numbers" in bad.stderr


@pytest.mark.timeout(600)
def test_an_80_20_schedule_exports_budgets_80_20_and_schedule_json_records_them(built, tmp_path):
    config, cfg, _ = built
    comps = sorted(json.loads((cfg.workspace_dir / "tokens" / "_stage.json").read_text())["counts"]["components"])
    first, second = dict(zip(comps, [0.4, 0.3, 0.2, 0.1])), dict(zip(comps, [0.1, 0.2, 0.3, 0.4]))
    fit = {"proposal": {c: 0.8 * first[c] + 0.2 * second[c] for c in comps}, "fit": {},
           "schedule": [{"start_fraction": 0.0, "end_fraction": 0.8, "weights": first},
                        {"start_fraction": 0.8, "end_fraction": 1.0, "weights": second}]}
    (tmp_path / "fit.json").write_text(json.dumps(fit))
    out = tmp_path / "export"
    run = subprocess.run(mixforge_cmd() + ["export", str(tmp_path / "fit.json"), "-c", str(config), "--out", str(out),
                                           "--format", "jsonl", "--tokens", "10000"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    record = json.loads((out / "schedule.json").read_text())
    assert [(p["start_fraction"], p["end_fraction"]) for p in record["phases"]] == [(0.0, 0.8), (0.8, 1.0)]
    budgets = [json.loads((out / p["folder"] / "manifest.json").read_text())["token_budget"] for p in record["phases"]]
    assert budgets == [8000, 2000]
    # a trainer switches mixtures where phase 0's shards end (whole documents: a small budget overshoots)
    tokens = [p["tokens"] for p in record["phases"]]
    assert record["phases"][0]["end_token"] == tokens[0] == record["phases"][1]["start_token"] and tokens[0] > tokens[1]
    check = subprocess.run(mixforge_cmd() + ["verify", str(out)], capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stdout + check.stderr
