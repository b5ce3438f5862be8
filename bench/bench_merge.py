"""Rank fidelity of the cheap proxies (issue 25) on a built and searched workspace, e.g. the demo's:
for N mixtures, the target figure of (a) proxies trained from scratch on each (the search's runs,
topped up with seeded random mixtures: the baseline a user has), (b) proxies warm-started from
the shared base (`proxy.init: base`), (c) merged models (base + one run per component, merged by
each mixture's weights, proxy_training/merge.py); Spearman between each pair, and the cost of
each in training FLOPs and seconds.

    make demo && python bench/bench_merge.py mixforge-demo/demo.yaml [--mixtures 24] [--base-tokens 50000]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import report  # noqa: E402

VERIFY_SEED = 1_000_000  # mixers/search.py: verify's seeds start here; the search's runs are below


def scratch_runs(cfg, n: int) -> list[dict]:
    """The search's scratch runs, topped up to `n` with seeded random mixtures trained from scratch
    (seeds after the search's), one row each."""
    import polars as pl

    from mixforge.mixers.sampling import random_mixtures
    from mixforge.proxy_training.proxy import run_proxy, tokens_summary
    from mixforge.proxy_training.runs_table import RunsTable, data_fingerprint
    from mixforge.workspace import Workspace

    ws = Workspace(cfg.workspace_dir)
    runs = RunsTable(ws).load()
    keep = (pl.col("seed") < VERIFY_SEED) & (pl.col("data") == data_fingerprint(cfg, ws))
    runs = runs.filter(keep & pl.col("base").is_null() if "base" in runs.columns else keep)
    counts = {c: v["train_tokens"] for c, v in tokens_summary(ws)["components"].items() if v["train_tokens"] > 0}
    components = sorted(counts)
    rows = [r for r in runs.sort("seed").to_dicts() if abs(sum(r[f"w_{c}"] for c in components) - 1) < 1e-6
            and all(r.get(f"w_{c}") is not None for c in components) and r.get("phases") is None][:n]
    have = [{c: r[f"w_{c}"] for c in components} for r in rows]
    extra = random_mixtures(counts, n - len(rows), cfg.seed + 7_777, cfg.proxy.tokens, cfg.proxy.max_epochs, exclude=have)
    start = max([r["seed"] for r in rows], default=cfg.seed - 1) + 1
    rows += [run_proxy(cfg, w, seed=start + i) for i, w in enumerate(extra)]
    return rows


def main() -> None:
    import numpy as np
    from scipy.stats import spearmanr

    from mixforge.config import load_config
    from mixforge.proxy_training.merge import StateEvaluator, component_runs, component_states, merge_config, merged_state
    from mixforge.proxy_training.proxy import run_flops, run_proxy, tokens_summary
    from mixforge.workspace import Workspace

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("config", type=Path)
    ap.add_argument("--mixtures", type=int, default=24)
    ap.add_argument("--base-tokens", type=int, default=None, help="proxy.base_tokens (default: proxy.tokens)")
    args = ap.parse_args()
    cfg = load_config(args.config)
    cfg.proxy.base_tokens = args.base_tokens or cfg.proxy.tokens
    target, text = cfg.search.target, cfg.search.target.split("_", 1)[1]
    t0 = time.perf_counter()
    scratch = scratch_runs(cfg, args.mixtures)
    topped_s = time.perf_counter() - t0
    components = sorted(c[2:] for c in scratch[0] if c.startswith("w_"))
    mixtures = [{c: r[f"w_{c}"] for c in components} for r in scratch]

    t0 = time.perf_counter()
    rows = component_runs(cfg, components)  # trains the base first (once), then one run per component
    merged_train_s = time.perf_counter() - t0
    states, evaluate = component_states(cfg, rows), StateEvaluator(cfg)
    t0 = time.perf_counter()
    merged = [evaluate(merged_state(states, w), 0, text=text) for w in mixtures]
    merged_eval_s = time.perf_counter() - t0

    warm_cfg = merge_config(cfg)  # proxy.init: base, the same base the component runs started from
    t0 = time.perf_counter()
    warm = [run_proxy(warm_cfg, w, seed=r["seed"]) for w, r in zip(mixtures, scratch)]
    warm_s = time.perf_counter() - t0

    ws = Workspace(cfg.workspace_dir)
    vocab = tokens_summary(ws)["tokenizer"]["vocab_size"]
    per_run = run_flops(cfg, vocab)
    base_flops = per_run / cfg.proxy.tokens * cfg.proxy.base_tokens
    flops = {"scratch": len(mixtures) * per_run, "warm": base_flops + len(mixtures) * per_run,
             "merged": base_flops + len(components) * per_run}  # training; evaluations below
    forward = per_run / cfg.proxy.tokens / 3  # a token scored costs a third of a token trained (no backward pass)
    scored = {"scratch": sum(v for r in scratch for k, v in r.items() if k.startswith("scored_tokens_") and v),
              "warm": sum(v for r in warm for k, v in r.items() if k.startswith("scored_tokens_") and v),
              "merged": sum(m[f"scored_tokens_{text}"] for m in merged)}  # a run's row scores every text, a merge the target
    y = {"scratch": [r[target] for r in scratch], "warm": [r[target] for r in warm], "merged": [m[target] for m in merged]}
    rho = {f"{a}_vs_{b}": round(float(spearmanr(y[a], y[b]).statistic), 3)
           for a, b in (("merged", "scratch"), ("warm", "scratch"), ("merged", "warm"))}
    scratch_s = float(sum(r["wall_s"] for r in scratch))
    base_id = rows[components[0]]["base"]
    print(f"{len(mixtures)} mixtures, target {target}: Spearman " + ", ".join(f"{k} {v:.3f}" for k, v in rho.items()))
    for name in ("scratch", "warm", "merged"):
        print(f"  {name}: {flops[name]:.3g} training FLOPs ({flops[name] / flops['scratch']:.0%} of scratch), "
              f"{scored[name] * forward:.3g} evaluating ({scored[name]:,} tokens scored)")
    print(f"merged: base {base_id} ({cfg.proxy.base_tokens:,} tokens) + {len(components)} component runs in {merged_train_s:.0f} s, "
          f"{len(mixtures)} evaluations in {merged_eval_s:.0f} s; warm: {len(mixtures)} runs in {warm_s:.0f} s; scratch: "
          f"{scratch_s:.0f} s of run wall time ({topped_s:.0f} s to top up)")
    report(f"merge rank fidelity {len(mixtures)} mixtures", merged_train_s + merged_eval_s, scratch_s,
           {"spearman": rho, "mixtures": len(mixtures), "components": len(components), "flops": flops,
            "eval_flops": {k: v * forward for k, v in scored.items()}, "base_tokens": cfg.proxy.base_tokens, "proxy_tokens": cfg.proxy.tokens, "target": target,
            "seconds": {"merged_train": round(merged_train_s, 1), "merged_eval": round(merged_eval_s, 1), "warm": round(warm_s, 1),
                        "scratch_wall": round(scratch_s, 1)},
            **{name: np.round(v, 4).tolist() for name, v in y.items()},
            "baseline": "proxies trained from scratch on each mixture (the search's runs, topped up)"})


if __name__ == "__main__":
    main()
