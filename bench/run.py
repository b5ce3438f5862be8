"""Run every benchmark in bench/ with its defaults (`make bench`).

Each benchmark is its own process: datatrove's executors start worker processes that re-import
the main module, and a fresh process per benchmark keeps one's warm caches out of another's
timings. Results are printed and appended to bench/out/results.jsonl.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent


def main() -> int:
    benchmarks = sorted(BENCH_DIR.glob("bench_*.py"))
    failed = []
    for path in benchmarks:
        print(f"== {path.name}", flush=True)
        if subprocess.run([sys.executable, str(path)]).returncode != 0:
            failed.append(path.name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
