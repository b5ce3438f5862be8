"""Bad input at the CLI and the search inputs: every case is answered with exit code 2 and one
clear message naming the file and line, the field or the column, never a traceback. The cases
live in tests/fixtures/bad/cli/ (configs/, mixtures/, runs/) and read as tables below."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from conftest import FIXTURES, mixforge_cmd, workspace_with_tokens

BAD = FIXTURES / "bad" / "cli"
RUNS = BAD / "runs"


def cli(*args, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(mixforge_cmd() + [str(a) for a in args], capture_output=True, text=True, cwd=cwd, timeout=300)


def assert_user_error(r: subprocess.CompletedProcess, *fragments: str) -> None:
    assert r.returncode == 2, f"exit {r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr}"
    assert "Traceback" not in r.stderr, r.stderr
    for f in fragments:
        assert f in r.stderr, f"{f!r} not in the message:\n{r.stderr}"


# ---------------------------------------------------------------- usage errors (click's exit code 2)

USAGE = [  # id, arguments, fragments of the message
    ("tokens_zero", ["export", "m.yaml", "--config", "c.yaml", "--out", "o", "--tokens", "0"], ["--tokens", "greater than or equal to 1"]),
    ("tokens_abc", ["export", "m.yaml", "--config", "c.yaml", "--out", "o", "--tokens", "abc"], ["--tokens", "integer"]),
    ("unknown_option", ["status", "c.yaml", "--bogus"], ["--bogus"]),
    ("missing_argument", ["status"], ["Missing argument 'config'"]),
    ("missing_option", ["search", "fit", "--runs", "x.csv"], ["--target"]),
    ("unknown_command", ["frobnicate"], ["frobnicate"]),
    ("unknown_subcommand", ["proxy", "frobnicate"], ["frobnicate"]),
    ("runs_zero", ["proxy", "sweep", "c.yaml", "--runs", "0"], ["--runs", "greater than or equal to 1"]),
    ("search_runs_one", ["search", "c.yaml", "--runs", "1"], ["--runs", "greater than or equal to 2"]),
    ("verify_seeds_zero", ["search", "verify", "c.yaml", "--seeds", "0"], ["--seeds", "greater than or equal to 1"]),
    ("seed_negative", ["proxy", "train", "c.yaml", "--mixture", "m.yaml", "--seed", "-1"], ["--seed", "greater than or equal to 0"]),
]


@pytest.mark.parametrize("args,fragments", [c[1:] for c in USAGE], ids=[c[0] for c in USAGE])
def test_usage_error_is_a_message(tmp_path, args, fragments):
    assert_user_error(cli(*args, cwd=tmp_path), *fragments)


# ---------------------------------------------------------------- config files

CONFIGS = [  # fixture, fragments of the message (file name is checked for every case)
    ("seed_negative.yaml", ["line 3", "`seed`", "-1"]),
    ("dedup_seed_negative.yaml", ["line 5", "`dedup.seed`", "-3"]),
    ("n_clusters_zero.yaml", ["line 5", "`cluster.n_clusters`", "0"]),
    ("n_components_zero.yaml", ["line 5", "`cluster.n_components`"]),
    ("export_tokens_zero.yaml", ["line 5", "`export.tokens`"]),
    ("proxy_tokens_zero.yaml", ["line 5", "`proxy.tokens`"]),
    ("embed_batch_size_zero.yaml", ["line 5", "`embed.batch_size`"]),
    ("non_utf8.yaml", ["not UTF-8", "byte 0xe9 at byte offset 27", "line 3"]),
    ("workspace_is_file.yaml", ["a_file.txt", "is a file", "workspace"]),
]


@pytest.mark.parametrize("name,fragments", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_bad_config_is_rejected_at_load(tmp_path, name, fragments):
    config = tmp_path / name
    shutil.copy(BAD / "configs" / name, config)
    (tmp_path / "a_file.txt").write_text("a file, not a folder\n")
    assert_user_error(cli("status", config), name, *fragments)
    assert not (tmp_path / "ws").exists()


@pytest.mark.parametrize("config", [["mixforge.yaml"], ["--demo"]], ids=["config", "demo"])
def test_workspace_option_pointing_at_a_file(tmp_path, config):
    (tmp_path / "mixforge.yaml").write_text("sources:\n  - path: unused.jsonl\n")
    (tmp_path / "a_file.txt").write_text("a file, not a folder\n")
    r = cli("build", *config, "--workspace", "a_file.txt", cwd=tmp_path)
    assert_user_error(r, "a_file.txt", "is a file", "--workspace")


# ---------------------------------------------------------------- mixture files (proxy train, errors before training)

MIXTURES = [  # fixture, fragments of the message (file name is checked for every case)
    ("int_key.yaml", ["'0'", "bible, code, legal"]),
    ("unknown.yaml", ["'wikipedia'", "bible, code, legal"]),
    ("nan.yaml", ["'bible'", "nan"]),
    ("inf.yaml", ["'bible'", "inf"]),
    ("negative.yaml", ["'bible'", "-0.5", "negative"]),
    ("all_zero.yaml", ["sum to 0"]),
    ("string_weight.yaml", ["'bible'", "'0.5'", "not a number"]),
    ("bool_weight.yaml", ["'bible'", "True", "not a number"]),
    ("empty.yaml", ["no weights"]),
    ("non_utf8.yaml", ["not UTF-8", "byte 0xe9 at byte offset 14 (line 2, column 4)"]),
]


@pytest.fixture(scope="module")
def token_workspace(tmp_path_factory) -> Path:
    return workspace_with_tokens(tmp_path_factory.mktemp("mixtures"))


@pytest.mark.parametrize("name,fragments", MIXTURES, ids=[c[0] for c in MIXTURES])
def test_bad_mixture_file_fails_before_training(token_workspace, name, fragments):
    r = cli("proxy", "train", token_workspace, "--mixture", BAD / "mixtures" / name)
    assert_user_error(r, name, *fragments)
    assert not (token_workspace.parent / "ws" / "runs").exists(), "a run was trained"


def test_integer_mixture_key_names_a_component(tmp_path):
    from mixforge.mixers.mixture_file import read_mixture

    path = tmp_path / "m.yaml"
    path.write_text("0: 0.25\n1: 0.75\n")  # YAML reads these keys as integers
    assert read_mixture(path, components=["0", "1", "2"])[0] == {"0": 0.25, "1": 0.75}


def test_cuda_device_without_cuda_is_a_config_error(token_workspace):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    import yaml

    data = yaml.safe_load(token_workspace.read_text())
    data["proxy"]["device"] = "cuda"
    config = token_workspace.parent / "cuda.yaml"
    config.write_text(yaml.safe_dump(data))
    mixture = token_workspace.parent / "uniform.yaml"
    mixture.write_text("bible: 0.5\ncode: 0.5\n")
    assert_user_error(cli("proxy", "train", config, "--mixture", mixture), "proxy.device", "cuda")
    assert not (token_workspace.parent / "ws" / "runs").exists(), "a run was trained"


# ---------------------------------------------------------------- runs tables (search fit)

RUNS_CASES = [  # id, fixture, target and options, exit code, fragments of stderr
    ("few_runs", "few_runs.csv", ["loss_mean"], 2, ["few_runs.csv", "5 usable run(s)", "at least 8"]),
    ("constant_target", "constant_target.csv", ["loss_mean"], 2, ["constant_target.csv", "'loss_mean'", "every run"]),
    ("missing_target", "named_targets.csv", ["nope"], 2, ["named_targets.csv", "nope", "not found"]),
    ("non_numeric_weights", "non_numeric_weights.csv", ["loss_mean"], 2, ["non_numeric_weights.csv", "'w_c03'", "not numbers"]),
    ("inf_target", "inf_target.csv", ["loss_mean"], 2, ["inf_target.csv", "'loss_mean'", "infinite", "r606edf7a0a03", "r16b7bb611b5d"]),
    ("ambiguous_direction", "named_targets.csv", ["f1_loss"], 2, ["f1_loss", "--maximize", "search.maximize"]),
    ("unknown_direction", "named_targets.csv", ["score"], 2, ["score", "--maximize", "search.maximize"]),
    ("crlf_line_endings", "crlf.csv", ["loss_mean"], 0, []),
    ("loss_anywhere", "named_targets.csv", ["pile_cc_val_loss"], 0, []),
    ("acc_anywhere", "named_targets.csv", ["hellaswag_acc"], 0, []),
    ("direction_given", "named_targets.csv", ["score", "--maximize"], 0, []),
]


@pytest.mark.parametrize("name,target,code,fragments", [c[1:] for c in RUNS_CASES], ids=[c[0] for c in RUNS_CASES])
def test_runs_table_case(name, target, code, fragments):
    r = cli("search", "fit", "--runs", RUNS / name, "--target", *target, "--json")
    if code:
        assert_user_error(r, *fragments)
        return
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    out = json.loads(r.stdout)
    assert out["runs"] == 12
    expected_lower = {"loss_mean": True, "pile_cc_val_loss": True, "hellaswag_acc": False, "score": False}[target[0]]
    assert out["lower_is_better"] is expected_lower


def test_weights_near_one_are_normalised_with_one_line(tmp_path):
    """512 runs whose weights sum to within 1% of 1 (rounded shares) give one summary line; the 3
    runs further off keep the warning that lists them."""
    demo = pl.read_parquet(FIXTURES / "demo_runs.parquet")
    w_cols = [c for c in demo.columns if c.startswith("w_")]
    rng = np.random.default_rng(0)
    rows = demo[rng.integers(0, demo.height, 512).tolist()]
    scale = 1 + rng.choice([-1, 1], 512) * rng.uniform(0.002, 0.009, 512)  # off by 0.2% to 0.9%
    scale[:3] = 1.5
    table = rows.with_columns([pl.col(c) * pl.Series(scale) for c in w_cols]).with_columns(
        pl.Series("run_id", [f"run{i}" for i in range(512)]))
    path = tmp_path / "runs.parquet"
    table.write_parquet(path)
    r = cli("search", "fit", "--runs", path, "--target", "loss_mean", "--json")
    assert r.returncode == 0, r.stderr
    lines = [l for l in r.stderr.splitlines() if "normalised" in l]
    assert len(lines) == 2, r.stderr
    assert "509 runs' weights summed to within 1% of 1 and were normalised" in r.stderr
    assert "run0, run1, run2" in r.stderr and "1.5" in r.stderr


DIRECTIONS = [  # metric, +1 lower is better / -1 higher is better
    ("pile_cc_val_loss", 1), ("val_ppl", 1), ("test-perplexity", 1), ("bpb_mean", 1), ("loss_c00", 1),
    ("train_loss", 1), ("acc_norm", -1), ("hellaswag_acc", -1), ("pass@1", -1), ("humaneval.pass@10", -1),
    ("squad_f1", -1), ("exact_match", -1), ("acc_next_line", -1),
]


@pytest.mark.parametrize("metric,sign", DIRECTIONS, ids=[d[0] for d in DIRECTIONS])
def test_direction_from_the_name(metric, sign):
    from mixforge.mixers.objective import direction

    assert direction(metric) == sign


@pytest.mark.parametrize("metric", ["f1_loss", "score", "match", "lossy_score", "passes"])
def test_direction_needs_maximize(metric):
    from mixforge.errors import ConfigError
    from mixforge.mixers.objective import direction

    with pytest.raises(ConfigError, match="maximize"):
        direction(metric)
    assert direction(metric, maximize=True) == -1
