"""Benchmark: an incremental rebuild after 10% new documents vs. a full rebuild of the same final
corpus, side by side in one run on the demo corpus (every stage, ingest to tokens).

Each demo source becomes a folder: part-000.jsonl (90% of its records) and part-001.jsonl (every
tenth record). Ours: build part-000, add part-001, rebuild (timed). Baseline: one build of both
files in a fresh workspace (what a user without incremental builds runs). Prints wall time per
stage, the ratio, and how far the kept documents of each document stage differ (the incremental
build assigns new documents to the saved centroids; the full one refits them).
E.g.: bench_incremental.py [--every 10] [--backend transformer|static]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import yaml
import zstandard

os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("MIXFORGE_PROGRESS", "0")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import report  # noqa: E402

from mixforge.config import load_config  # noqa: E402
from mixforge.demo import write_demo_config  # noqa: E402
from mixforge.ledger import parquet_files  # noqa: E402
from mixforge.pipelines.build import build  # noqa: E402


def split_corpus(demo: dict, data: Path, every: int) -> tuple[list[dict], list[Path], int]:
    """Folders of part-000 (kept back: every `every`-th record goes to part-001). Returns the
    sources, the part-001 files (written aside, under data/later/) and the records held back."""
    sources, later, held = [], [], 0
    for source in demo["sources"]:
        label = source["label"]
        lines = io.TextIOWrapper(zstandard.ZstdDecompressor().stream_reader(open(source["path"], "rb")), encoding="utf-8").read().splitlines()
        (data / label).mkdir(parents=True)
        (data / label / "part-000.jsonl").write_text("".join(l + "\n" for i, l in enumerate(lines) if i % every != every - 1))
        new = [l for i, l in enumerate(lines) if i % every == every - 1]
        (data / "later" / label).mkdir(parents=True)
        (data / "later" / label / "part-001.jsonl").write_text("".join(l + "\n" for l in new))
        later.append(data / "later" / label / "part-001.jsonl")
        held += len(new)
        sources.append(source | {"path": str(data / label)})
    return sources, later, held


def config(root: Path, demo: dict, sources: list[dict], backend: str | None) -> Path:
    cfg = dict(demo, workspace=str(root / "ws"), sources=sources)
    if backend:
        cfg["embed"] = dict(cfg.get("embed") or {}, backend=backend)
    path = root / "mixforge.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def timed_build(path: Path) -> tuple[float, dict[str, float]]:
    t0 = time.perf_counter()
    results = build(load_config(path))
    return time.perf_counter() - t0, {r.stage: r.seconds for r in results}


def kept_ids(ws: Path, stage: str) -> set[str]:
    import polars as pl

    files = parquet_files(ws / stage / "docs")
    return set(pl.concat([pl.read_parquet(f, columns=["id"]) for f in files])["id"].to_list()) if files else set()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--every", type=int, default=10, help="every n-th record of each source arrives in the second build")
    ap.add_argument("--backend", default=None, help="embed.backend (default: the demo's, transformer)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-incremental-") as tmp:
        tmp = Path(tmp)
        demo = yaml.safe_load(write_demo_config(tmp / "demo").read_text())
        sources, later, held = split_corpus(demo, tmp / "data", args.every)
        inc, full = tmp / "incremental", tmp / "full"
        inc.mkdir(), full.mkdir()
        inc_cfg = config(inc, demo, sources, args.backend)
        first_s, _ = timed_build(inc_cfg)
        # the full side reads the same folders once part-001 is in them: copy the data for it first
        for f in later:
            shutil.copy(f, tmp / "data" / f.parent.name / f.name)
        full_data = tmp / "full_data"
        shutil.copytree(tmp / "data", full_data, ignore=shutil.ignore_patterns("later"))
        full_cfg = config(full, demo, [s | {"path": str(full_data / s["label"])} for s in sources], args.backend)
        inc_s, inc_stages = timed_build(inc_cfg)
        full_s, full_stages = timed_build(full_cfg)
        print(f"first build (90%): {first_s:.1f} s; {held} records added")
        print(f"{'stage':<12}{'incremental s':>15}{'full s':>10}{'share':>8}")
        for stage, seconds in full_stages.items():
            print(f"{stage:<12}{inc_stages.get(stage, 0):>15.2f}{seconds:>10.2f}{inc_stages.get(stage, 0) / max(seconds, 1e-9):>8.1%}")
        differ = {}
        for stage in ("filter", "dedup", "prune"):
            a, b = kept_ids(inc / "ws", stage), kept_ids(full / "ws", stage)
            differ[stage] = {"kept_incremental": len(a), "kept_full": len(b), "only_incremental": len(a - b), "only_full": len(b - a)}
        print("kept documents:", json.dumps(differ))
        report("incremental build (+10%)", inc_s, full_s, {
            "share_of_full": round(inc_s / full_s, 3), "records_added": held, "first_build_s": round(first_s, 1),
            "stages_incremental_s": {k: round(v, 2) for k, v in inc_stages.items()},
            "stages_full_s": {k: round(v, 2) for k, v in full_stages.items()}, "kept": differ,
            "backend": args.backend or "transformer"})


if __name__ == "__main__":
    main()
