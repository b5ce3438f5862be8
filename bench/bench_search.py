"""Mixture search benchmarks, in one run:

1. fit + simulate: our LightGBM predictor (RegMix settings) fitted on real demo runs and scoring
   100,000 candidate mixtures, against scikit-learn's GradientBoostingRegressor doing the same
   (same rounds, learning rate and depth);
2. learning curve: rank correlation (Spearman) on held-out runs against the number of training
   runs, per predictor (random subsets, 10 seeds each);
3. strategies at equal proxy budget on the demo workspace (`--strategies`): regmix, climb and
   influence each propose a mixture for bpb_reference, then `verify` measures every proposal and
   uniform with fresh proxies.

Data: tests/fixtures/demo_runs.parquet (48 real tiny-proxy runs, scripts/build_demo_runs.py).

    python bench/bench_search.py [--strategies] [--budget 12] [--only influence] [--phases 2]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import OUT_DIR, report, timed_pair  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "tests" / "fixtures" / "demo_runs.parquet"


def fit_and_simulate() -> None:
    import numpy as np
    from sklearn.ensemble import GradientBoostingRegressor

    from mixforge.mixers.predictors import LightGBMPredictor, agreement
    from mixforge.mixers.runs_data import load_runs
    from mixforge.mixers.sampling import dirichlet_pool

    data = load_runs(RUNS, ["bpb_reference"])
    X, y = data.weights, data.targets["bpb_reference"]
    pool = dirichlet_pool(X.mean(axis=0), 100_000, np.random.default_rng(0))

    def ours():
        return LightGBMPredictor(seed=42).fit(X, y).predict(pool)

    def sklearn():
        return GradientBoostingRegressor(n_estimators=1000, learning_rate=0.01, max_depth=4, random_state=42).fit(X, y).predict(pool)

    a, b = timed_pair(ours, sklearn, repeat=3)
    same_top = len(set(np.argsort(a["result"])[:128]) & set(np.argsort(b["result"])[:128]))
    report("fit + 100k candidates", a["best"], b["best"], {
        "runs": len(X), "candidates": len(pool), "top128_overlap": same_top,
        "spearman_between": round(agreement(a["result"], b["result"])["spearman"], 3)})


def learning_curve() -> dict:
    import numpy as np

    from mixforge.mixers.predictors import PREDICTORS, agreement, make_predictor
    from mixforge.mixers.runs_data import load_runs

    data = load_runs(RUNS, ["bpb_reference"])
    X, y = data.weights, data.targets["bpb_reference"]
    curve = {}
    print(f"{'runs':>5} " + " ".join(f"{p:>11}" for p in PREDICTORS) + "   (Spearman on the held-out rest, mean of 10 splits)")
    for n in (8, 12, 16, 24, 32, 40):
        row = {}
        for name in PREDICTORS:
            scores = []
            for seed in range(10):
                order = np.random.default_rng(seed).permutation(len(X))
                train, test = order[:n], order[n:]
                pred = make_predictor(name, 42).fit(X[train], y[train]).predict(X[test])
                scores.append(agreement(pred, y[test])["spearman"])
            row[name] = round(float(np.mean(scores)), 3)
        curve[n] = row
        print(f"{n:>5} " + " ".join(f"{row[p]:>11.3f}" for p in PREDICTORS))
    return curve


def strategies(budget: int, names: list[str], phases: int) -> dict:
    import subprocess

    from mixforge.config import load_config
    from mixforge.mixers.search import run_search, verify
    from mixforge.proxy_training.parallel import ProxyPool

    workspace = OUT_DIR / "demo"
    subprocess.run([sys.executable, "-m", "mixforge.cli", "build", "--demo", "--workspace", str(workspace)],
                   check=True, stdout=subprocess.DEVNULL)
    config = workspace / "demo.yaml"
    cfg = load_config(config)
    cfg.search.runs = budget
    cfg.search.influence_rounds = max(budget // 6, 1)
    cfg.search.phases = phases
    out = {}
    with ProxyPool(str(config), cfg.proxy.processes) as pool:
        def train(mixtures, seeds, label, checkpoints=0):
            return [f.result() for f in [pool.submit(w, s, checkpoints) for w, s in zip(mixtures, seeds)]]

        for strategy in names:
            t0 = time.perf_counter()
            proposal, folder = run_search(cfg, train, strategy)
            seconds = time.perf_counter() - t0
            checked = verify(cfg, train, folder, seeds=2)["results"]
            out[strategy] = {"runs": len(proposal.runs_used), "search_s": round(seconds, 1),
                             "proposal": checked["proposal"]["mean"], "proposal_std": checked["proposal"]["std"],
                             "uniform": checked["uniform"]["mean"], "predicted": proposal.predicted,
                             "weights": proposal.weights}
            if "schedule" in checked:
                out[strategy] |= {"schedule": checked["schedule"]["mean"], "schedule_std": checked["schedule"]["std"]}
            print(strategy, json.dumps(out[strategy]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--strategies", action="store_true", help="also compare the strategies (minutes of proxy training)")
    parser.add_argument("--budget", type=int, default=12, help="proxy runs per strategy")
    parser.add_argument("--only", default="regmix,climb,influence", help="strategies to compare, comma-separated")
    parser.add_argument("--phases", type=int, default=1, help="influence: training phases (a schedule when > 1)")
    args = parser.parse_args()
    fit_and_simulate()
    curve = learning_curve()
    results = {"learning_curve": curve}
    if args.strategies:
        results["strategies"] = strategies(args.budget, args.only.split(","), args.phases)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    (OUT_DIR / "search.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
