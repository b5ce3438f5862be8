"""Figures that must not be silently wrong: run identities that cover the data, targets scored on
their whole text, held-out splits by id, ledgers in step with their stages, and joins after prune
that fail loudly instead of dropping documents."""

import json
import subprocess

import numpy as np
import polars as pl
import pytest
import torch

from conftest import LABELS, SLICE, mixforge_cmd, private_built, workspace_with_tokens
from mixforge.config import load_config
from mixforge.errors import LedgerError
from mixforge.proxy_training.runs_table import RunsTable
from mixforge.ledger import parquet_files
from mixforge.pipelines.build import build
from mixforge.pipelines.outputs import component_file
from mixforge.pipelines.tokens.documents import is_heldout
from mixforge.proxy_training.evaluate import heldout_loss
from mixforge.proxy_training.model import GPT, preset
from mixforge.proxy_training.proxy import data_fingerprint, run_proxy
from mixforge.pipelines.tokens.tokenizer import tokenize_components, workspace_frames
from mixforge.workspace import Workspace, read_json


@pytest.mark.timeout(300)
def test_a_run_on_other_data_is_never_returned_for_a_cached_one(tmp_path):
    config = workspace_with_tokens(tmp_path, tokens=4_000)
    cfg = load_config(config)
    ws = Workspace(cfg.workspace_dir)
    first = run_proxy(cfg, {"bible": 0.5, "code": 0.5})
    assert run_proxy(cfg, {"bible": 0.5, "code": 0.5})["run_id"] == first["run_id"]  # same data: found
    # the component "code" now holds other documents (as after a rebuild with other filters)
    other = [("code", json.loads(line)["text"]) for line in (SLICE / "legal.jsonl").read_text().splitlines()]
    train = ws.stage_dir("tokens") / "extra" / "train"
    tokenize_components(other, ws.stage_dir("tokens") / "extra" / "tokenizer.json", train)
    second = run_proxy(cfg, {"bible": 0.5, "code": 0.5})
    assert second["run_id"] != first["run_id"] and second["loss_code"] != first["loss_code"]
    assert set(RunsTable(ws).load()["run_id"]) == {first["run_id"], second["run_id"]}  # the old row stays
    # a task file's content is part of the identity too
    before = data_fingerprint(cfg, ws)
    task = ws.stage_dir("tokens") / "extra" / "tasks" / "next_line.jsonl"
    task.write_text("".join(task.read_text().splitlines(keepends=True)[:-1]))
    assert data_fingerprint(cfg, ws) != before


def _model(vocab=64, seq=8):
    torch.manual_seed(0)
    return GPT(preset("tiny", vocab_size=vocab, block_size=seq))


def test_heldout_loss_scores_every_text_token_and_adds_up():
    seq, eos = 8, 0
    rng = np.random.default_rng(0)
    # documents of random lengths, each followed by EOS; A's length is a multiple of seq_len
    def stream(n_docs):
        return np.concatenate([np.append(rng.integers(1, 64, rng.integers(3, 40)), eos) for _ in range(n_docs)])
    a, b = stream(120), stream(80)
    a = a[: (len(a) // seq) * seq]
    a[-1] = eos
    model = _model()
    loss_a, n_a = heldout_loss(model, a, seq, eos_id=eos)
    loss_b, n_b = heldout_loss(model, b, seq, eos_id=eos)
    loss_ab, n_ab = heldout_loss(model, np.concatenate([a, b]), seq, eos_id=eos)
    assert (len(a) + len(b)) // seq > 256  # longer than the 256 windows scored before
    assert n_a == int((a != eos).sum()) and n_b == int((b != eos).sum()) and n_ab == n_a + n_b
    assert loss_ab * n_ab == pytest.approx(loss_a * n_a + loss_b * n_b, rel=1e-4)  # every token, once
    capped, n_capped = heldout_loss(model, np.concatenate([a, b]), seq, eos_id=eos, max_tokens=40 * seq, seed=3)
    assert n_capped <= 40 * seq and heldout_loss(model, np.concatenate([a, b]), seq, eos_id=eos, max_tokens=40 * seq, seed=3) == (capped, n_capped)
    assert abs(capped - loss_ab) < 0.5  # a sample spread over the whole text estimates the whole


@pytest.mark.timeout(300)
def test_run_rows_say_what_their_figures_cover(tmp_path):
    config = workspace_with_tokens(tmp_path, tokens=2_000)
    cfg = load_config(config)
    ws = Workspace(cfg.workspace_dir)
    row = run_proxy(cfg, {"bible": 1.0})
    summary = ws.stage_record("tokens")["counts"]["components"]
    for c in LABELS:
        meta = read_json(ws.stage_dir("tokens") / "extra" / "heldout" / f"{c}.json")
        assert row[f"scored_tokens_{c}"] == meta["tokens"] - meta["documents"]  # every token but the EOS
        assert row[f"scored_bytes_{c}"] == summary[c]["heldout_bytes"]
    cfg.proxy.eval_max_tokens = 64
    capped = run_proxy(cfg, {"bible": 1.0})
    assert capped["run_id"] != row["run_id"] and all(capped[f"scored_tokens_{c}"] <= 64 for c in LABELS)


@pytest.mark.timeout(600)
def test_heldout_split_by_id_ledger_repair_and_joins(built, tmp_path):
    config, cfg = private_built(built, tmp_path)  # its ledger and components are damaged below
    ws = Workspace(cfg.workspace_dir)
    docs = pl.read_parquet(ws.stage_dir("tokens") / "extra" / "documents.parquet")
    expected = ["heldout" if is_heldout(i, cfg.seed, cfg.proxy.heldout_fraction) else "train" for i in docs["id"]]
    assert docs["split"].to_list() == expected and "heldout" in expected

    # a kill between publishing a stage and writing ledger.json: status and a rerun show the truth
    ledger = read_json(ws.ledger_path)
    stale = dict(ledger, dedup=dict(ledger["dedup"], docs_out=1))
    ws.ledger_path.write_text(json.dumps(stale))
    status = subprocess.run(mixforge_cmd() + ["status", str(config), "--json"], capture_output=True, text=True, timeout=120)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["stages"]["dedup"]["ledger"] == ledger["dedup"]
    build(cfg, until="dedup")  # every stage skipped, the ledger repaired
    assert read_json(ws.ledger_path) == ledger

    # a kept document without a component fails loudly instead of vanishing from the token shards
    comp_path = component_file(ws, parquet_files(ws.docs_dir("prune"))[0])
    original = comp_path.read_bytes()
    try:
        pl.read_parquet(comp_path).slice(1).write_parquet(comp_path)
        with pytest.raises(LedgerError, match="missing ids"):
            list(workspace_frames(ws))
    finally:
        comp_path.write_bytes(original)
