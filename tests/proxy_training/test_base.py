"""proxy.init: runs that continue from a shared base (trained once on the natural mixture,
resumable) or from a user's checkpoint (tensors only), on real slice tokens."""

from __future__ import annotations

import hashlib
import itertools
import pickle
import shutil

import pytest
import torch

from conftest import workspace_with_tokens
from mixforge.config import load_config
from mixforge.errors import ConfigError, MixforgeError
from mixforge.pipelines.outputs import tokens_dir
from mixforge.proxy_training.base import (BASE_CHECKPOINTS, base_folder, natural_mixture, start_kind, start_of,
                                          starting_point)
from mixforge.proxy_training.batched import train_many
from mixforge.proxy_training.data import MixtureSampler, load_shards
from mixforge.proxy_training.model import preset
from mixforge.proxy_training.proxy import ready_base, run_proxy
from mixforge.proxy_training.runs_table import checked_tokens_summary, data_fingerprint
from mixforge.proxy_training.train import TrainConfig, checkpoints, read_checkpoint, train
from mixforge.workspace import Workspace

MIX = {"bible": 0.7, "code": 0.3}


def _config(tmp_path, init="base"):
    config = tmp_path / "mixforge.yaml"
    cfg = load_config(config if config.exists() else workspace_with_tokens(tmp_path))
    cfg.proxy.init, cfg.proxy.base_tokens = init, 8_000
    return cfg


def _digest(state: dict) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(state.items()):
        h.update(name.encode() + tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _base(cfg):
    ws = Workspace(cfg.workspace_dir)
    shards = load_shards(tokens_dir(ws) / "train")
    return starting_point(cfg, ws, checked_tokens_summary(ws), shards, data_fingerprint(cfg, ws)), ws, shards


@pytest.mark.timeout(300)
def test_runs_continue_from_one_base_trained_once_and_start_from_its_weights(tmp_path):
    cfg = _config(tmp_path)
    first = run_proxy(cfg, MIX)
    folder = base_folder(Workspace(cfg.workspace_dir), first["base"])
    (final,) = checkpoints(folder)  # the last checkpoint only is kept once the base is done
    stamp = final.stat().st_mtime_ns
    second = run_proxy(cfg, {"bible": 0.2, "code": 0.8})
    assert second["base"] == first["base"] and first["base"].startswith("b") and final.stat().st_mtime_ns == stamp
    assert [p.name for p in (folder.parent).iterdir()] == [first["base"]]  # one base for both runs
    assert read_checkpoint(final)["step"] == -(-8_000 // (32 * 8))

    cfg.proxy.init = "scratch"
    scratch = run_proxy(cfg, MIX)
    assert "base" not in scratch and scratch["run_id"] != first["run_id"]  # another start, another run
    assert scratch["loss_mean"] > first["loss_mean"]  # 8,000 tokens more of training show

    # every run starts from the base's weights: with no learning rate, training leaves them as they were
    base, _, shards = _base(_config(tmp_path))
    state = base.state()
    model_cfg = preset("tiny", vocab_size=512, block_size=32)
    frozen = TrainConfig(lr=0.0, warmup_steps=0, seed=5)
    batches = MixtureSampler(shards, MIX, 32, 2_000, 5).batches(8)
    model, _ = train(model_cfg, frozen, batches, 3, init_state=state)
    assert _digest(model.state_dict()) == _digest(state)
    streams = [MixtureSampler(shards, MIX, 32, 2_000, s).batches(8) for s in (1, 2)]
    for stacked, _ in train_many(model_cfg, frozen, streams, 3, seeds=[1, 2], init_state=state):
        assert _digest(stacked.state_dict()) == _digest(state)


@pytest.mark.timeout(300)
def test_a_killed_base_training_resumes_to_the_same_weights(tmp_path):
    cfg = _config(tmp_path)
    whole = ready_base(cfg)
    ws = Workspace(cfg.workspace_dir)
    (done,) = checkpoints(base_folder(ws, whole))
    want = read_checkpoint(done)["model"]
    shutil.rmtree(base_folder(ws, whole))

    # what a kill after half of the steps leaves: the checkpoints up to there
    base, ws, shards = _base(cfg)
    p = cfg.proxy
    sampler = MixtureSampler(shards, natural_mixture(shards), p.seq_len, p.base_tokens, cfg.seed, max_epochs=p.max_epochs)
    steps = -(-len(sampler) // p.batch_size)
    every = -(-steps // BASE_CHECKPOINTS)
    train(preset(p.preset, vocab_size=512, block_size=p.seq_len),
          TrainConfig(lr=p.lr, warmup_steps=min(p.warmup_steps, max(steps // 10, 1)), schedule=p.schedule, seed=cfg.seed,
                      device=p.device, checkpoint_every=every),
          itertools.islice(sampler.batches(p.batch_size), 2 * every), steps, checkpoint_dir=base_folder(ws, whole))
    assert [read_checkpoint(c)["step"] for c in checkpoints(base_folder(ws, whole))] == [every, 2 * every]

    assert ready_base(cfg) == whole == base.base_id
    (resumed,) = checkpoints(base_folder(ws, whole))
    assert _digest(read_checkpoint(resumed)["model"]) == _digest(want)


@pytest.mark.timeout(300)
def test_a_users_checkpoint_is_a_base_read_as_tensors_only(tmp_path):
    cfg = _config(tmp_path)
    base_id = ready_base(cfg)
    (done,) = checkpoints(base_folder(Workspace(cfg.workspace_dir), base_id))
    mine = tmp_path / "mine.pt"
    shutil.copy(done, mine)
    plain = tmp_path / "plain.pt"
    torch.save(read_checkpoint(done)["model"], plain)

    from_checkpoint = run_proxy(_config(tmp_path, str(mine)), MIX)
    from_state = run_proxy(_config(tmp_path, str(plain)), MIX)
    from_base = run_proxy(cfg, MIX)
    assert from_checkpoint["base"] == start_kind(_config(tmp_path, str(mine))) and from_checkpoint["base"].startswith("u")
    assert len({from_checkpoint["run_id"], from_state["run_id"], from_base["run_id"]}) == 3
    assert from_checkpoint["loss_mean"] == from_state["loss_mean"] == from_base["loss_mean"]  # the same weights
    assert [start_of(r["base"]) for r in (from_base, from_checkpoint)] == ["base", from_checkpoint["base"]]

    marker = tmp_path / "ran"

    class Planted:
        def __reduce__(self):
            return open, (str(marker), "w")

    planted = tmp_path / "planted.pt"
    planted.write_bytes(pickle.dumps({"model": Planted()}))
    other = tmp_path / "other.pt"
    torch.save({k: torch.zeros(3) for k in read_checkpoint(done)["model"]}, other)
    for path, why in ((planted, "could run code"), (other, r"ValueError: another model: .* is \(3,\) here.*proxy.init names it")):
        with pytest.raises(MixforgeError, match=f"checkpoint {path}: not loaded.*{why}"):
            run_proxy(_config(tmp_path, str(path)), MIX)
    assert not marker.exists()
    with pytest.raises(ConfigError, match="proxy.init: .*missing.pt is not a file"):
        run_proxy(_config(tmp_path, str(tmp_path / "missing.pt")), MIX)
