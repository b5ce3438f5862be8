"""Proxy runs end to end on real slice text: runs table rows, skipping finished runs, atomicity
under interruption, random mixtures, the sweep flow and the CLI."""

import json
import os
import signal
import subprocess
import time

import polars as pl
import pytest
import yaml

from conftest import LABELS, SLICE, mixforge_cmd, workspace_with_tokens
from mixforge.config import load_config
from mixforge.errors import MixforgeError
from mixforge.proxy_training.runs_table import RunsTable
from mixforge.mixers.sampling import random_mixtures
from mixforge.proxy_training.proxy import run_proxy
from mixforge.pipelines.tokens.eval_tasks import usable_lines, load_task, next_line_task
from mixforge.workspace import Workspace

@pytest.mark.timeout(240)
def test_run_rows_skip_and_bad_weights(tmp_path):
    cfg = load_config(workspace_with_tokens(tmp_path))
    row = run_proxy(cfg, {"bible": 0.7, "code": 0.3})
    assert row["w_bible"] == pytest.approx(0.7) and row["w_legal"] == 0.0
    assert {"loss_bible", "bpb_code", "loss_mean", "tokenizer_sha256", "wall_s", "device", "seed", "preset"} <= set(row)
    assert row["tokens"] >= 20_000 and row["non_embedding_params"] > 1_000_000
    assert 0 <= row["acc_next_line"] <= 1
    table = RunsTable(Workspace(cfg.workspace_dir))
    again = run_proxy(cfg, {"bible": 0.7, "code": 0.3})  # same mixture and settings: found, not retrained
    assert again["run_id"] == row["run_id"] and again["created_at"] == row["created_at"]
    assert table.load().height == 1
    assert pl.read_parquet(tmp_path / "ws" / "runs" / "runs.parquet").height == 1

    with pytest.raises(MixforgeError, match="known.*bible.*code.*legal"):
        run_proxy(cfg, {"bibel": 1.0})
    with pytest.raises(MixforgeError, match="code"):
        run_proxy(cfg, {"bible": 1.0, "code": -0.5})
    cfg.proxy.tokens = 5_000_000
    with pytest.raises(MixforgeError, match="epochs"):
        run_proxy(cfg, {"bible": 1.0})


def test_random_mixtures_are_distinct_valid_and_seeded():
    counts = {"a": 100_000, "b": 50_000, "c": 5_000}
    mixes = random_mixtures(counts, 20, seed=1, budget=50_000)
    assert len({tuple(m.values()) for m in mixes}) == 20
    for m in mixes:
        assert abs(sum(m.values()) - 1) < 1e-5 and all(m[c] * 50_000 / counts[c] <= 15 for c in counts)
    assert mixes == random_mixtures(counts, 20, seed=1, budget=50_000)
    assert mixes != random_mixtures(counts, 20, seed=2, budget=50_000)
    with pytest.raises(MixforgeError, match="within 15 epochs"):
        random_mixtures({"a": 10, "b": 10}, 5, seed=0, budget=10_000)


@pytest.mark.timeout(300)
def test_an_interrupted_run_leaves_no_row(tmp_path):
    config = workspace_with_tokens(tmp_path)
    counts = json.loads((tmp_path / "ws" / "tokens" / "_stage.json").read_text())["counts"]["components"]
    budget = 14 * 3 * min(c["train_tokens"] for c in counts.values())  # 14 epochs of the smallest: ~a minute
    data = yaml.safe_load(config.read_text())
    data["proxy"]["tokens"] = budget
    config.write_text(yaml.safe_dump(data))
    mixture = tmp_path / "mix.yaml"
    mixture.write_text("bible: 1\ncode: 1\nlegal: 1\n")
    proc = subprocess.Popen(mixforge_cmd() + ["proxy", "train", str(config), "--mixture", str(mixture)],
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(8)  # into training (start-up takes ~5 s); a kill at any moment must leave no row
    assert proc.poll() is None, "the run finished before it could be interrupted"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    rows = tmp_path / "ws" / "runs" / "rows"
    assert not rows.exists() or not any(rows.iterdir())


@pytest.mark.timeout(400)
def test_cli_train_and_sweep(tmp_path):
    config = workspace_with_tokens(tmp_path, tokens=4_000)  # what the commands do, not what the proxies learn
    mixture = tmp_path / "mix.yaml"
    mixture.write_text("bible: 2\ncode: 2\n")
    run = subprocess.run(mixforge_cmd() + ["proxy", "train", str(config), "--mixture", str(mixture)],
                         capture_output=True, text=True, timeout=200)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "sum to 4, not 1: normalised" in run.stderr and "loss mean" in run.stdout
    mixture.write_text("poetry: 1\n")
    run = subprocess.run(mixforge_cmd() + ["proxy", "train", str(config), "--mixture", str(mixture)],
                         capture_output=True, text=True, timeout=200)
    assert run.returncode == 2 and "Traceback" not in run.stderr and "poetry" in run.stderr

    run = subprocess.run(mixforge_cmd() + ["proxy", "sweep", str(config), "--runs", "2"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    runs = RunsTable(Workspace(tmp_path / "ws")).load()
    assert runs.height == 3  # one trained by hand, two by the sweep
    weights = runs.select(pl.col("^w_.*$"))
    assert ((weights.sum_horizontal() - 1).abs() < 1e-5).all()
    again = subprocess.run(mixforge_cmd() + ["proxy", "sweep", str(config), "--runs", "2"], capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and RunsTable(Workspace(tmp_path / "ws")).load().height == 3  # finished runs skipped
    # in two worker processes: the two finished runs are found, the two new ones trained in parallel
    data = yaml.safe_load(config.read_text())
    data["proxy"]["processes"] = 2
    config.write_text(yaml.safe_dump(data))
    more = subprocess.run(mixforge_cmd() + ["proxy", "sweep", str(config), "--runs", "4"], capture_output=True, text=True, timeout=300)
    assert more.returncode == 0, more.stderr[-2000:]
    runs = RunsTable(Workspace(tmp_path / "ws")).load()
    assert runs.height == 5 and runs["run_id"].n_unique() == 5


def test_next_line_task_from_real_text_and_task_file_errors(tmp_path):
    docs = [(label, json.loads(l)["text"]) for label in LABELS for l in (SLICE / f"{label}.jsonl").read_text().splitlines()]
    items = next_line_task(docs, n_items=50, seed=3)
    assert len(items) == 50 and items == next_line_task(docs, n_items=50, seed=3)
    for item in items:
        assert len(item["choices"]) == 4 and len(set(item["choices"])) == 4
        window = item["context"].splitlines() + [item["choices"][item["gold"]]]
        runs = [usable_lines(t) for c, t in docs if c == item["component"]]
        # the context and the gold line stand one after another in a document of that component
        assert any(window == ls[i : i + 4] for ls in runs for i in range(len(ls) - 3))
    assert next_line_task([docs[0]], n_items=5) == []  # no other component to draw distractors from
    bad = tmp_path / "task.jsonl"
    bad.write_text(json.dumps(items[0]) + "\n" + json.dumps({"context": "x", "choices": ["a"], "gold": 0}) + "\n")
    from mixforge.errors import ConfigError

    with pytest.raises(ConfigError, match="task.jsonl:2"):
        load_task(bad)


def test_eval_text_files_are_checked(tmp_path):
    from mixforge.errors import ConfigError
    from mixforge.pipelines.tokens.stage import eval_texts

    config = tmp_path / "mixforge.yaml"
    good, bad = tmp_path / "target.jsonl", tmp_path / "broken.jsonl"
    good.write_text(json.dumps({"text": "one"}) + "\n\n" + json.dumps({"text": "two"}) + "\n")
    bad.write_text(json.dumps({"text": "fine"}) + "\n" + json.dumps({"txt": "typo"}) + "\n")
    (tmp_path / "notes.txt").write_text("a plain text file is one document")
    config.write_text(yaml.safe_dump({"sources": [{"path": "x.jsonl"}], "proxy": {"eval_texts": ["target.jsonl", "notes.txt"]}}))
    cfg = load_config(config)
    assert eval_texts(cfg, {"bible"}) == [("target", "one"), ("target", "two"), ("notes", "a plain text file is one document")]
    with pytest.raises(ConfigError, match="'notes'.*already uses"):
        eval_texts(cfg, {"notes"})
    cfg.proxy.eval_texts = ["broken.jsonl"]
    with pytest.raises(ConfigError, match="broken.jsonl:2"):
        eval_texts(cfg, set())
    cfg.proxy.eval_texts = ["missing.jsonl"]
    with pytest.raises(ConfigError, match="missing.jsonl not found"):
        eval_texts(cfg, set())
