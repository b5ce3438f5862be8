"""Megatron export throughput: `run_export` (read the kept documents, tokenize, sample to the
mixture, shuffle, write .bin/.idx + manifest with sha256 + dataset card) against datatrove's own
pipeline a user would otherwise run (ParquetReader -> MegatronDocumentTokenizer with the same
tokenizer.json), on the same documents (the demo workspace's kept corpus), in one run. The mixture
is the natural one with every document once, so both write the same documents and tokens.
Then the MDS export against MosaicML's MDSWriter (bench/mds_writer_baseline.py).

    python bench/bench_export.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import BENCH_DIR, OUT_DIR, demo_workspace, report, timed, timed_pair  # noqa: E402

ROOT = BENCH_DIR.parent


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    workspace = demo_workspace()

    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.readers import ParquetReader
    from datatrove.pipeline.tokens import MegatronDocumentTokenizer

    import polars as pl

    from mixforge.config import load_config
    from mixforge.pipelines.export.write import run_export
    from mixforge.pipelines.export.plan import load_table
    from mixforge.pipelines.export.formats import read_megatron_index
    from mixforge.workspace import Workspace

    cfg = load_config(workspace / "demo.yaml")
    ws = Workspace(cfg.workspace_dir)
    table = load_table(ws, OUT_DIR / "export-scratch")  # untimed: the natural shares, in exactly the tokens the export counts
    counts = table.frame.group_by(pl.col("component").cast(pl.String)).agg(pl.col("length").sum())
    total = counts["length"].sum()
    natural = {c: n / total for c, n in counts.iter_rows()}
    ours_dir, base_dir = OUT_DIR / "export-ours", OUT_DIR / "export-datatrove"
    tokenizer = str(ws.stage_dir("tokens") / "extra" / "tokenizer.json")

    def ours():
        shutil.rmtree(ours_dir, ignore_errors=True)
        return run_export(cfg, natural, ours_dir, "megatron", shard_tokens=10**12)["tokens"]

    def datatrove():
        shutil.rmtree(base_dir, ignore_errors=True)
        LocalPipelineExecutor([ParquetReader(str(ws.docs_dir("prune"))),
                               MegatronDocumentTokenizer(str(base_dir), tokenizer_name_or_path=tokenizer)],
                              tasks=1, workers=1, logging_dir=str(base_dir / "logs")).run()
        idx = next(base_dir.glob("*.idx"))
        return int(read_megatron_index(idx)["lengths"].sum())

    a, b = timed_pair(ours, datatrove, args.repeat)
    report("export megatron (demo)", a["best"], b["best"], {
        "tokens_ours": a["result"], "tokens_datatrove": b["result"],
        "tokens_per_s_ours": round(a["result"] / a["best"]), "tokens_per_s_datatrove": round(b["result"] / b["best"])})
    bench_mds(cfg, ws, natural, tokenizer, args.repeat)


def bench_mds(cfg, ws, natural: dict, tokenizer: str, repeat: int) -> None:
    """Our MDS export against MosaicML's MDSWriter fed by a user's read + tokenize loop, which runs
    in the readers' environment and times itself (the two sides run one after the other)."""
    from mixforge.pipelines.export.write import run_export
    from mixforge.pipelines.tokens.tokenizer import eos_id, load_tokenizer

    python = ROOT / ".venv-readers" / "bin" / "python"
    if not python.exists():
        print("export mds: skipped, the readers' environment is missing (make readers)")
        return
    out = subprocess.run([str(python), str(ROOT / "bench" / "mds_writer_baseline.py"), str(ws.docs_dir("prune")), tokenizer,
                          str(OUT_DIR / "export-mdswriter"), str(repeat), str(eos_id(load_tokenizer(tokenizer)))],
                         check=True, capture_output=True, text=True).stdout
    base = json.loads(out.split("RESULT ", 1)[1])
    ours_dir = OUT_DIR / "export-mds"

    def ours():
        shutil.rmtree(ours_dir, ignore_errors=True)
        return run_export(cfg, natural, ours_dir, "mds", shard_tokens=10**12)["tokens"]

    a = timed(ours, repeat)
    report("export mds (demo)", a["best"], min(base["times"]), {
        "tokens_ours": a["result"], "tokens_mdswriter": base["tokens"],
        "tokens_per_s_ours": round(a["result"] / a["best"]), "tokens_per_s_mdswriter": round(base["tokens"] / min(base["times"]))})


if __name__ == "__main__":
    main()
