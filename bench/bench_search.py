"""Mixture search benchmarks, in one run:

0. RegMix's published runs (../shared/data/regmix, or --regmix DIR): every predictor through
   `search fit` (CV, selection, 100,000 simulated mixtures, proposal) fitted on the 512 train 1M
   runs, ranking the unseen 1M, 60M and 1B runs (Spearman; top-1 pick and top-k regret on the 64
   1B runs), timed against RegMix's own recipe (LightGBM 1000 rounds, lr 0.01, seed 42, fit +
   100,000 predictions) in the same run. The held-out files are only scored, never used to choose;
1. fit + simulate: our LightGBM predictor (RegMix settings) fitted on real demo runs and scoring
   100,000 candidate mixtures, against scikit-learn's GradientBoostingRegressor doing the same
   (same rounds, learning rate and depth);
2. learning curve: rank correlation (Spearman) on held-out runs against the number of training
   runs, per predictor (random subsets, 10 seeds each);
3. strategies at equal proxy budget on the demo workspace (`--strategies`): regmix, climb and
   influence (or bayesopt, bayesopt_mf: `--only`) each propose a mixture for bpb_reference, then
   `verify` measures every proposal and the baselines with fresh proxies; each row gives the
   proposal's largest share, the epochs of its most repeated component in the export (the
   search's target run), and the proxies' tokens and seconds (bayesopt_mf spends the same FLOPs
   as the others' runs, on more, cheaper proxies).

Data: tests/fixtures/demo_runs.parquet (48 real tiny-proxy runs, scripts/build_demo_runs.py).

    python bench/bench_search.py [--strategies] [--budget 12] [--only influence] [--phases 2] [--regmix DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import OUT_DIR, demo_workspace, report, timed_pair  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "tests" / "fixtures" / "demo_runs.parquet"


REGMIX = ROOT.parent / "shared" / "data" / "regmix"
REGMIX_TARGET = "pile_cc_val_loss"


def regmix_table(folder: Path) -> dict:
    """The predictor table on RegMix's runs; see the module docstring."""
    import warnings

    import lightgbm as lgb
    import numpy as np

    from mixforge.mixers.model_choice import agreement, fit_predictor, held_out
    from mixforge.mixers.predictors import PREDICTORS
    from mixforge.mixers.runs_file import load_runs
    from mixforge.mixers.sampling import dirichlet_pool
    from mixforge.mixers.fit_table import fit_table

    def split(kind: str, size: str):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # rounded shares, normalised
            return load_runs(folder / f"{kind}_mixture_{size}.csv", [REGMIX_TARGET], metrics=folder / f"{kind}_pile_loss_{size}.csv",
                             min_runs=2)
    train = split("train", "1m")
    tests = {size: split("test", size) for size in ("1m", "60m", "1B")}
    X, y = train.weights, train.targets[REGMIX_TARGET]

    def recipe():  # RegMix's notebook: LightGBM defaults but 1000 rounds, lr 0.01, seed 42; 100k simulated mixtures
        model = lgb.LGBMRegressor(objective="regression", n_estimators=1000, learning_rate=0.01, random_state=42, verbose=-1).fit(X, y)
        pool = dirichlet_pool(X.mean(axis=0), 100_000, np.random.default_rng(0))
        pool[np.argsort(model.predict(pool))[:100]].mean(axis=0)
        return model

    rows = {}
    t0 = time.perf_counter()
    model = recipe()
    base_s = time.perf_counter() - t0
    rows["RegMix recipe"] = _regmix_row(model, tests, base_s, base_s, held_out, agreement)
    for name in PREDICTORS:
        t0 = time.perf_counter()
        fit_table(folder / "train_mixture_1m.csv", REGMIX_TARGET, metrics=folder / "train_pile_loss_1m.csv", predictor=name)
        seconds = time.perf_counter() - t0
        model, fitted = fit_predictor(name, X, y)  # the same fit again, untimed, to score every split
        rows[name] = _regmix_row(model, tests, seconds, base_s, held_out, agreement) | {
            "cv_spearman": round(fitted.spearman, 4), "chosen": fitted.chosen}
        if name == "auto":
            rows[name]["candidates"] = {c: v["spearman"] for c, v in fitted.candidates.items()}
    print(f"{'predictor':>14} {'CV':>6} {'1M':>6} {'60M':>6} {'1B':>6} {'1B top1':>8} {'regret@1':>9} {'x recipe':>9}")
    for name, r in rows.items():
        print(f"{name:>14} {r.get('cv_spearman', float('nan')):>6.3f} {r['1m']:>6.3f} {r['60m']:>6.3f} {r['1B']:>6.3f} "
              f"{str(r['1B_top1_is_best']):>8} {r['1B_regret']['top1']:>9.4f} {r['x_recipe']:>8.2f}x")
    report_line = rows["auto"]
    report("regmix table: auto vs RegMix recipe (fit + 100k)", report_line["seconds"], base_s,
           {k: report_line[k] for k in ("1m", "60m", "1B", "1B_top1_is_best", "chosen")})
    return rows


def _regmix_row(model, tests: dict, seconds: float, base_s: float, held_out, agreement) -> dict:
    from mixforge.mixers.model_choice import FitReport

    row = {"seconds": round(seconds, 2), "x_recipe": round(seconds / base_s, 2)}
    for size, data in tests.items():
        row[size] = round(agreement(model.predict(data.weights), data.targets[REGMIX_TARGET])["spearman"], 4)
    one_b = held_out(FitReport("", 0, 0, 0, 0, 0, 0), model.predict(tests["1B"].weights), tests["1B"].targets[REGMIX_TARGET])
    return row | {"1B_top1_is_best": one_b["top1_is_best"], "1B_regret": one_b["regret"]}


def fit_and_simulate() -> None:
    import numpy as np
    from sklearn.ensemble import GradientBoostingRegressor

    from mixforge.mixers.model_choice import agreement
    from mixforge.mixers.predictors import LightGBMPredictor
    from mixforge.mixers.runs_file import load_runs
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

    from mixforge.mixers.model_choice import agreement, fit_predictor
    from mixforge.mixers.predictors import PREDICTORS
    from mixforge.mixers.runs_file import load_runs

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
                pred = fit_predictor(name, X[train], y[train], folds=min(5, n // 2), seed=42)[0].predict(X[test])
                scores.append(agreement(pred, y[test])["spearman"])
            row[name] = round(float(np.mean(scores)), 3)
        curve[n] = row
        print(f"{n:>5} " + " ".join(f"{row[p]:>11.3f}" for p in PREDICTORS))
    return curve


def strategies(budget: int, names: list[str], phases: int) -> dict:

    import polars as pl

    from mixforge.config import load_config
    from mixforge.mixers.search import cheap_proxy, run_search, verify
    from mixforge.proxy_training.parallel import ProxyPool
    from mixforge.proxy_training.runs_table import RunsTable
    from mixforge.workspace import Workspace, read_json

    workspace = demo_workspace()
    config = workspace / "demo.yaml"
    cfg = load_config(config)
    cfg.search.runs = budget
    cfg.search.influence_rounds = max(budget // 6, 1)
    cfg.search.phases = phases
    available = {c: v["train_tokens"] for c, v in read_json(workspace / "tokens" / "_stage.json")["counts"]["components"].items()}
    out = {}
    with ProxyPool(str(config), cfg.proxy.processes) as pool, \
            ProxyPool(str(config), cfg.proxy.processes, {"proxy": cheap_proxy(cfg)}) as cheap_pool:
        def trainer(p):
            return lambda mixtures, seeds, label, checkpoints=0: [f.result() for f in [p.submit(w, s, checkpoints) for w, s in zip(mixtures, seeds)]]

        train = trainer(pool)
        for strategy in names:
            t0 = time.perf_counter()
            proposal, folder = run_search(cfg, train, strategy, train_cheap=trainer(cheap_pool))
            seconds = time.perf_counter() - t0
            checked = verify(cfg, train, folder, seeds=2)["results"]
            runs = RunsTable(Workspace(cfg.workspace_dir)).load().filter(pl.col("run_id").is_in(proposal.runs_used))
            target = proposal.constraints["target_tokens"]
            epochs = max(w * target / available[c] for c, w in proposal.weights.items() if w > 0)
            out[strategy] = {"runs": len(proposal.runs_used), "search_s": round(seconds, 1),
                             "proxy_train_s": round(float(runs["wall_s"].sum()), 1), "proxy_tokens": int(runs["tokens"].sum()),
                             "proposal": checked["proposal"]["mean"], "proposal_std": checked["proposal"]["std"],
                             "uniform": checked["uniform"]["mean"], "predicted": proposal.predicted,
                             "inside": checked["proposal"]["inside"], "weights": proposal.weights,
                             "largest_share": round(max(proposal.weights.values()), 4), "export_epochs": round(epochs, 2),
                             "natural": checked.get("natural", {}).get("mean"), "best_observed": checked.get("best observed", {}).get("mean")}
            if proposal.fidelity:
                out[strategy] |= {k: proposal.fidelity[k] for k in ("cheap_proxy", "cheap_runs", "main_runs", "cost_in_runs")}
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
    parser.add_argument("--regmix", type=Path, default=REGMIX, help="RegMix's published runs (data/ of sail-sg/regmix)")
    parser.add_argument("--skip-curve", action="store_true", help="skip the demo learning curve (minutes with auto)")
    args = parser.parse_args()
    results = {"regmix": regmix_table(args.regmix)} if args.regmix.is_dir() else {}
    fit_and_simulate()
    if not args.skip_curve:
        results["learning_curve"] = learning_curve()
    if args.strategies:
        results["strategies"] = strategies(args.budget, args.only.split(","), args.phases)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    (OUT_DIR / "search.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
