"""A proxy sweep on CPU: N proxies in P worker processes (`ProxyPool`, cores / P torch threads
each) against the same N trained one after another in one process with every core (what
`proxy.processes: 1` does, and what a plain loop over `run_proxy` does), in one run. Both sides
train the same mixtures with the same seeds from the demo workspace (built first with
`mixforge build --demo`, reused when unchanged), and each starts from an empty runs table.
Wall time covers training and evaluation of every run, and the pool's process start-up.

    python bench/bench_sweep.py [--runs 4] [--processes 2] [--repeat 1]
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import demo_workspace, report, timed_pair  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()

    workspace = demo_workspace()
    from mixforge.config import load_config
    from mixforge.mixers.sampling import random_mixtures
    from mixforge.proxy_training.parallel import ProxyPool
    from mixforge.proxy_training.proxy import run_proxy, tokens_summary
    from mixforge.workspace import Workspace

    config = workspace / "demo.yaml"
    cfg = load_config(config)
    ws = Workspace(cfg.workspace_dir)
    counts = {c: v["train_tokens"] for c, v in tokens_summary(ws)["components"].items()}
    mixtures = random_mixtures(counts, args.runs, 11, cfg.proxy.tokens)

    def fresh() -> None:
        shutil.rmtree(ws.root / "runs", ignore_errors=True)

    def pooled():
        fresh()
        with ProxyPool(str(config), args.processes) as pool:
            return [f.result()["loss_mean"] for f in [pool.submit(w, seed=i) for i, w in enumerate(mixtures)]]

    def sequential():
        fresh()
        return [run_proxy(cfg, w, seed=i)["loss_mean"] for i, w in enumerate(mixtures)]

    ours, base = timed_pair(pooled, sequential, args.repeat)
    tokens = args.runs * cfg.proxy.tokens
    gap = max(abs(a - b) for a, b in zip(ours["result"], base["result"]))
    report(f"sweep {args.runs} x {cfg.proxy.preset}, {args.processes} proc", ours["best"], base["best"], {
        "runs": args.runs, "processes": args.processes, "tokens_per_run": cfg.proxy.tokens,
        "train_tokens_per_s_ours": round(tokens / ours["best"]), "train_tokens_per_s_base": round(tokens / base["best"]),
        "max_loss_gap": round(gap, 4)})


if __name__ == "__main__":
    main()
