"""Merged proxies (Scalable Data Ablation, Na et al.): one model per component, continued from the
shared base on that component alone; a candidate mixture's proxy is the components' models
combined by the mixture's weights, evaluated instead of trained.

- `component_runs`: the per-component runs (proxy runs like any other: rows in the runs table,
  found and not retrained when done), each keeping its final weights.
- `merged_state`: base + scale * sum_c w_c (theta_c - base). At scale 1 and weights that sum to
  1 this is the weighted average sum_c w_c theta_c itself (the two forms the paper compares are
  one and the same on the simplex); another scale extrapolates from, or shrinks towards, the base.
- `evaluate_state`: a state's loss and bits per byte on every held-out text and eval text (and
  their means over the components), as a run's row has them (on a seeded sample of windows when `max_tokens` caps it).
"""

from __future__ import annotations

import torch

from mixforge.config import MixforgeConfig
from mixforge.pipelines.outputs import tokens_dir
from mixforge.proxy_training.model import GPT, preset
from mixforge.proxy_training.proxy import checkpoint_dir, heldout_means, heldout_metrics, run_proxy
from mixforge.proxy_training.runs_table import checked_tokens_summary
from mixforge.proxy_training.train import checkpoints, read_checkpoint
from mixforge.workspace import Workspace


def merge_config(cfg: MixforgeConfig) -> MixforgeConfig:
    """The config component runs train at: the user's starting point, or the shared base when runs
    would start from scratch (a merge needs one point every model moved away from)."""
    out = cfg.model_copy(deep=True)
    if out.proxy.init == "scratch":
        out.proxy.init = "base"
    return out


def component_runs(cfg: MixforgeConfig, components: list[str], progress=None) -> dict[str, dict]:
    """One run per component, from the base, on that component alone (seed: the config's); its
    row, by component. Each keeps its final checkpoint (runs/checkpoints/<run id>/)."""
    cfg = merge_config(cfg)
    rows = {}
    for c in components:
        rows[c] = run_proxy(cfg, {c: 1.0}, checkpoints=1)
        if progress is not None:
            progress(c)
    return rows


def component_states(cfg: MixforgeConfig, rows: dict[str, dict]) -> dict[str, dict]:
    """The final weights of each component's run (read as tensors only)."""
    ws = Workspace(cfg.workspace_dir)
    return {c: read_checkpoint(checkpoints(checkpoint_dir(ws, row["run_id"]))[-1])["model"] for c, row in rows.items()}


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
    one model built once, each state loaded into it."""

    def __init__(self, cfg: MixforgeConfig):
        ws = Workspace(cfg.workspace_dir)
        self.cfg, self.summary, self.folder = cfg, checked_tokens_summary(ws), tokens_dir(ws)
        p = cfg.proxy
        self.model = GPT(preset(p.preset, vocab_size=self.summary["tokenizer"]["vocab_size"], block_size=p.seq_len))

    def __call__(self, state: dict, max_tokens: int | None = None, seed: int | None = None, text: str | None = None) -> dict:
        """Every component's held-out text and every eval text, with the means over the components,
        or one `text` (a component, an eval text, or `mean`: the held-out texts and their means).
        `max_tokens` (default proxy.eval_max_tokens) and `seed` (default the config's) choose the windows scored."""
        p, cfg = self.cfg.proxy, self.cfg
        cap, seed = p.eval_max_tokens if max_tokens is None else max_tokens, cfg.seed if seed is None else seed
        held = {c: v["heldout_bytes"] for c, v in self.summary["components"].items()}
        evals = {n: v["bytes"] for n, v in self.summary.get("eval_texts", {}).items()}
        self.model.load_state_dict(state)
        out: dict = {}
        with torch.no_grad():
            if text is None or text == "mean" or text in held:
                names = None if text in (None, "mean") else {text}
                out.update(heldout_metrics(self.model, self.folder / "heldout", held, p.seq_len, cap, seed, names))
                if names is None:
                    out.update(heldout_means(out))
            if text is None or text in evals:
                out.update(heldout_metrics(self.model, self.folder / "eval", evals, p.seq_len, cap, seed,
                                           None if text is None else {text}))
        return out


def evaluate_state(cfg: MixforgeConfig, state: dict, max_tokens: int | None = None, seed: int | None = None,
                   text: str | None = None) -> dict:
    """`StateEvaluator(cfg)(state, ...)` once."""
    return StateEvaluator(cfg)(state, max_tokens, seed, text)
