"""Build a scale corpus's workspace one stage at a time, each in its own process, and measure
every stage's wall time and peak resident memory (shared by bench_scale.py and the memory test).

Peak memory is the `ru_maxrss` that `wait4` reports for the stage's process: the largest RSS of
that process or of any worker it waited for (datatrove's pool), so a stage that loads the corpus
into one process shows it. The stage is forked from a small launcher (see LAUNCH).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
POST_DEDUP = ["embed", "cluster", "quality", "prune", "components", "tokens"]
STAGES = ["ingest", "filter", "dedup", *POST_DEDUP, "export"]  # export: parquet (texts), see RUN_EXPORT
KINDS = {"code": "code", "docs": "reference", "man": "reference", "legal": "reference"}
CHEAP_FILTERS = {name: {"enabled": False} for name in ("language", "gopher_repetition", "gopher_quality", "c4_quality", "fineweb_quality")}


def make_corpus(out: Path, docs: int, seed: int = 0, piece: int = 6000, per_file: int = 500) -> Path:
    """scripts/make_scale_corpus.py into `out` (kept when it is already there)."""
    if not (out / "labels.json").exists():
        subprocess.run([sys.executable, str(ROOT / "scripts" / "make_scale_corpus.py"), str(out), "--docs", str(docs),
                        "--seed", str(seed), "--piece", str(piece), "--per-file", str(per_file)], check=True, timeout=900)
    return out


def write_config(corpus: Path, folder: Path, **settings) -> Path:
    """Cheap settings for scale runs: the length filter only, exact + MinHash dedup, small shards."""
    labels = sorted(p.name for p in corpus.iterdir() if p.is_dir())
    data = {"workspace": str(folder / "ws"), "workers": 2, "shard_mb": 1, "seed": 0,
            "sources": [{"path": str(corpus / label), "label": label, "kind": KINDS.get(label, "reference")} for label in labels],
            "filters": dict(CHEAP_FILTERS), "embed": {"max_tokens": 64}, "cluster": {"n_components": 4}, **settings}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "mixforge.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


RUN_STAGE = """
import sys
from mixforge.config import load_config
from mixforge.pipelines.build import build
build(load_config(sys.argv[1]), until=sys.argv[2])
"""

# a materialised parquet export of the uniform mixture, every component's tokens available, in shards of 1M tokens
RUN_EXPORT = """
import json, sys
from pathlib import Path
from mixforge.config import load_config
from mixforge.pipelines.export.write import run_export
cfg = load_config(sys.argv[1])
comps = sorted(json.loads((cfg.workspace_dir / "tokens" / "_stage.json").read_text())["counts"]["components"])
run_export(cfg, {c: 1 / len(comps) for c in comps}, Path(sys.argv[1]).parent / "export", "parquet",
           shard_tokens=1_000_000, overwrite=True)
"""


def measure(config: Path, stages: list[str] = STAGES, timeout: float = 1800) -> list[dict]:
    """Every stage in order, each measured in a process of its own (see `stage_peak`)."""
    return [stage_peak(config, stage, timeout) for stage in stages]


# Forks the stage from a small process and reports its rusage: Linux carries a process's RSS
# high-water mark across fork and exec, so a stage started straight from a large parent (pytest
# holding a corpus) would report the parent's peak as its own.
LAUNCH = """
import json, os, subprocess, sys
proc = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(proc.pid, 0)
with open(sys.argv[1], "w") as f:
    json.dump({"code": os.waitstatus_to_exitcode(status), "maxrss_kb": usage.ru_maxrss}, f)
"""


def stage_peak(config: Path, stage: str, timeout: float = 1800) -> dict:
    """Run the build up to `stage` (earlier stages are done and skip), or the export, in a fresh process:
    {stage, seconds, peak_rss_mb}, the peak from wait4's rusage of that process and the workers it waited for."""
    log, report = config.parent / f"{stage}.log", config.parent / f"{stage}.rusage.json"
    report.unlink(missing_ok=True)
    script = RUN_EXPORT if stage == "export" else RUN_STAGE
    t0 = time.perf_counter()
    with log.open("wb") as err:
        proc = subprocess.Popen([sys.executable, "-c", LAUNCH, str(report), sys.executable, "-c", script, str(config), stage],
                                stdout=subprocess.DEVNULL, stderr=err, env={**os.environ, "TQDM_DISABLE": "1"},
                                start_new_session=True)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise TimeoutError(f"stage {stage} ran past {timeout} s (log: {log})") from None
    result = json.loads(report.read_text()) if report.exists() else {"code": proc.returncode, "maxrss_kb": 0}
    if proc.returncode != 0 or result["code"] != 0:
        raise RuntimeError(f"stage {stage} failed ({log}):\n{log.read_text(errors='replace')[-4000:]}")
    return {"stage": stage, "seconds": round(time.perf_counter() - t0, 2), "peak_rss_mb": round(result["maxrss_kb"] / 1024, 1)}


def build_outputs(config: Path) -> dict:
    """What two executors must agree on: kept ids and text digests, the ledger, every token shard."""
    import polars as pl

    from mixforge.config import load_config
    from mixforge.digests import shard_digests
    from mixforge.workspace import Workspace

    ws = Workspace(load_config(config).workspace_dir)
    kept = pl.read_parquet(sorted(ws.docs_dir("prune").glob("*.parquet")), columns=["id", "text"])
    return {"kept": sorted(zip(kept["id"].to_list(), kept["text"].hash().to_list())),
            "ledger": json.loads(ws.ledger_path.read_text()),
            "tokens": shard_digests(ws.stage_dir("tokens") / "extra")}
