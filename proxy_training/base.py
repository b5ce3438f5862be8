"""The shared starting point of proxy runs (`proxy.init`).

- `scratch`: every run starts from fresh weights (RegMix's proxies; the default).
- `base`: one proxy is trained on the natural mixture (each component's share of the training
  tokens) for `proxy.base_tokens`, once per data and settings, and every run continues from it
  for `proxy.tokens` (warm-started proxies, as NVIDIA's CLIMB tutorial starts from pretrained
  checkpoints). It is trained like any run: resumable from its checkpoints under
  runs/bases/<base id>/, and its id covers the data, the tokenizer, the settings and the seed.
- a path: a checkpoint of the user's (a mixforge checkpoint, or a plain state dict of the same
  preset and vocabulary), read as tensors only; its id is the file's digest.

A run that starts from a base records the base's id in its row (`base`), and the id is part of
the run's id: another base, another run.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from mixforge.config import MixforgeConfig
from mixforge.errors import ConfigError
from mixforge.proxy_training.data import MixtureSampler
from mixforge.proxy_training.model import preset
from mixforge.proxy_training.train import TrainConfig, checkpoint_errors, checkpoints, read_checkpoint, train
from mixforge.digests import file_digest
from mixforge.workspace import Workspace, atomic_write_json, read_json

# The settings that change what a proxy learns or what its row measures; execution settings do not.
RUN_SETTINGS = {"preset", "tokens", "seq_len", "batch_size", "lr", "warmup_steps", "schedule", "max_epochs",
                "task_items", "eval_max_tokens"}
BASE_CHECKPOINTS = 4  # a killed base training loses at most a quarter of it


@dataclass
class Base:
    """A starting point: its id (recorded in runs' rows and ids, known without training) and its
    weights, trained or read when a run first needs them."""

    base_id: str
    load: Callable[[], dict]
    _state: dict | None = field(default=None, repr=False)

    def state(self) -> dict:
        if self._state is None:
            self._state = self.load()
        return self._state


def base_folder(ws: Workspace, base_id: str) -> Path:
    return ws.root / "runs" / "bases" / base_id


def bases_trained(ws: Workspace) -> dict[str, int]:
    """{base id: tokens it trained on} for the bases trained to the end in this workspace."""
    return {f.parent.name: read_json(f)["tokens"] for f in sorted((ws.root / "runs" / "bases").glob("*/trained.json"))}


def natural_mixture(shards: dict) -> dict[str, float]:
    """Each component's share of the training tokens."""
    total = sum(len(tokens) for tokens in shards.values())
    return {c: len(tokens) / total for c, tokens in sorted(shards.items())}


def base_id_for(cfg: MixforgeConfig, tokenizer_sha: str, data: str, natural: dict[str, float]) -> str:
    """The same data, tokenizer, settings and seed give the same base; any other, another."""
    settings = cfg.proxy.model_dump(include=RUN_SETTINGS - {"tokens"}) | {"base_tokens": cfg.proxy.base_tokens}
    key = json.dumps([sorted((c, round(w, 6)) for c, w in natural.items()), cfg.seed, tokenizer_sha, settings, data])
    return "b" + hashlib.sha256(key.encode()).hexdigest()[:12]


def starting_point(cfg: MixforgeConfig, ws: Workspace, summary: dict, shards: dict, data: str) -> Base | None:
    """Where this config's runs start: None for scratch, else the base (trained when first needed)."""
    init = cfg.proxy.init
    if init == "scratch":
        return None
    if init == "base":
        natural = natural_mixture(shards)
        base_id = base_id_for(cfg, summary["tokenizer"]["sha256"], data, natural)
        return Base(base_id, lambda: _trained_base(cfg, base_folder(ws, base_id), summary, shards, natural))
    path = cfg.resolve(init)
    if not path.is_file():
        raise ConfigError(f"proxy.init: {path} is not a file (use scratch, base or the path of a checkpoint)")
    return Base(start_kind(cfg), lambda: _user_checkpoint(cfg, path, summary))


def kept_base(cfg: MixforgeConfig, ws: Workspace, summary: dict, shards: dict, data: str) -> Base | None:
    """`starting_point`, except that a base (`proxy.init: base`) is kept across builds: the base
    this workspace's merges started from stays theirs while the tokenizer, the settings and the seed
    are the same, whatever the data became since (runs/bases/kept.json). A merge's component models
    must share one base, and a base is only where training starts: keeping it lets an incremental
    build train only the components whose tokens changed. Otherwise today's base, kept from then on."""
    base = starting_point(cfg, ws, summary, shards, data)
    if cfg.proxy.init != "base":
        return base
    record = ws.root / "runs" / "bases" / "kept.json"
    key = base_id_for(cfg, summary["tokenizer"]["sha256"], "", {})  # the settings, seed and tokenizer, no data
    kept = read_json(record) or {}
    if kept.get("key") == key and kept.get("base_id") != base.base_id:
        if saved := checkpoints(base_folder(ws, kept["base_id"])):  # written when the base was done
            return Base(kept["base_id"], lambda: read_checkpoint(saved[-1])["model"])

    def trained_and_kept() -> dict:
        state = base.load()
        atomic_write_json(record, {"key": key, "base_id": base.base_id, "data": data})
        return state

    return Base(base.base_id, trained_and_kept)


def start_kind(cfg: MixforgeConfig) -> str:
    """What this config's runs start from, comparable across builds: scratch, base (a base of the
    data of the day) or a user checkpoint's id."""
    init = cfg.proxy.init
    return init if init in ("scratch", "base") else "u" + file_digest(cfg.resolve(init))[:12]


def start_of(base_id: str | None) -> str:
    """start_kind of the run whose row records `base_id`."""
    return "scratch" if not base_id else "base" if base_id.startswith("b") else base_id


def _model_config(cfg: MixforgeConfig, summary: dict):
    return preset(cfg.proxy.preset, vocab_size=summary["tokenizer"]["vocab_size"], block_size=cfg.proxy.seq_len)


def _user_checkpoint(cfg: MixforgeConfig, path: Path, summary: dict) -> dict:
    """A user's checkpoint: a mixforge checkpoint or a state dict, tensors only, of this config's model shape."""
    from mixforge.proxy_training.model import GPT

    model_cfg = _model_config(cfg, summary)
    advice = (f"proxy.init names it: give a mixforge checkpoint or a state dict of tensors of proxy.preset "
              f"{cfg.proxy.preset} with a vocabulary of {model_cfg.vocab_size} and seq_len {cfg.proxy.seq_len}")
    with checkpoint_errors(path, advice):
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("model", state) if isinstance(state, dict) else state
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise ValueError("neither a mixforge checkpoint nor a state dict of tensors")
        with torch.device("meta"):
            want = {name: tuple(t.shape) for name, t in GPT(model_cfg).state_dict().items()}
        got = {name: tuple(t.shape) for name, t in state.items()}
        if wrong := sorted(set(want) ^ set(got)) or [n for n in sorted(want) if want[n] != got[n]]:
            n = wrong[0]
            raise ValueError(f"another model: {n} is {got.get(n, 'missing')} here, {want.get(n, 'absent')} in this "
                             f"config's model ({len(wrong)} tensor(s) differ)")
    return state


@contextlib.contextmanager
def _exclusive(folder: Path):
    """One process trains a base; the others (a sweep's workers) wait for it and then read it."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _trained_base(cfg: MixforgeConfig, folder: Path, summary: dict, shards: dict, natural: dict[str, float]) -> dict:
    """The base's weights: trained on the natural mixture (resumed from its last checkpoint when a
    training was killed), or read when it is done."""
    p = cfg.proxy
    sampler = MixtureSampler(shards, natural, p.seq_len, p.base_tokens, cfg.seed, max_epochs=p.max_epochs)
    steps = -(-len(sampler) // p.batch_size)
    with _exclusive(folder):
        saved = checkpoints(folder)
        last = read_checkpoint(saved[-1]) if saved else None
        if last is not None and last["step"] >= steps:
            return last["model"]
        # missing, or killed part way: train (on from the last checkpoint)
        train_cfg = TrainConfig(lr=p.lr, warmup_steps=min(p.warmup_steps, max(steps // 10, 1)), schedule=p.schedule,
                                seed=cfg.seed, device=p.device, checkpoint_every=-(-steps // BASE_CHECKPOINTS))
        model, _ = train(_model_config(cfg, summary), train_cfg, sampler.batches(p.batch_size), steps, checkpoint_dir=folder)
        for older in checkpoints(folder)[:-1]:  # resuming needs the last only; each holds the optimizer's state too
            older.unlink()
        atomic_write_json(folder / "trained.json", {"tokens": steps * p.batch_size * p.seq_len})  # its cost, for the search's
        return {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()}
