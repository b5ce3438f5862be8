"""Benchmark: ingest reading its sources from object storage vs the same files on disk, side by
side in one run. The store is a real S3-compatible server on 127.0.0.1 (moto's, as the tests use);
the data is the demo corpus (8 .jsonl.zst files), concatenated --copies times per source. Both
sides run `ingest` alone with the same settings and workers; their document counts are checked
equal (the tests check the documents themselves). Prints MB/s of compressed input read on each side and the ratio.
E.g.: bench_object_store.py --copies 8 --repeat 2
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT / "tests"))  # the test suite's S3 server
from harness import device_info, parquet_rows, report, timed_pair  # noqa: E402
from s3_server import start_s3, upload  # noqa: E402
from prefect_server import stop_group  # noqa: E402

from mixforge.config import load_config  # noqa: E402
from mixforge.demo import write_demo_config  # noqa: E402


def make_corpus(folder: Path, copies: int) -> list[dict]:
    """One <label>.jsonl.zst per demo source, `copies` zstd frames of it in a row (ingest reads
    the frames on; ids repeat across copies, which ingest does not check). Returns the sources."""
    demo = yaml.safe_load(write_demo_config(folder / "demo").read_text())
    folder.mkdir(parents=True, exist_ok=True)
    sources = []
    for s in demo["sources"]:
        data = Path(s["path"]).read_bytes()
        out = folder / "data" / Path(s["path"]).name
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(data * copies)
        sources.append({"path": str(out), "label": s["label"], "kind": s.get("kind", "prose")})
    return sources


def ingest(folder: Path, sources: list[dict], workers: int):
    import shutil

    from mixforge.pipelines.build import build

    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    config = folder / "mixforge.yaml"
    config.write_text(yaml.safe_dump({"workspace": str(folder / "ws"), "workers": workers, "sources": sources}))
    build(load_config(config), until="ingest")
    return folder / "ws"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    proc, env = start_s3()
    os.environ.update(env)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-object-store-") as tmp:
            tmp = Path(tmp)
            local = make_corpus(tmp / "corpus", args.copies)
            upload(tmp / "corpus" / "data", "s3://bench/corpus")
            remote = [dict(s, path=f"s3://bench/corpus/{Path(s['path']).name}") for s in local]
            size = sum(Path(s["path"]).stat().st_size for s in local)
            ours, baseline = timed_pair(lambda: ingest(tmp / "s3", remote, args.workers),
                                        lambda: ingest(tmp / "disk", local, args.workers), repeat=args.repeat)
            docs = parquet_rows(ours["result"] / "ingest" / "docs")
            assert docs == parquet_rows(baseline["result"] / "ingest" / "docs"), "the two ingests differ"
    finally:
        stop_group(proc)
    mb = size / 2**20
    report("ingest: s3 (moto) vs disk", ours["best"], baseline["best"],
           {"compressed_MB": round(mb, 1), "documents": docs, "s3_MB_per_s": round(mb / ours["best"], 1),
            "disk_MB_per_s": round(mb / baseline["best"], 1), "workers": args.workers, "copies": args.copies,
            "device_detail": device_info()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
