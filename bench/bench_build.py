"""Benchmark: `mixforge build` (ingest -> filter -> dedup) vs. the bare datatrove pipeline a user
would write by hand for the same job, side by side in one run on the same data.

Both sides: the demo corpus (optionally concatenated --copies times), the same per-source filter
objects (built by mixforge's own `build_filters`, so settings cannot drift), the same
MinhashConfig, the same task counts and --workers. The baseline uses datatrove's JsonlReader,
its filters, ParquetWriter, its exact-dedup stages (unless --no-baseline-exact) and its four
MinHash stages, run with LocalPipelineExecutor. E.g.: bench_build.py --copies 3 --repeat 2
"""

from __future__ import annotations

import argparse
import inspect
import io
import os
import shutil
import sys
import tempfile
import time
from itertools import groupby
from pathlib import Path

import orjson
import yaml
import zstandard

os.environ.setdefault("TQDM_DISABLE", "1")  # datatrove's MinHash stages draw tqdm bars
sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import device_info, parquet_rows, report, timed_pair  # noqa: E402

from datatrove.executor import LocalPipelineExecutor  # noqa: E402
from datatrove.pipeline.base import PipelineStep  # noqa: E402
from datatrove.pipeline.dedup import exact_dedup as ed  # noqa: E402
from datatrove.pipeline.dedup import minhash as mh  # noqa: E402
from datatrove.pipeline.readers import JsonlReader, ParquetReader  # noqa: E402
from datatrove.pipeline.writers import ParquetWriter  # noqa: E402
from datatrove.utils.logging import logger  # noqa: E402

from mixforge.config import load_config  # noqa: E402
from mixforge.demo import write_demo_config  # noqa: E402
from mixforge.pipelines.build import build  # noqa: E402
from mixforge.pipelines.filter.stage import build_filters, filters_by_source  # noqa: E402


def make_input(folder: Path, copies: int) -> tuple[Path, int, int]:
    """One <label>.jsonl.zst per demo source holding `copies` concatenated copies of it. Copy k>0
    gets ids '<id>#copy<k>' so mixforge's duplicate-id check keeps it; exact dedup then removes
    it on both sides. Returns the config path, documents and uncompressed bytes."""
    folder.mkdir(parents=True)
    # the packaged demo config with every path made absolute by mixforge itself; then our inputs
    demo = yaml.safe_load(write_demo_config(folder.parent).read_text())
    n_docs = n_bytes = 0
    for source in demo["sources"]:
        raw = zstandard.ZstdDecompressor().stream_reader(open(source["path"], "rb")).read()
        records = [orjson.loads(line) for line in raw.splitlines() if line.strip()]
        out = io.BytesIO()
        for k in range(copies):
            for rec in records:
                rec = dict(rec, id=f"{rec['id']}#copy{k}" if k else rec["id"])
                out.write(orjson.dumps(rec) + b"\n")
        n_docs += len(records) * copies
        n_bytes += out.tell()
        target = folder / f"{source['label']}.jsonl.zst"
        target.write_bytes(zstandard.ZstdCompressor().compress(out.getvalue()))
        source["path"] = str(target)
    config = folder.parent / "bench.yaml"
    config.write_text(yaml.safe_dump(demo, sort_keys=False))
    return config, n_docs, n_bytes


def run_ours(config: Path, workspace: Path, workers: int, spent: dict) -> tuple[dict, dict]:
    """One build into a fresh workspace: its stage results and where its time went."""
    spent.clear()
    t0 = time.perf_counter()
    cfg = load_config(config, workspace=str(workspace))
    cfg.workers = workers
    # build() runs later stages too once they exist: stop at dedup, where the baseline stops
    until = {"until": "dedup"} if "until" in inspect.signature(build).parameters else {}
    results = build(cfg, force=True, **until)
    profile = {k: round(v, 2) for k, v in spent.items()}
    profile["rest (planning, counting, ledger, publish)"] = round(time.perf_counter() - t0 - sum(spent.values()), 2)
    return {r.stage: r for r in results}, profile


def profile_ours() -> dict[str, float]:
    """Put timers around what mixforge's stages call from this process: each datatrove executor
    run, and mixforge's own polars passes outside datatrove. Returns the running totals."""
    import mixforge.pipelines.dedup.stage as dedup
    import mixforge.pipelines.filter.stage as filters
    import mixforge.pipelines.ingest.stage as ingest

    spent: dict[str, float] = {}

    def wrap(module, name: str, label):
        original = getattr(module, name, None)
        if original is None:  # renamed or gone in this version: profile the rest
            return

        def timed_call(*a, **kw):
            t0 = time.perf_counter()
            try:
                return original(*a, **kw)
            finally:
                key = label if isinstance(label, str) else "datatrove: " + (a[5] if len(a) > 5 else kw["description"])
                spent[key] = spent.get(key, 0.0) + time.perf_counter() - t0

        setattr(module, name, timed_call)

    for module in (ingest, filters, dedup):  # each imported run_pipeline by name
        wrap(module, "run_pipeline", None)
    wrap(filters, "find_duplicate_ids", "polars: duplicate ids")
    wrap(dedup, "find_exact_duplicates", "polars: exact dedup")
    wrap(dedup, "_near_duplicates", "polars: near-duplicate join")
    wrap(dedup, "_write_duplicates", "polars: removed-duplicate rows")
    return spent


# ---------------------------------------------------------------- baseline: bare datatrove


class SilentExecutor(LocalPipelineExecutor):
    """Plain LocalPipelineExecutor whose tasks log to their files only (like mixforge's
    QuietExecutor; datatrove's local_rank is used for nothing but console logging)."""

    def _run_for_rank(self, rank: int, local_rank: int = 0, node_rank: int = -1):
        try:
            return super()._run_for_rank(rank, local_rank=1, node_rank=node_rank)
        finally:
            silence()


def silence() -> None:
    logger.remove()
    logger.add(sys.stderr, level="ERROR")


class PerSourceFilters(PipelineStep):
    """Runs each source's own datatrove filter steps (their run(), as if they were steps of a
    per-source pipeline) on that source's documents; the source is the input file's name."""

    name = "per-source filters"

    def __init__(self, chains: dict):
        super().__init__()
        self.chains = chains

    def run(self, data, rank: int = 0, world_size: int = 1):
        for key, docs in groupby(data, key=lambda d: Path(d.metadata["file_path"]).name.split(".")[0]):
            for _, step in self.chains[key]:
                docs = step(docs, rank, world_size)
            yield from docs


def normalised_text(doc) -> str:
    """Same normalisation as mixforge's exact dedup: lowercase, whitespace collapsed."""
    return " ".join(doc.text.lower().split())


def run_baseline(cfg, input_dir: Path, root: Path, workers: int, exact: bool) -> tuple[dict, Path]:
    """The hand-written pipeline. Returns seconds per step and its output folder."""
    times: dict[str, float] = {}

    def run(step: str, pipeline: list, tasks: int) -> None:
        t0 = time.perf_counter()
        SilentExecutor(pipeline, tasks=tasks, workers=min(workers, tasks), logging_dir=str(root / "logs" / step)).run()
        times[step] = time.perf_counter() - t0

    silence()
    n_in = len(list(input_dir.glob("*.jsonl.zst")))
    chains = {key: build_filters(s) for key, s in filters_by_source(cfg).items()}
    reader = JsonlReader(str(input_dir), glob_pattern="*.jsonl.zst", add_file_path=True)
    run("filter", [reader, PerSourceFilters(chains), ParquetWriter(str(root / "filtered"))], n_in)

    n_files = len(list((root / "filtered").glob("*.parquet")))
    d = cfg.dedup
    mc = mh.MinhashConfig(n_grams=d.n_grams, num_buckets=d.num_buckets, hashes_per_bucket=d.hashes_per_bucket, seed=d.seed)
    filtered = lambda: [ParquetReader(str(root / "filtered"))]  # noqa: E731
    if exact:  # datatrove's 3 exact stages; their filter step joins both MinHash passes below
        ex = ed.ExactDedupConfig(content_getter=normalised_text)
        run("exact: signatures", filtered() + [ed.ExactDedupSignature(str(root / "ex_sigs"), config=ex)], n_files)
        run("exact: find", [ed.ExactFindDedups(str(root / "ex_sigs"), str(root / "ex_dups"), config=ex)], 1)
        filtered = lambda: [ParquetReader(str(root / "filtered")), ed.ExactDedupFilter(str(root / "ex_dups"), config=ex)]  # noqa: E731
    run("minhash: signatures", filtered() + [mh.MinhashDedupSignature(str(root / "sigs"), config=mc)], n_files)
    run("minhash: buckets", [mh.MinhashDedupBuckets(str(root / "sigs"), str(root / "buckets"), config=mc)], mc.num_buckets)
    run("minhash: clusters", [mh.MinhashDedupCluster(str(root / "buckets"), str(root / "remove"), config=mc)], 1)
    final = [mh.MinhashDedupFilter(str(root / "remove")), ParquetWriter(str(root / "deduped"))]
    run("minhash: filter+write", filtered() + final, n_files)
    return times, root


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--copies", type=int, default=1, help="concatenate the demo corpus this many times")
    ap.add_argument("--workers", type=int, default=2, help="worker processes on both sides")
    ap.add_argument("--repeat", type=int, default=1, help="timed runs per side, interleaved (best is reported)")
    ap.add_argument("--no-warmup", action="store_true", help="skip the untimed first run of each side")
    ap.add_argument("--no-baseline-exact", action="store_true", help="baseline: MinHash only, no exact dedup")
    args = ap.parse_args(argv)
    os.environ.setdefault("MIXFORGE_PROGRESS", "0")  # no progress bars in benchmark output
    exact = not args.no_baseline_exact

    load = os.getloadavg()[0]  # other work on a shared machine skews both sides: record it
    tmp = Path(tempfile.mkdtemp(prefix="bench-build-", dir=os.environ.get("BENCH_TMP")))
    try:
        config, n_docs, n_bytes = make_input(tmp / "input", args.copies)
        cfg = load_config(config)
        runs, spent = iter(range(10_000)), profile_ours()
        ours = lambda: run_ours(config, tmp / f"ours-{next(runs)}", args.workers, spent)  # noqa: E731
        base = lambda: run_baseline(cfg, tmp / "input", tmp / f"base-{next(runs)}", args.workers, exact)  # noqa: E731
        print(f"build: {n_docs} docs, {n_bytes / 1e6:.1f} MB (demo corpus x{args.copies}), workers {args.workers}, "
              f"load average before {load:.2f}, device: {device_info()}")
        if not args.no_warmup:  # first run pays forkserver start and cold caches: not timed
            ours(), base()
        t_ours, t_base = timed_pair(ours, base, args.repeat)

        (stages, profile), (steps, base_root) = t_ours["result"], t_base["result"]  # of each side's best run
        counts = {  # kept documents: equal when both sides really run the same settings
            "after filter": (stages["filter"].counts["docs_out"], parquet_rows(base_root / "filtered")),
            "after dedup": (stages["dedup"].counts["docs_out"], parquet_rows(base_root / "deduped")),
        }
        print("  all runs (s): ours " + " ".join(f"{t:.2f}" for t in t_ours["times"])
              + " | baseline " + " ".join(f"{t:.2f}" for t in t_base["times"]))
        print("  ours, seconds per stage:    " + ", ".join(f"{s} {r.seconds:.2f}" for s, r in stages.items()))
        print("  ours, where the time goes:  " + ", ".join(f"{k} {v:.2f}" for k, v in profile.items()))
        print("  baseline, seconds per step: " + ", ".join(f"{s} {v:.2f}" for s, v in steps.items()))
        for where, (a, b) in counts.items():
            print(f"  docs kept {where}: ours {a}, baseline {b} (difference {a - b:+d})")
        print(f"  exact dedup: ours = polars pass; baseline = {'datatrove ExactDedup stages' if exact else 'none (MinHash only)'}")
        return report(f"build x{args.copies} w{args.workers}", t_ours["best"], t_base["best"], {
            "docs": n_docs, "mb": round(n_bytes / 1e6, 1), "workers": args.workers, "repeat": args.repeat,
            "load_before": round(load, 2), "baseline_exact": "datatrove" if exact else "none",
            "ours_docs_per_s": round(n_docs / t_ours["best"], 1), "baseline_docs_per_s": round(n_docs / t_base["best"], 1),
            "ours_median_s": round(t_ours["median"], 2), "baseline_median_s": round(t_base["median"], 2),
            "ours_stage_s": {s: round(r.seconds, 2) for s, r in stages.items()},
            "ours_profile_s": profile,
            "baseline_step_s": {s: round(v, 2) for s, v in steps.items()},
            "counts": {k: list(v) for k, v in counts.items()},
        })
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":  # datatrove's executors start worker processes that re-import this file
    main()
