"""Proposals never predicted worse than the best observed run, on published tables.

For RegMix's 512 train 1M runs (../shared/data/regmix, target pile_cc_val_loss) and a two-phase
table made from them (run i's mixture, then run i+1's, phases 80/20 of training; the loss is the
same 80/20 mix of the two runs' measured losses, a known function of the schedule), per predictor:
`search fit`'s proposal (fit_table: the runs in the pool, the best candidates refined, the check
against the best run), against the old rule (the top-128 mean of the same 100,000 Dirichlet
candidates, no refinement, no check) by the same fitted model, with the seconds each selection takes.

    python bench/bench_never_worse.py [--predictors auto,lightgbm,mixing_law] [--regmix DIR]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import report  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
REGMIX = ROOT.parent / "shared" / "data" / "regmix"
TARGET = "pile_cc_val_loss"


def two_phase_table(folder: Path, out: Path) -> Path:
    """RegMix's runs paired: phase 0 trains run i's mixture for 80%, phase 1 run i+1's for 20%."""
    import numpy as np
    import polars as pl

    from mixforge.mixers.runs_file import load_runs

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # rounded shares, normalised
        data = load_runs(folder / "train_mixture_1m.csv", [TARGET], metrics=folder / "train_pile_loss_1m.csv")
    X, y = data.weights, data.targets[TARGET]
    nxt = np.roll(np.arange(len(X)), -1)
    cols = {"run_id": [f"{a}+{b}" for a, b in zip(data.run_ids, np.array(data.run_ids)[nxt])]}
    for p, rows in enumerate((np.arange(len(X)), nxt)):
        cols.update({f"phase{p}_w_{c}": X[rows, j] for j, c in enumerate(data.components)})
    cols[TARGET] = 0.8 * y + 0.2 * y[nxt]
    pl.DataFrame(cols).write_csv(out)
    return out


def old_rule(path: Path, metrics: Path | None, predictor: str, seed: int = 0, candidates: int = 100_000, top_k: int = 128):
    """(predicted old proposal, predicted best run, seconds of the selection): fit_table's rule before."""
    import numpy as np

    from mixforge.mixers.model_choice import fit_predictor
    from mixforge.mixers.objective import kl_by_phase, trust_region_weight
    from mixforge.mixers.runs_file import load_runs
    from mixforge.mixers.sampling import dirichlet_pool

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = load_runs(path, [TARGET], metrics=metrics)
    X, y = data.weights, data.targets[TARGET]
    model, fit = fit_predictor(predictor, X, y, folds=5, seed=seed)
    start = time.perf_counter()
    P, k = data.phases, len(data.components)
    prior = X.mean(axis=0)
    rng = np.random.default_rng(seed)
    blocks = [np.vstack([dirichlet_pool(prior[p * k:(p + 1) * k], candidates, rng), X[:, p * k:(p + 1) * k]]) for p in range(P)]
    size = min(len(b) for b in blocks)
    pool = np.hstack([b[-size:] for b in blocks])
    penalty = trust_region_weight(fit.mae, X, prior, P)
    score = model.predict(pool) + penalty * kl_by_phase(pool, prior, P)
    w = pool[np.argsort(score, kind="stable")[:top_k]].mean(axis=0)
    seconds = time.perf_counter() - start
    return float(model.predict(w[None, :])[0]), float(model.predict(X[[int(np.argmin(y))]])[0]), seconds


def main() -> None:
    from mixforge.mixers.fit_table import fit_table

    ap = argparse.ArgumentParser()
    ap.add_argument("--predictors", default="auto,lightgbm,mixing_law")
    ap.add_argument("--regmix", type=Path, default=REGMIX)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    tables = {"regmix 1M (1 phase)": (args.regmix / "train_mixture_1m.csv", args.regmix / "train_pile_loss_1m.csv"),
              "regmix pairs (2 phases, 80/20)": (two_phase_table(args.regmix, tmp / "two_phase.csv"), None)}
    print(f"{'table':>31} {'predictor':>10} {'best run':>9} {'old rule':>9} {'new':>9} {'old s':>6} {'new s':>6}  chose")
    for name, (path, metrics) in tables.items():
        for predictor in args.predictors.split(","):
            old, best, old_s = old_rule(path, metrics, predictor)
            seconds = []
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out = fit_table(path, TARGET, metrics=metrics, predictor=predictor,
                                progress=lambda line: seconds.append(float(line.split(" in ")[1].split(" s")[0])) if line.startswith("scored") else None)
            b = out["best_observed"]
            assert abs(b["predicted"] - best) < 1e-9, (b["predicted"], best)  # the same model
            assert out["predicted"] <= b["predicted"], out  # the guarantee
            print(f"{name:>31} {predictor:>10} {best:>9.4f} {old:>9.4f} {out['predicted']:>9.4f} {old_s:>6.2f} {seconds[0]:>6.2f}  "
                  f"{b['chose'] if not out['fallback'] else out['fallback']}")
            report(f"never worse: {name}, {predictor} (selection seconds, new vs old rule)", seconds[0], old_s,
                   {"best_run_predicted": round(best, 4), "old_predicted": round(old, 4), "new_predicted": round(out["predicted"], 4),
                    "fallback": bool(out["fallback"])})


if __name__ == "__main__":
    main()
