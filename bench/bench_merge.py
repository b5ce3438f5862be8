"""Rank fidelity of merged proxies (issue 25) on a built and searched workspace, e.g. the demo's:
the merged model's target figure (base + one run per component, merged by each mixture's
weights, proxy_training/merge.py) against what proxies trained from scratch on the same mixtures
measured (the search's runs in the runs table: the baseline a user has), as a Spearman, with the
cost of each in proxy runs and seconds.

    make demo && python bench/bench_merge.py mixforge-demo/demo.yaml [--base-tokens 50000]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import report  # noqa: E402

VERIFY_SEED = 1_000_000  # mixers/search.py: verify's seeds start here; the search's runs are below


def main() -> None:
    import numpy as np
    import polars as pl
    from scipy.stats import spearmanr

    from mixforge.config import load_config
    from mixforge.proxy_training.merge import StateEvaluator, component_runs, component_states, merged_state
    from mixforge.proxy_training.runs_table import RunsTable
    from mixforge.workspace import Workspace

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("config", type=Path)
    ap.add_argument("--base-tokens", type=int, default=None, help="proxy.base_tokens (default: proxy.tokens)")
    args = ap.parse_args()
    cfg = load_config(args.config)
    cfg.proxy.base_tokens = args.base_tokens or cfg.proxy.tokens
    target = cfg.search.target
    runs = RunsTable(Workspace(cfg.workspace_dir)).load()
    runs = runs.filter((pl.col("seed") < VERIFY_SEED) & pl.col("base").is_null() if "base" in runs.columns
                       else pl.col("seed") < VERIFY_SEED)
    if runs.height < 4:
        sys.exit(f"{args.config}: run `mixforge search` first (the scratch proxies are the baseline)")
    components = sorted(c[2:] for c in runs.columns if c.startswith("w_"))
    t0 = time.perf_counter()
    rows = component_runs(cfg, components)
    trained_s = time.perf_counter() - t0
    states, evaluate = component_states(cfg, rows), StateEvaluator(cfg)
    t1 = time.perf_counter()
    merged = [evaluate(merged_state(states, {c: r[f"w_{c}"] for c in components}), 0, text=target.split("_", 1)[1])[target]
              for r in runs.to_dicts()]
    evaluated_s = time.perf_counter() - t1
    scratch = runs[target].to_list()
    rho = float(spearmanr(merged, scratch).statistic)
    scratch_s = float(runs["wall_s"].sum())
    print(f"{runs.height} mixtures, target {target}: Spearman merged vs scratch {rho:.3f}")
    print(f"merged: base ({cfg.proxy.base_tokens:,} tokens) + {len(components)} component runs of {cfg.proxy.tokens:,} tokens "
          f"in {trained_s:.0f} s, {runs.height} evaluations in {evaluated_s:.0f} s; scratch: {runs.height} runs, {scratch_s:.0f} s of wall time")
    report(f"merge rank fidelity {runs.height} mixtures", trained_s + evaluated_s, scratch_s,
           {"spearman_merged_vs_scratch": round(rho, 3), "mixtures": runs.height, "components": len(components),
            "base_tokens": cfg.proxy.base_tokens, "proxy_tokens": cfg.proxy.tokens, "target": target,
            "merged": np.round(merged, 4).tolist(), "scratch": np.round(scratch, 4).tolist(),
            "baseline": "proxies trained from scratch on each mixture (the search's runs)"})


if __name__ == "__main__":
    main()
