"""Merged proxies (Scalable Data Ablation, Na et al.): one model per component, continued from the
shared base on that component alone; a candidate mixture's proxy is the components' models
combined by the mixture's weights, evaluated instead of trained.

- `component_runs`: the per-component runs (proxy runs like any other: rows in the runs table,
  found and not retrained when done), each keeping its final weights; across builds, from one
  kept base, and a component whose training tokens did not change keeps its model.
- `merged_state`: base + scale * sum_c w_c (theta_c - base). At scale 1 and weights that sum to
  1 this is the weighted average sum_c w_c theta_c itself (the two forms the paper compares are
  one and the same on the simplex); another scale extrapolates from, or shrinks towards, the base.
- `evaluate_state`: a state's loss and bits per byte on every held-out text and eval text (and
  their means over the components), as a run's row has them (on a seeded sample of windows when
  `max_tokens` caps it); `StateEvaluator.many` scores many states, stacked where proxies train batched.
- Component runs train together (`run_proxies`, each keeping its final checkpoint) where proxies
  train batched, one after another elsewhere.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import torch

from mixforge.config import MixforgeConfig
from mixforge.pipelines.outputs import tokens_dir
from mixforge.proxy_training.model import GPT, preset
from mixforge.proxy_training.base import RUN_SETTINGS, kept_base
from mixforge.proxy_training.data import load_shards
from mixforge.proxy_training.batched import ModelStack
from mixforge.proxy_training.proxy import (batch_group, batched_proxies, checkpoint_dir, remeasured, run_proxies, run_proxy,
                                           text_metrics)
from mixforge.proxy_training.runs_table import checked_tokens_summary, data_fingerprint, token_shard_digests
from mixforge.proxy_training.train import checkpoints, read_checkpoint, resolve_device
from mixforge.workspace import Workspace, atomic_write_json, read_json


def merge_config(cfg: MixforgeConfig) -> MixforgeConfig:
    """The config component runs train at: the user's starting point, or the shared base when runs
    would start from scratch (a merge needs one point every model moved away from)."""
    out = cfg.model_copy(deep=True)
    if out.proxy.init == "scratch":
        out.proxy.init = "base"
    return out


def component_runs(cfg: MixforgeConfig, components: list[str]) -> dict[str, dict]:
    """One run per component, from the kept base (`kept_base`), on that component alone (seed: the
    config's); its row, by component. Each keeps its final checkpoint (runs/checkpoints/<run id>/).
    A component whose model an earlier build trained (the same base, name, training tokens, settings
    and seed: `component_model_key`) is not trained again: that model is measured on today's data
    (`remeasured`; its row's `trained_by` names the run that trained it). After an incremental
    build, only the new and changed components train."""
    cfg = merge_config(cfg)
    ws = Workspace(cfg.workspace_dir)
    summary, digests = checked_tokens_summary(ws), token_shard_digests(ws)
    base = kept_base(cfg, ws, summary, load_shards(tokens_dir(ws) / "train"), data_fingerprint(cfg, ws))
    rows, todo = {}, {}
    for c in components:
        index = ws.root / "runs" / "component_models" / f"{component_model_key(cfg, base.base_id, c, digests, summary)}.json"
        earlier = (read_json(index) or {}).get("run_id")
        if earlier and checkpoints(checkpoint_dir(ws, earlier)):
            rows[c] = remeasured(cfg, {c: 1.0}, base, earlier)
        else:
            todo[c] = index
    if todo and batched_proxies(cfg):  # trained together in groups (`proxy.batched`: on CUDA by default)
        trained = run_proxies(cfg, [{c: 1.0} for c in todo], [cfg.seed] * len(todo), checkpoints=1, base=base)
    else:
        trained = [run_proxy(cfg, {c: 1.0}, checkpoints=1, base=base) for c in todo]
    for (c, index), row in zip(todo.items(), trained):
        rows[c] = row
        atomic_write_json(index, {"run_id": row["run_id"], "component": c})
    return {c: rows[c] for c in components}


def component_model_key(cfg: MixforgeConfig, base_id: str, component: str, digests: dict, summary: dict) -> str:
    """What a component's model depends on: the base, the component's name (its windows' generator
    is seeded by it) and training tokens, the tokenizer, the run settings and the seed."""
    key = [base_id, component, digests[f"train/{component}.bin"], summary["tokenizer"]["sha256"],
           cfg.proxy.model_dump(include=RUN_SETTINGS), cfg.seed]
    return "m" + hashlib.sha256(json.dumps(key).encode()).hexdigest()[:16]


def component_states(cfg: MixforgeConfig, rows: dict[str, dict]) -> dict[str, dict]:
    """The final weights of each component's model (read as tensors only)."""
    ws = Workspace(cfg.workspace_dir)
    return {c: read_checkpoint(checkpoints(checkpoint_dir(ws, row.get("trained_by") or row["run_id"]))[-1])["model"]
            for c, row in rows.items()}


def merged_state(states: dict[str, dict], weights: dict[str, float], base: dict | None = None,
                 scale: float = 1.0) -> dict:
    """base + scale * sum_c w_c (theta_c - base), tensor by tensor, summed in float64; without a
    base (or at scale 1 with weights summing to 1), the weighted average sum_c w_c theta_c."""
    names = next(iter(states.values())).keys()
    used = [(c, float(w)) for c, w in weights.items() if w]
    out = {}
    for name in names:
        if base is None:
            total = sum(w * states[c][name].double() for c, w in used)
        else:
            origin = base[name].double()
            total = origin + scale * sum(w * (states[c][name].double() - origin) for c, w in used)
        out[name] = total.to(next(iter(states.values()))[name].dtype)
    return out


class StateEvaluator:
    """Figures of a model's weights on held-out texts, as a run's row has them (loss_/bpb_/scored_):
    one model built once on the proxies' device, each state loaded into it; `many` scores a list of
    states, in groups of `proxy.batched_group` stacked models where proxies train batched (CUDA)."""

    def __init__(self, cfg: MixforgeConfig):
        ws = Workspace(cfg.workspace_dir)
        self.cfg, self.summary, self.folder = cfg, checked_tokens_summary(ws), tokens_dir(ws)
        p, vocab = cfg.proxy, self.summary["tokenizer"]["vocab_size"]
        self.device = resolve_device(p.device)
        self.model_cfg = preset(p.preset, vocab_size=vocab, block_size=p.seq_len)
        self.model = GPT(self.model_cfg).to(self.device)
        self.group = batch_group(cfg, vocab) if batched_proxies(cfg) else 1

    def _metrics(self, model, max_tokens: int | None, seed: int | None, text: str | None) -> dict:
        p = self.cfg.proxy
        with torch.no_grad():
            return text_metrics(model, self.folder, self.summary, p.seq_len, p.eval_max_tokens if max_tokens is None else max_tokens,
                                self.cfg.seed if seed is None else seed, text)

    def __call__(self, state: dict, max_tokens: int | None = None, seed: int | None = None, text: str | None = None) -> dict:
        """`text_metrics` of the state: `max_tokens` (default proxy.eval_max_tokens) and `seed`
        (default the config's) choose the windows scored."""
        self.model.load_state_dict(state)
        return self._metrics(self.model, max_tokens, seed, text)

    def many(self, states: list[dict], max_tokens: int | None = None, seed: int | None = None, text: str | None = None) -> list[dict]:
        """The figures of each state, as `__call__` gives them (up to float rounding where stacked)."""
        if self.group <= 1:
            return [self(state, max_tokens, seed, text) for state in states]
        out = []
        for i in range(0, len(states), self.group):
            chunk = states[i : i + self.group]
            figures = self._metrics(ModelStack(self.model_cfg, chunk, self.device), max_tokens, seed, text)
            out += [{k: float(v[j]) if np.ndim(v) else v for k, v in figures.items()} for j in range(len(chunk))]
        return out


def evaluate_state(cfg: MixforgeConfig, state: dict, max_tokens: int | None = None, seed: int | None = None,
                   text: str | None = None) -> dict:
    """`StateEvaluator(cfg)(state, ...)` once."""
    return StateEvaluator(cfg)(state, max_tokens, seed, text)
