"""Benchmark: checking a built workspace against its stage records (what `build` does before it
skips stages, and `mixforge status --check`), against `sha256sum` over the same files (what a
user would otherwise run to catch changed files), side by side in one run.

Ours: `check_workspace(ws, "digest")`: xxh3-128 of every published file, compared with the
digests the stages recorded. Also printed: the size-only check (`mixforge status`), and the
whole no-op `build` (every stage skipped) so the check's share of it shows.
E.g.: bench_integrity.py [--workspace DIR --config FILE]   (default: builds the demo in a temp folder)
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("MIXFORGE_PROGRESS", "0")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import report, timed, timed_pair  # noqa: E402

from mixforge.stage_files import stage_files  # noqa: E402
from mixforge.pipelines.stages import STAGE_NAMES, check_workspace  # noqa: E402
from mixforge.workspace import Workspace  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workspace", type=Path, help="a built workspace (default: build the demo)")
    parser.add_argument("--config", type=Path, help="its config (for the no-op build)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    tmp = tempfile.TemporaryDirectory()
    config, root = args.config, args.workspace
    mixforge = [sys.executable, "-m", "mixforge.cli"]
    if root is None:
        root = Path(tmp.name) / "ws"
        subprocess.run(mixforge + ["build", "--demo", "--workspace", str(root)], check=True, capture_output=True)
        config = root / "demo.yaml"
    ws = Workspace(root.resolve())
    files = [str(f) for stage in STAGE_NAMES for f in stage_files(ws, stage)]
    size = sum(os.path.getsize(f) for f in files)
    assert check_workspace(ws, "digest") == {}, "the workspace is damaged: rebuild it first"

    def sha256sum():
        for i in range(0, len(files), 500):
            subprocess.run(["sha256sum", *files[i : i + 500]], check=True, capture_output=True)

    ours, baseline = timed_pair(lambda: check_workspace(ws, "digest"), sha256sum, args.repeat)
    sizes = timed(lambda: check_workspace(ws, "size"), args.repeat)
    noop = None
    if config is not None:
        t0 = time.perf_counter()
        subprocess.run(mixforge + ["build", str(config), "--workspace", str(ws.root)], check=True, capture_output=True)
        noop = round(time.perf_counter() - t0, 2)
    report("integrity check (digest)", ours["best"], baseline["best"],
           {"files": len(files), "mb": round(size / 1e6, 1), "gb_per_s": round(size / 1e9 / ours["best"], 2),
            "size_check_s": round(sizes["best"], 4), "noop_build_s": noop})


if __name__ == "__main__":
    main()
