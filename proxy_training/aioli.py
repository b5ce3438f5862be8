"""Aioli (Chen et al., ICLR'25): one proxy run that mixes online, from the mixing law it estimates
as it trains.

Training is cut into `rounds` equal rounds. Each round opens with short probes: for each component,
in a seeded order, `probe` steps on that component alone, the target's loss measured before and
after on one fixed seeded sample of its windows. The drops per step are the round's parameters of
the linear dynamic mixing law (L_next = L - sum_j A_j p_j). The mixture is then updated by an
exponentiated gradient, p_j <- p_j exp(eta A_j / max|A|), projected onto the search's bounds by
`project`, and the rest of the round trains on it. The probes train the model too (nothing is
thrown away, as in Aioli). The schedule is the rounds' mixtures.

The run is the search's own, not a row of the runs table (its mixture changed as it went): its
record (runs/aioli/<key>.json) holds the schedule, each round's drops, the realised token shares,
the final figures and the cost. A rerun with the same data, settings and bounds finds it; a killed
run starts again (its stream depends on the model, so it cannot resume mid-way).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from typing import Callable

import numpy as np

from mixforge.config import MixforgeConfig
from mixforge.errors import ConfigError
from mixforge.pipelines.outputs import tokens_dir
from mixforge.proxy_training.base import RUN_SETTINGS, starting_point
from mixforge.proxy_training.data import apportion, interleave, load_shards, window, window_starts
from mixforge.proxy_training.model import preset
from mixforge.proxy_training.proxy import text_metrics
from mixforge.proxy_training.runs_table import checked_tokens_summary, data_fingerprint
from mixforge.proxy_training.train import TrainConfig, train
from mixforge.workspace import Workspace, atomic_write_json, read_json


class _Stream:
    """Batches of a mixture from each component's windows, each component read on from where it stopped."""

    def __init__(self, shards: dict, components: list[str], seq_len: int, batch_size: int, seed: int, total: int):
        self.shards, self.components, self.seq_len, self.batch_size = shards, components, seq_len, batch_size
        self.starts = {c: window_starts(len(shards[c]), seq_len, seed, c, total) for c in components}
        self.used = dict.fromkeys(components, 0)

    def batches(self, w: np.ndarray, steps: int):
        order = interleave(apportion(np.asarray(w, dtype=float), steps * self.batch_size))
        for lo in range(0, len(order), self.batch_size):
            rows = []
            for j in order[lo : lo + self.batch_size]:
                c = self.components[j]
                rows.append(window(self.shards[c], int(self.starts[c][self.used[c]]), self.seq_len))
                self.used[c] += 1
            yield np.stack(rows)


def round_lengths(steps: int, rounds: int, components: int, probe_share: float) -> tuple[list[int], int]:
    """(steps of each round, probe steps per component): equal rounds, the probes about
    `probe_share` of a round, at least one step each, and room left to train on the mixture."""
    lengths = [steps // rounds + (r < steps % rounds) for r in range(rounds)]
    probe = max(1, int(probe_share * min(lengths) / components))
    if components * probe >= min(lengths):
        raise ConfigError(f"aioli: {rounds} rounds of {min(lengths)} steps leave no room after probing {components} components "
                          f"for {probe} step(s) each: raise proxy.tokens or lower search.aioli_rounds")
    return lengths, probe


def aioli_key(cfg: MixforgeConfig, ws: Workspace, components: list[str], target: str, start: np.ndarray, bounds: dict) -> str:
    s, summary = cfg.search, checked_tokens_summary(ws)
    key = [components, data_fingerprint(cfg, ws), summary["tokenizer"]["sha256"], cfg.proxy.model_dump(include=RUN_SETTINGS),
           cfg.proxy.init, cfg.seed, target, np.round(start, 6).tolist(), bounds,
           [s.aioli_rounds, s.aioli_probe_share, s.aioli_eta, s.aioli_eval_tokens]]
    return "a" + hashlib.sha256(json.dumps(key).encode()).hexdigest()[:12]


def aioli_run(cfg: MixforgeConfig, components: list[str], target: str, start: np.ndarray,
              project: Callable[[np.ndarray], np.ndarray], bounds: dict) -> dict:
    """The online run's record (trained now, or found): `start` the first mixture, `project` the
    nearest allowed mixture, `bounds` what `project` keeps to (part of the record's key)."""
    ws = Workspace(cfg.workspace_dir)
    path = ws.root / "runs" / "aioli" / f"{aioli_key(cfg, ws, components, target, start, bounds)}.json"
    if (found := read_json(path)) is not None:
        return found
    p, s = cfg.proxy, cfg.search
    summary, shards = checked_tokens_summary(ws), load_shards(tokens_dir(ws) / "train")
    steps = -(-math.ceil(p.tokens / p.seq_len) // p.batch_size)
    lengths, probe = round_lengths(steps, s.aioli_rounds, len(components), s.aioli_probe_share)
    stream = _Stream(shards, components, p.seq_len, p.batch_size, cfg.seed, steps * p.batch_size)
    rounds: list[dict] = []

    def measure(model) -> float:
        value = text_metrics(model, tokens_dir(ws), summary, p.seq_len, s.aioli_eval_tokens, cfg.seed,
                             target.split("_", 1)[1])[target]
        model.train()
        return value

    def online(model):
        w, rng, k = np.asarray(start, dtype=float), np.random.default_rng([cfg.seed, 13]), len(components)
        for r, length in enumerate(lengths):
            drops, before = np.zeros(k), measure(model)
            for j in rng.permutation(k):
                yield from stream.batches(np.eye(k)[j], probe)
                after = measure(model)
                drops[j], before = (before - after) / probe, after
            scale = np.abs(drops).max()
            w = project(w * np.exp(s.aioli_eta * drops / scale)) if scale > 0 else w
            rounds.append({"iteration": r + 1, "runs": 1, "steps": length, "probe_steps": probe, "target_after_probes": round(before, 6),
                           "loss_drop_per_step": dict(zip(components, drops.tolist())),
                           "weights": dict(zip(components, w.tolist()))})
            yield from stream.batches(w, length - k * probe)

    base = starting_point(cfg, ws, summary, shards, data_fingerprint(cfg, ws))
    model_cfg = preset(p.preset, vocab_size=summary["tokenizer"]["vocab_size"], block_size=p.seq_len)
    train_cfg = TrainConfig(lr=p.lr, warmup_steps=min(p.warmup_steps, max(steps // 10, 1)), schedule=p.schedule,
                            seed=cfg.seed, device=p.device)
    init_state = base.state() if base else None
    t0 = time.perf_counter()
    model, result = train(model_cfg, train_cfg, online, steps, init_state=init_state)
    used = sum(stream.used.values())
    record = {"schedule": [r["weights"] for r in rounds], "rounds": rounds, "probe_steps": probe,
              "realised_shares": {c: round(n / used, 6) for c, n in stream.used.items()},
              "final": text_metrics(model, tokens_dir(ws), summary, p.seq_len, p.eval_max_tokens, cfg.seed),
              "train_loss": result.final_loss, "tokens": result.tokens, "steps": result.steps,
              "flops": result.flops_per_token * result.tokens, "seconds": round(time.perf_counter() - t0, 2),
              "evaluations": len(lengths) * (len(components) + 1), "base": base and base.base_id, "seed": cfg.seed}
    atomic_write_json(path, record)
    return record
