"""What the strategies that read models rather than runs take from the workspace: the influence
strategy's checkpoints and token streams, the aioli strategy's online run, the cmr strategy's
figures at each checkpoint, and the merge strategy's component models with an evaluator of their
merges. `search.context` hands them to the strategies, which stay free of the workspace."""

from __future__ import annotations

import numpy as np

from mixforge.config import MixforgeConfig
from mixforge.errors import ConfigError, MixforgeError
from mixforge.mixers.objective import Objective
from mixforge.pipelines.outputs import tokens_dir
from mixforge.workspace import Workspace


def influence_inputs(cfg: MixforgeConfig, ws: Workspace, run_id: str, objective: Objective):
    """(checkpoints of the run, training streams per component, the target's token stream, seq_len)."""
    from mixforge.proxy_training.data import load_shards
    from mixforge.proxy_training.proxy import checkpoint_dir
    from mixforge.proxy_training.train import checkpoints

    folder = tokens_dir(ws)
    held = load_shards(folder / "heldout")
    evals = load_shards(folder / "eval") if (folder / "eval").is_dir() else {}
    parts = []
    for metric in objective.targets:
        name = metric.split("_", 1)[1] if metric.startswith(("loss_", "bpb_")) else None
        if name == "mean":
            parts.extend(np.asarray(t) for t in held.values())
        elif name in held or name in evals:
            parts.append(np.asarray(held.get(name, evals.get(name))))
        else:
            raise ConfigError(f"the influence strategy needs held-out text targets (loss_* or bpb_*), not {metric!r}")
    ckpts = checkpoints(checkpoint_dir(ws, run_id))
    if not ckpts:
        raise MixforgeError(f"run {run_id} has no checkpoints under {checkpoint_dir(ws, run_id)}")
    return ckpts, load_shards(folder / "train"), np.concatenate(parts), cfg.proxy.seq_len


def aioli_inputs(cfg: MixforgeConfig, components: list[str], metric: str, start, project, bounds) -> dict:
    """The aioli strategy's online run on the workspace's tokens (trained, or found)."""
    from mixforge.proxy_training.aioli import aioli_run

    return aioli_run(cfg, components, metric, start, project, bounds)


def checkpoint_figures(cfg: MixforgeConfig, run_id: str) -> list[tuple[int, dict]]:
    """(tokens trained, held-out figures) at each of a run's checkpoints, oldest first (the cmr
    strategy's points; one model built, each checkpoint's weights loaded into it)."""
    from mixforge.proxy_training.merge import StateEvaluator
    from mixforge.proxy_training.proxy import checkpoint_dir
    from mixforge.proxy_training.train import checkpoints, read_checkpoint

    evaluate = StateEvaluator(cfg)
    out = []
    for path in checkpoints(checkpoint_dir(Workspace(cfg.workspace_dir), run_id)):
        state = read_checkpoint(path)
        out.append((int(state["tokens"]), evaluate(state["model"], text="mean")))
    return out


def merge_inputs(cfg: MixforgeConfig, components: list[str], metric: str):
    """(one run per component from the base, by component; evaluate([weights], max_tokens): `metric`
    measured on the components' models merged by each of the weights)."""
    from mixforge.proxy_training.merge import StateEvaluator, component_runs, component_states, merged_state

    rows = component_runs(cfg, components)
    states, evaluator = component_states(cfg, rows), StateEvaluator(cfg)
    text = metric.split("_", 1)[1]

    def evaluate(mixtures: list[dict], max_tokens: int) -> list[float]:
        merged = [merged_state(states, weights) for weights in mixtures]
        return [figures[metric] for figures in evaluator.many(merged, max_tokens, text=text)]

    return rows, evaluate
