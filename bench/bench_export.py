"""Megatron export throughput: `run_export` (read the kept documents, tokenize, sample to the
mixture, shuffle, write .bin/.idx + manifest with sha256 + dataset card) against datatrove's own
pipeline a user would otherwise run (ParquetReader -> MegatronDocumentTokenizer with the same
tokenizer.json), on the same documents (the demo workspace's kept corpus), in one run. The mixture
is the natural one with every document once, so both write the same documents and tokens.

    python bench/bench_export.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import OUT_DIR, report, timed_pair  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    workspace = OUT_DIR / "demo"
    subprocess.run([sys.executable, "-m", "mixforge.cli", "build", "--demo", "--workspace", str(workspace)],
                   check=True, stdout=subprocess.DEVNULL)

    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.readers import ParquetReader
    from datatrove.pipeline.tokens import MegatronDocumentTokenizer

    from mixforge.config import load_config
    from mixforge.pipelines.export import load_documents, run_export
    from mixforge.pipelines.export_formats import read_megatron_index
    from mixforge.workspace import Workspace

    cfg = load_config(workspace / "demo.yaml")
    ws = Workspace(cfg.workspace_dir)
    docs, _ = load_documents(ws)  # untimed: the natural shares, in exactly the tokens the export counts
    counts: dict[str, int] = {}
    for d in docs:
        counts[d[1]] = counts.get(d[1], 0) + len(d[3]) + 1
    total = sum(counts.values())
    natural = {c: n / total for c, n in counts.items()}
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


if __name__ == "__main__":
    main()
