"""Rank fidelity of the cheap proxies (issue 25) on a built and searched workspace, e.g. the demo's:
for N mixtures, the target figure of (a) proxies trained from scratch on each (the search's runs,
topped up with seeded random mixtures: the baseline a user has), (b) proxies warm-started from
the shared base (`proxy.init: base`), (c) merged models (base + one run per component, merged by
each mixture's weights, proxy_training/merge.py); Spearman between each pair, and the cost of
each in training FLOPs and seconds. With `--seeds N`, each figure is the mean over N seeds: the
scratch and warm runs of seed k take the first seed's plus SEED_STEP * k, the merged models of
seed k a base and component runs of `seed` + k; the Spearman between two seeds of scratch runs is
the ceiling any cheap proxy can reach.

    make demo && python bench/bench_merge.py mixforge-demo/demo.yaml [--mixtures 24] [--base-tokens 50000] [--seeds 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import report  # noqa: E402

VERIFY_SEED = 1_000_000  # mixers/search.py: verify's seeds start here; the search's runs are below
SEED_STEP = 10_000  # seed k of a mixture's run: its first seed + SEED_STEP * k (below verify's seeds)


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
    ap.add_argument("--seeds", type=int, default=1, help="seeds per mixture (each figure is their mean)")
    args = ap.parse_args()
    cfg = load_config(args.config)
    cfg.proxy.base_tokens = args.base_tokens or cfg.proxy.tokens
    target, text = cfg.search.target, cfg.search.target.split("_", 1)[1]
    t0 = time.perf_counter()
    first = scratch_runs(cfg, args.mixtures)
    components = sorted(c[2:] for c in first[0] if c.startswith("w_"))
    mixtures = [{c: r[f"w_{c}"] for c in components} for r in first]
    scratch = [first] + [[run_proxy(cfg, w, seed=r["seed"] + SEED_STEP * k) for w, r in zip(mixtures, first)]
                         for k in range(1, args.seeds)]
    topped_s = time.perf_counter() - t0

    merged, rows, merged_train_s, merged_eval_s = [], None, 0.0, 0.0
    for k in range(args.seeds):  # seed k: its own base and component runs (the config's seed + k)
        seeded = cfg.model_copy(deep=True)
        seeded.seed = cfg.seed + k
        t0 = time.perf_counter()
        rows = component_runs(seeded, components)  # trains the base first (once), then one run per component
        merged_train_s += time.perf_counter() - t0
        states, evaluate = component_states(seeded, rows), StateEvaluator(seeded)
        t0 = time.perf_counter()
        merged.append([evaluate(merged_state(states, w), 0, text=text) for w in mixtures])
        merged_eval_s += time.perf_counter() - t0

    warm_cfg = merge_config(cfg)  # proxy.init: base, the same base the first seed's component runs started from
    t0 = time.perf_counter()
    warm = [[run_proxy(warm_cfg, w, seed=r["seed"] + SEED_STEP * k) for w, r in zip(mixtures, first)] for k in range(args.seeds)]
    warm_s = time.perf_counter() - t0

    ws = Workspace(cfg.workspace_dir)
    vocab = tokens_summary(ws)["tokenizer"]["vocab_size"]
    per_run = run_flops(cfg, vocab)
    base_flops = per_run / cfg.proxy.tokens * cfg.proxy.base_tokens
    n = args.seeds
    flops = {"scratch": n * len(mixtures) * per_run, "warm": base_flops + n * len(mixtures) * per_run,
             "merged": n * (base_flops + len(components) * per_run)}  # training; evaluations below
    forward = per_run / cfg.proxy.tokens / 3  # a token scored costs a third of a token trained (no backward pass)
    scored = {"scratch": sum(v for rs in scratch for r in rs for k, v in r.items() if k.startswith("scored_tokens_") and v),
              "warm": sum(v for rs in warm for r in rs for k, v in r.items() if k.startswith("scored_tokens_") and v),
              "merged": sum(m[f"scored_tokens_{text}"] for ms in merged for m in ms)}  # a run's row scores every text, a merge the target
    per_seed = {"scratch": [[r[target] for r in rs] for rs in scratch], "warm": [[r[target] for r in rs] for rs in warm],
                "merged": [[m[target] for m in ms] for ms in merged]}
    y = {name: np.mean(v, axis=0) for name, v in per_seed.items()}
    rho = {f"{a}_vs_{b}": round(float(spearmanr(y[a], y[b]).statistic), 3)
           for a, b in (("merged", "scratch"), ("warm", "scratch"), ("merged", "warm"))}
    if n > 1:  # how well one seed of scratch runs ranks like another: the ceiling of any proxy
        rho["scratch_seed_vs_seed"] = round(float(np.mean([spearmanr(per_seed["scratch"][a], per_seed["scratch"][b]).statistic
                                                           for a in range(n) for b in range(a + 1, n)])), 3)
        rho["merged_seed_vs_scratch_seed"] = round(float(np.mean([spearmanr(per_seed["merged"][k], per_seed["scratch"][k]).statistic
                                                                  for k in range(n)])), 3)
    scratch_s = float(sum(r["wall_s"] for rs in scratch for r in rs))
    base_id = rows[components[0]]["base"]
    print(f"{len(mixtures)} mixtures x {n} seeds, target {target}: Spearman " + ", ".join(f"{k} {v:.3f}" for k, v in rho.items()))
    for name in ("scratch", "warm", "merged"):
        print(f"  {name}: {flops[name]:.3g} training FLOPs ({flops[name] / flops['scratch']:.0%} of scratch), "
              f"{scored[name] * forward:.3g} evaluating ({scored[name]:,} tokens scored)")
    print(f"merged: base {base_id} ({cfg.proxy.base_tokens:,} tokens) + {len(components)} component runs, {n} seed(s), in "
          f"{merged_train_s:.0f} s, {n * len(mixtures)} evaluations in {merged_eval_s:.0f} s; warm: {n * len(mixtures)} runs in "
          f"{warm_s:.0f} s; scratch: {scratch_s:.0f} s of run wall time ({topped_s:.0f} s to top up)")
    report(f"merge rank fidelity {len(mixtures)} mixtures x {n} seeds", merged_train_s + merged_eval_s, scratch_s,
           {"spearman": rho, "mixtures": len(mixtures), "seeds": n, "components": len(components), "flops": flops,
            "eval_flops": {k: v * forward for k, v in scored.items()}, "base_tokens": cfg.proxy.base_tokens, "proxy_tokens": cfg.proxy.tokens, "target": target,
            "seconds": {"merged_train": round(merged_train_s, 1), "merged_eval": round(merged_eval_s, 1), "warm": round(warm_s, 1),
                        "scratch_wall": round(scratch_s, 1)},
            **{name: np.round(v, 4).tolist() for name, v in per_seed.items()},
            "baseline": "proxies trained from scratch on each mixture (the search's runs, topped up)"})


if __name__ == "__main__":
    main()
