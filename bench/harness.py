"""Small helpers shared by the benchmarks: where we ran, how long it took, one result line.

Project rule: every benchmark times ours and the baseline a user would otherwise pick side by
side in ONE run (same machine, same data, same moment), so the ratio is meaningful even when
absolute times drift between machines or runs.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path
from typing import Callable

BENCH_DIR = Path(__file__).resolve().parent
OUT_DIR = BENCH_DIR / "out"  # git-ignored
RESULTS = OUT_DIR / "results.jsonl"


def device_info() -> str:
    """'<CPU model>, <n> cores[, <GPU name>]'. torch is imported lazily: it is slow to import
    and a benchmark must still run where it is missing."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    text = f"{cpu}, {cores} cores"
    try:
        import torch

        if torch.cuda.is_available():
            text += f", {torch.cuda.get_device_name(0)}"
        else:
            text += ", no GPU"
    except Exception:  # torch absent or broken: the CPU part is still true
        text += ", no GPU (torch not importable)"
    return text


def git_commit() -> str:
    """Short commit of the checkout, with '+dirty' when tracked files differ from it
    (BENCH_COMMIT overrides: for runs from an exported snapshot of a commit)."""
    if os.environ.get("BENCH_COMMIT"):
        return os.environ["BENCH_COMMIT"]
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=BENCH_DIR, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=BENCH_DIR, capture_output=True, text=True
        ).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def demo_workspace() -> Path:
    """bench/out/demo, built by `mixforge build --demo` (each stage reused while unchanged): the
    workspace the demo-based benchmarks share."""
    import sys

    workspace = OUT_DIR / "demo"
    subprocess.run([sys.executable, "-m", "mixforge.cli", "build", "--demo", "--workspace", str(workspace)],
                   check=True, stdout=subprocess.DEVNULL)
    return workspace


def timed(fn: Callable[[], object], repeat: int = 1) -> dict:
    """Run `fn` `repeat` times: best and median wall seconds, every time, and the result of the
    best run (so a breakdown it returns belongs to the headline time)."""
    runs = []
    for _ in range(max(repeat, 1)):
        t0 = time.perf_counter()
        result = fn()
        runs.append((time.perf_counter() - t0, result))
    times = [t for t, _ in runs]
    best = min(runs, key=lambda r: r[0])
    return {"best": best[0], "median": statistics.median(times), "times": times, "result": best[1]}


def timed_pair(ours: Callable[[], object], baseline: Callable[[], object], repeat: int = 1) -> tuple[dict, dict]:
    """`timed` for both sides, interleaved (ours, baseline, baseline, ours, ...) so that load from
    other processes on a shared machine hits both sides alike instead of one block of runs."""
    a, b = [], []
    for i in range(max(repeat, 1)):
        order = [(ours, a), (baseline, b)] if i % 2 == 0 else [(baseline, b), (ours, a)]
        for fn, sink in order:
            sink.append(timed(fn, 1))
    merge = lambda rs: {  # noqa: E731
        "best": min(r["best"] for r in rs),
        "median": statistics.median(r["best"] for r in rs),
        "times": [r["best"] for r in rs],
        "result": min(rs, key=lambda r: r["best"])["result"],
    }
    return merge(a), merge(b)


def parquet_rows(folder: Path) -> int:
    """Rows in every Parquet file under `folder` (from the footers: no data is read)."""
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(f).metadata.num_rows for f in folder.rglob("*.parquet"))


def report(name: str, ours_s: float, baseline_s: float, extra: dict | None = None) -> dict:
    """Print one table line (ours, baseline, ratio baseline/ours, our overhead) and append the
    same as a JSON line to bench/out/results.jsonl."""
    extra = dict(extra or {})
    ratio = baseline_s / ours_s if ours_s > 0 else float("inf")
    overhead = (ours_s / baseline_s - 1) * 100 if baseline_s > 0 else float("inf")
    row = {
        "name": name,
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "commit": git_commit(),
        "device": device_info(),
        "ours_s": round(ours_s, 3),
        "baseline_s": round(baseline_s, 3),
        "ratio": round(ratio, 3),
        "overhead_pct": round(overhead, 1),
        **extra,
    }
    print(
        f"{name:<28} ours {ours_s:8.2f} s | baseline {baseline_s:8.2f} s | "
        f"ratio baseline/ours {ratio:5.2f}x | our overhead {overhead:+6.1f}%"
    )
    print(f"{'':<28} device: {row['device']} | commit {row['commit']}")
    flat = {k: v for k, v in extra.items() if not isinstance(v, (dict, list))}  # nested: JSON only
    if flat:
        print(f"{'':<28} " + ", ".join(f"{k}={v}" for k, v in flat.items()))
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    with RESULTS.open("a", encoding="utf-8") as f:
        f.write(json.dumps(row, default=str) + "\n")
    return row
