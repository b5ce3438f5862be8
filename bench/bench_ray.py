"""The tokens stage and a proxy sweep on a local Ray (1 and 2 workers, 127.0.0.1) against the local
executor, in one run on the demo workspace (built first with `mixforge build --demo`, reused when
unchanged). tokens: the stage alone, its folder removed before each side, then the token shards,
lengths and documents.parquet checked byte-identical to the local executor's. Sweep: the same 6
mixtures and seeds from an empty runs table each time (local: the demo's `proxy.processes: 2`
worker processes), run ids checked equal. Ray's start-up is in its times (a build or sweep starts
its own local Ray).

    python bench/bench_ray.py [--runs 6]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import demo_workspace, report  # noqa: E402


def _config(workspace: Path, executor: str, workers: int) -> Path:
    import yaml

    data = yaml.safe_load((workspace / "demo.yaml").read_text())
    data |= {"executor": executor, "workers": workers, "ray": {"memory_per_task_gb": 0.5}}
    path = workspace / f"bench-{executor}-{workers}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _tokens(config: Path) -> tuple[float, dict[str, bytes]]:
    from mixforge.config import load_config
    from mixforge.pipelines.build import build

    cfg = load_config(config)
    shutil.rmtree(cfg.workspace_dir / "tokens", ignore_errors=True)
    t0 = time.perf_counter()
    results = build(cfg, until="tokens")
    seconds = time.perf_counter() - t0
    assert [r.stage for r in results if r.status == "ran"] == ["tokens"], [(r.stage, r.status) for r in results]
    extra = cfg.workspace_dir / "tokens" / "extra"
    files = {p.relative_to(extra).as_posix(): p.read_bytes() for p in sorted(extra.rglob("*"))
             if p.is_file() and (p.suffix in (".bin", ".npy") or p.name == "documents.parquet")}
    return seconds, files


def _sweep(config: Path, runs: int) -> tuple[float, list[str]]:
    from mixforge.config import load_config
    from mixforge.flows.proxy import sweep_flow

    shutil.rmtree(load_config(config).workspace_dir / "runs", ignore_errors=True)
    t0 = time.perf_counter()
    rows = sweep_flow(str(config), runs=runs)
    return time.perf_counter() - t0, [r["run_id"] for r in rows]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=6)
    args = parser.parse_args()
    workspace = demo_workspace()
    sides = {"local": _config(workspace, "local", 0), "ray-1": _config(workspace, "ray", 1), "ray-2": _config(workspace, "ray", 2)}
    try:
        tokens = {name: _tokens(config) for name, config in sides.items()}
        for name in ("ray-1", "ray-2"):
            assert tokens[name][1] == tokens["local"][1], f"{name}: token shards differ from the local executor's"
        sweeps = {name: _sweep(config, args.runs) for name, config in sides.items()}
        for name in ("ray-1", "ray-2"):
            assert sweeps[name][1] == sweeps["local"][1], f"{name}: run ids differ from the local sweep's"
    finally:
        _tokens(sides["local"])  # the demo workspace left as the local executor builds it
        shutil.rmtree(workspace / "runs", ignore_errors=True)
    for name in ("ray-1", "ray-2"):
        report(f"tokens: local vs {name}", tokens[name][0], tokens["local"][0],
               {"identical_outputs": True, "files": len(tokens["local"][1])})
        report(f"sweep {args.runs} runs: local vs {name}", sweeps[name][0], sweeps["local"][0],
               {"identical_run_ids": True, "local_processes": 2})


if __name__ == "__main__":
    main()
