"""Benchmark: the build at N, 4N and 16N documents of the scale corpus (scripts/make_scale_corpus.py),
cheap settings (length filter, exact + MinHash dedup, 64 embedding tokens, `embed.backend: static`
unless --backend transformer), then a parquet export of the uniform mixture, each stage in its own
process: wall time, documents/s and peak RSS per stage, and the ratio of peak RSS at 16N to N
(goal: within 1.3x; docs/s flat or rising).

    python bench/bench_scale.py [--docs 10000] [--factors 1 4 16] [--backend static] [--out bench/out/scale]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import scale  # noqa: E402
from harness import OUT_DIR, device_info, git_commit  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--docs", type=int, default=10_000)
    parser.add_argument("--factors", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--piece", type=int, default=3000, help="largest document in characters (smaller gives more pieces)")
    parser.add_argument("--out", type=Path, default=OUT_DIR / "scale")
    parser.add_argument("--backend", default="static", help="embed.backend (static: distilled once per workspace)")
    parser.add_argument("--ray-workers", type=int, nargs="*", default=[1, 2],
                        help="also build N documents with executor: ray on a local Ray of this many CPUs (none: skip)")
    args = parser.parse_args()
    rows = {}
    for factor in args.factors:
        n = args.docs * factor
        corpus = scale.make_corpus(args.out / f"corpus-{n}", n, piece=args.piece)
        config = scale.write_config(corpus, args.out / f"run-{n}", embed={"max_tokens": 64, "backend": args.backend})
        rows[n] = scale.measure(config)
        for r in rows[n]:
            r["docs_per_s"] = round(n / r["seconds"], 1)
            print(f"{n:>8} docs  {r['stage']:<11} {r['seconds']:8.1f} s  {r['docs_per_s']:9.1f} docs/s  peak {r['peak_rss_mb']:7.1f} MB", flush=True)
    small, large = min(rows), max(rows)
    peak = lambda n: max(r["peak_rss_mb"] for r in rows[n])  # noqa: E731
    print(f"peak RSS {large:,} docs / {small:,} docs: {peak(large) / peak(small):.2f}x (goal <= 1.3x)")
    for a, b in zip(rows[small], rows[large]):
        print(f"  {a['stage']:<11} peak {b['peak_rss_mb'] / a['peak_rss_mb']:.2f}x  docs/s {b['docs_per_s'] / a['docs_per_s']:.2f}x")
    local_total = sum(r["seconds"] for r in rows[small])
    for workers in args.ray_workers:
        config = scale.write_config(args.out / f"corpus-{small}", args.out / f"run-{small}-ray{workers}", executor="ray", workers=workers)
        whole = scale.stage_peak(config, "tokens")  # every stage in one process: Ray starts once
        same = scale.build_outputs(config) == scale.build_outputs(args.out / f"run-{small}" / "mixforge.yaml")
        print(f"ray, {workers} worker(s), {small:,} docs: {whole['seconds']:.1f} s (local, stage by stage: {local_total:.1f} s, "
              f"ratio local/ray {local_total / whole['seconds']:.2f}x), peak {whole['peak_rss_mb']:.0f} MB, outputs identical: {same}")
        rows[f"ray{workers}"] = [whole | {"identical_to_local": same}]
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    with (OUT_DIR / "results.jsonl").open("a") as f:
        f.write(json.dumps({"name": "bench_scale", "commit": git_commit(), "device": device_info(), "stages": rows}) + "\n")


if __name__ == "__main__":
    main()
