"""Searches across a data change (issue 23), on the demo corpus, as a user runs them (the CLI):

v1: the demo without two of its sources, and each other source without a tenth of its documents;
    built, then searched with the full budget (regmix, `--runs`, default the demo's 16).
v2: the two sources and the missing tenth added; an incremental build; then three searches, each
    verified with fresh proxies (`--seeds`, 2) against uniform and natural:
    (a) a fresh search with the full budget (search.refresh_runs: off),
    (b) the search with the v1 runs carried and the refresh budget (search.refresh_runs: auto),
    (c) a fresh search with (b)'s small budget and no carried runs.
Prints the proxy FLOPs each search trained, the ratio (b)/(a), the verified figures side by side,
and the CV figure of (b)'s fit with and without the carried runs; appends to bench/out/results.jsonl.

    python bench/bench_reuse.py [--runs 16] [--seeds 2] [--left-out dictionary,man_pages]
    python bench/bench_reuse.py --again   # (b) alone again, on the last run's builds (after a change to it)
    python bench/bench_reuse.py --again b,c,a   # the three searches again on the last run's v1 runs and v2 build
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import OUT_DIR, report  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _records(path: Path) -> list[str]:
    import zstandard

    with open(path, "rb") as f:
        return io.TextIOWrapper(zstandard.ZstdDecompressor().stream_reader(f), encoding="utf-8").read().splitlines()


def _cli(*args: str) -> float:
    t0 = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "mixforge.cli", *args], capture_output=True, text=True)
    if run.returncode != 0:
        sys.exit(f"mixforge {' '.join(args)} failed:\n{run.stdout[-2000:]}\n{run.stderr[-4000:]}")
    print(run.stdout[-1500:], flush=True)
    return time.perf_counter() - t0


def _project(out: Path, left_out: list[str]) -> tuple[Path, Path, dict]:
    """The data of v1 under out/data (one folder per source), its config, a copy that searches
    without carried runs, and what v2 will add."""
    import yaml

    from mixforge.demo import DEMO_DIR

    demo = yaml.safe_load((DEMO_DIR / "demo.yaml").read_text())
    later: dict[str, list[str]] = {}
    for source in demo["sources"]:
        lines = _records(DEMO_DIR / source["path"])
        folder = out / "data" / source["label"]
        folder.mkdir(parents=True)
        keep = [] if source["label"] in left_out else lines[: round(len(lines) / 1.1)]
        if keep:
            (folder / "part-000.jsonl").write_text("\n".join(keep) + "\n")
        later[source["label"]] = lines[len(keep):]
        source["path"] = str(folder)
    demo["workspace"] = str(out / "ws")
    demo["quality"]["reference"] = [str(DEMO_DIR / r) for r in demo["quality"]["reference"]]
    demo["proxy"]["eval_texts"] = [str(DEMO_DIR / r) for r in demo["proxy"].get("eval_texts", [])]
    demo["sources"] = [s for s in demo["sources"] if s["label"] not in left_out]
    config = out / "carried.yaml"
    config.write_text(yaml.safe_dump(demo, sort_keys=False))
    everything = yaml.safe_load((DEMO_DIR / "demo.yaml").read_text())["sources"]
    v2 = {**demo, "sources": [{**s, "path": str(out / "data" / s["label"])} for s in everything]}
    return config, out / "fresh.yaml", {"v2": v2, "later": later}


def _search(config: Path, out: Path, name: str, seeds: int, runs: int | None = None) -> dict:
    """A search and its verify, their files kept under out/<name>/ (the next search reuses the folder)."""
    took = _cli("search", str(config), *(["--runs", str(runs)] if runs else []))
    folder = _latest(out)
    proposal = json.loads((folder / "proposal.json").read_text())
    verify_s = _cli("search", "verify", str(config), "--seeds", str(seeds))
    shutil.copytree(folder, out / name, dirs_exist_ok=True)
    return {"proposal": proposal, "verify": json.loads((folder / "verify.json").read_text()), "search_s": took, "verify_s": verify_s}


def _latest(out: Path) -> Path:
    return out / "ws" / "search" / json.loads((out / "ws" / "search" / "latest.json").read_text())["folder"]


def main() -> None:
    import yaml

    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=16, help="The full budget (the demo's search.runs).")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--left-out", default="dictionary,man_pages",
                        help="Sources v1 lacks (v2 adds them); 'none': v2 only appends the missing tenth.")
    parser.add_argument("--again", nargs="?", const="b", default=None,
                        help="Rerun these searches (default b) on the last run's v1 runs and v2 build (today's runs are removed "
                             "from the runs table first); the others come from their saved folders and results.jsonl.")
    args = parser.parse_args()
    out = _folder(args)
    if args.again:
        return _again(out, args)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    config, fresh, plan = _project(out, [] if args.left_out == "none" else args.left_out.split(","))
    cfg = yaml.safe_load(config.read_text())
    cfg["search"]["runs"] = args.runs
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))

    timings = {"build v1": _cli("build", str(config))}
    timings["search v1"] = _cli("search", str(config))
    shutil.copytree(_latest(out), out / "v1", dirs_exist_ok=True)
    for label, lines in plan["later"].items():  # v2: the left-out sources and the missing tenth
        if lines:
            (out / "data" / label / "part-001.jsonl").write_text("\n".join(lines) + "\n")
    v2 = plan["v2"]
    v2["search"]["runs"] = args.runs
    config.write_text(yaml.safe_dump(v2, sort_keys=False))
    fresh.write_text(yaml.safe_dump({**v2, "search": {**v2["search"], "refresh_runs": "off"}}, sort_keys=False))
    timings["build v2"] = _cli("build", str(config))  # in full: sources were added to the config

    results = {"b": _search(config, out, "b-carried", args.seeds)}
    small = results["b"]["proposal"]["evidence"]["trained"]
    results["c"] = _search(fresh, out, "c-fresh-small", args.seeds, runs=max(small, 4))
    results["a"] = _search(fresh, out, "a-fresh-full", args.seeds, runs=args.runs)
    _print(results, timings, args)


def _again(out: Path, args) -> None:
    from mixforge.proxy_training.runs_table import RunsTable
    from mixforge.workspace import Workspace, atomic_write_parquet

    v1_runs = set(json.loads((out / "v1" / "proposal.json").read_text())["runs_used"])
    table = RunsTable(Workspace(out / "ws"))
    for row in table.rows.glob("*.parquet"):
        if row.stem not in v1_runs:
            row.unlink()
    atomic_write_parquet(table.folder / "runs.parquet", table.load())
    rerun = args.again.split(",")
    earlier = [r for r in map(json.loads, (OUT_DIR / "results.jsonl").read_text().splitlines())
               if r["name"].startswith("reuse:") and r.get("left_out", "dictionary,man_pages") == args.left_out]
    last = earlier[-1] if earlier else {"timings": {}, "full_runs": args.runs}
    results = {}
    if "b" in rerun:
        results["b"] = _search(out / "carried.yaml", out, "b-carried", args.seeds)
    if "c" in rerun:  # (b)'s budget, from its saved folder when (b) is not rerun
        b = results["b"]["proposal"] if "b" in results else json.loads((out / "b-carried" / "proposal.json").read_text())
        results["c"] = _search(out / "fresh.yaml", out, "c-fresh-small", args.seeds, runs=max(b["evidence"]["trained"], 4))
    if "a" in rerun:
        results["a"] = _search(out / "fresh.yaml", out, "a-fresh-full", args.seeds, runs=args.runs)
    for key, name in (("a", "a-fresh-full"), ("b", "b-carried"), ("c", "c-fresh-small")):
        if key not in results:
            results[key] = {"proposal": json.loads((out / name / "proposal.json").read_text()),
                            "verify": json.loads((out / name / "verify.json").read_text()),
                            "search_s": last["rows"][key]["search_s"] if "rows" in last else float("nan")}
    if "a" not in rerun:
        args.runs = last["full_runs"]
    kept = [k for k in "abc" if k not in rerun]
    timings = {**last["timings"], **({f"({', '.join(kept)})": f"from {last.get('date', 'an earlier run')}, commit "
                                        f"{last.get('commit', 'unknown')}"} if kept else {})}
    _print(results, timings, args)


def _print(results: dict, timings: dict, args) -> None:
    from mixforge.config import load_config
    from mixforge.proxy_training.proxy import run_flops
    from mixforge.proxy_training.runs_table import tokens_summary
    from mixforge.workspace import Workspace

    out = _folder(args)
    cfg = load_config(out / "carried.yaml")
    per_run = run_flops(cfg, tokens_summary(Workspace(cfg.workspace_dir))["tokenizer"]["vocab_size"])
    flops = {k: len(r["proposal"]["runs_used"]) * per_run for k, r in results.items()}  # the runs each search trained on today's data
    print(f"\n{'search':28} {'runs':>5} {'FLOPs':>10} {'proposal':>18} {'uniform':>18} {'natural':>18} {'predicted':>10}")
    rows = {}
    for key, label in (("a", "(a) fresh, full budget"), ("b", "(b) carried + refresh"), ("c", "(c) fresh, small budget")):
        v = results[key]["verify"]["results"]
        cell = lambda name: f"{v[name]['mean']:.4f}+-{v[name]['std']:.4f}" if name in v else "-"  # noqa: E731
        pred = results[key]["proposal"]["predicted"]
        print(f"{label:28} {len(results[key]['proposal']['runs_used']):5d} {flops[key]:10.3g} {cell('proposal'):>18} "
              f"{cell('uniform'):>18} {cell('natural'):>18} {pred:10.4f}")
        rows[key] = {"runs": len(results[key]["proposal"]["runs_used"]), "flops": flops[key], "proposal": v["proposal"]["mean"],
                     "proposal_std": v["proposal"]["std"], "uniform": v.get("uniform", {}).get("mean"),
                     "natural": v.get("natural", {}).get("mean"), "predicted": pred, "search_s": round(results[key]["search_s"], 1)}
    evidence = results["b"]["proposal"]["evidence"]
    fit = results["b"]["proposal"]["fit"].get("evidence") or {}
    ratio = flops["b"] / flops["a"]
    within = abs(rows["b"]["proposal"] - rows["a"]["proposal"]) <= rows["a"]["proposal_std"]
    better = rows["b"]["proposal"] < rows["c"]["proposal"]
    print(f"\n(b) trained {evidence['trained']} runs, carried {evidence['carried']} from {evidence.get('carried_from')}; "
          f"FLOPs (b)/(a) = {ratio:.2f} (goal <= 0.30); (b) within one std of (a): {within}; (b) better than (c): {better}")
    print(f"(b) fit: CV Spearman with carried {fit.get('cv_spearman_with_carried')}, without {fit.get('cv_spearman_without_carried')}, "
          f"carried weight {fit.get('carried_weight')}; changed components {evidence.get('changed_components')}")
    print("timings: " + ", ".join(f"{k} {v:.0f} s" if isinstance(v, float) else f"{k} {v}" for k, v in timings.items()))
    fits = {"v1": json.loads((out / "v1" / "proposal.json").read_text())["fit"]}
    fits.update({f"({k})": results[k]["proposal"]["fit"] for k in ("a", "b", "c")})
    names = list(fits["v1"]["candidates"])
    print("\nout-of-fold Spearman of auto's candidates (content: the content predictor)")
    print(f"{'search':20}" + "".join(f"{n:>11}" for n in names))
    for label, fit in fits.items():
        print(f"{label:20}" + "".join(f"{fit['candidates'].get(n, {}).get('spearman', float('nan')):11.3f}" for n in names))
    report("reuse: search after a data change, carried (b) vs fresh full (a)", results["b"]["search_s"], results["a"]["search_s"],
           {"flops_ratio": round(ratio, 3), "rows": rows, "evidence": evidence, "fit_evidence": fit, "within_one_std": within,
            "better_than_small_fresh": better, "full_runs": args.runs, "seeds": args.seeds, "timings": timings,
            "left_out": args.left_out})


def _folder(args) -> Path:
    return OUT_DIR / ("reuse" if args.left_out == "dictionary,man_pages" else f"reuse-{args.left_out.replace(',', '-')}")


if __name__ == "__main__":
    main()
