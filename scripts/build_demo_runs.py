"""Rebuild tests/fixtures/demo_runs.parquet: 48 real proxy runs on the demo corpus.

    python scripts/build_demo_runs.py [--workspace mixforge-demo]

Runs `mixforge build --demo` and `mixforge proxy sweep --runs 48` (tiny preset, 50,000 tokens
each, RegMix's Dirichlet mixtures over the 8 demo components, seeds 0..47), then keeps the sweep's
rows (weights, held-out metrics, task accuracy, run settings). The predictor tests fit on these
rows: a runs table measured by real proxies, small enough to ship (a few KB).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[1]
RUNS = 48


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workspace", default=str(ROOT / "build" / "demo-runs"))
    args = parser.parse_args()
    mixforge = [sys.executable, "-m", "mixforge.cli"]
    subprocess.run(mixforge + ["build", "--demo", "--workspace", args.workspace], check=True)
    config = Path(args.workspace) / "demo.yaml"
    shutil.rmtree(Path(args.workspace) / "runs", ignore_errors=True)  # only this sweep's runs in the table
    subprocess.run(mixforge + ["proxy", "sweep", str(config), "--runs", str(RUNS)], check=True)
    runs = pl.read_parquet(Path(args.workspace) / "runs" / "runs.parquet").filter(pl.col("seed") < RUNS)
    keep = [c for c in runs.columns if c.startswith(("w_", "loss_", "bpb_", "acc_"))]
    out = runs.select(["run_id", "seed", *keep, "train_loss", "tokens", "preset", "tokenizer_sha256"]).sort("seed")
    assert out.height == RUNS, f"expected {RUNS} sweep runs, found {out.height}"
    target = ROOT / "tests" / "fixtures" / "demo_runs.parquet"
    out.write_parquet(target)
    print(f"wrote {target}: {out.height} runs, {len(keep)} weight and metric columns")


if __name__ == "__main__":
    main()
