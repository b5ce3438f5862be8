"""The build on a real 2-node Ray cluster (loopback only) gives the local executor's outputs,
even when a worker process is killed in the middle of a stage (embed, and tokens: one task per
prune shard)."""

import json
import os
import threading

import numpy as np
import polars as pl
import pytest

from conftest import SLICE, kill_first_task, slice_config_over
from mixforge.config import load_config
from mixforge.pipelines.build import build
from mixforge.pipelines.embed.stage import embed_shard
from mixforge.pipelines.run.shards import map_shards
from mixforge.workspace import Workspace

# one Ray cluster at a time under pytest-xdist: the Ray tests share one worker
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900), pytest.mark.xdist_group("ray")]


def outputs(ws: Workspace) -> dict:
    """Everything the build promises to be the same: kept documents, ledger, components, tokens."""
    extra = ws.stage_dir("tokens") / "extra"
    return {
        "kept": pl.read_parquet(sorted(ws.docs_dir("prune").glob("*.parquet"))).sort("id"),
        "ledger": json.loads(ws.ledger_path.read_text()),
        "components": pl.read_parquet(sorted((ws.stage_dir("components") / "extra" / "components").glob("*.parquet"))).sort("id"),
        "tokens": {str(p.relative_to(extra)): p.read_bytes() for p in sorted(extra.glob("*/*.bin"))},
        "index": (extra / "documents.parquet").read_bytes(),
        "lengths": {str(p.relative_to(extra)): p.read_bytes() for p in sorted(extra.glob("*/*.lengths.npy"))},
    }


def test_ray_build_equals_local_even_with_a_worker_killed(slice_built, tmp_path, ray_cluster):
    data, local_ws = slice_built  # the session's local build (the default executor) of the same data folder
    on_ray = load_config(slice_config_over(tmp_path, data), workspace=str(tmp_path / "ray-ws"))
    assert on_ray.executor == "local"  # the config the local build ran
    on_ray.executor = "ray"
    on_ray.ray.memory_per_task_gb = 0.25  # the test nodes are small; Ray waits forever for more than a node has
    killed: dict[str, list[int]] = {"embed_shard": [], "tokenize_shard": []}
    stop = threading.Event()
    killers = [threading.Thread(target=kill_first_task, args=(name, pids, stop), daemon=True) for name, pids in killed.items()]
    for killer in killers:
        killer.start()
    try:
        build(on_ray)
    finally:
        stop.set()
        for killer in killers:
            killer.join(timeout=5)
    assert all(killed.values()), f"a task was never seen running on the Ray workers: {killed}"
    a, b = outputs(Workspace(local_ws)), outputs(Workspace(on_ray.workspace_dir))
    assert a["ledger"] == b["ledger"]
    assert a["kept"].equals(b["kept"]) and a["components"].equals(b["components"])
    assert a["tokens"] == b["tokens"] and a["tokens"] and a["lengths"] == b["lengths"]
    assert a["index"] == b["index"]  # documents.parquet, byte for byte
    ledger = b["ledger"]
    for stage in ledger.values():  # the invariant held through the kill
        assert stage["docs_in"] == stage["docs_out"] + stage["docs_removed"]


def test_gpu_stage_runs_on_one_actor_per_gpu_with_the_local_vectors(slice_config, tmp_path, ray_cluster):
    cfg = load_config(slice_config)
    cfg.executor, cfg.ray.gpus_per_embed_task, cfg.ray.memory_per_task_gb = "ray", 1, 0.25
    # eval: a function the workers can import by name; the expression names the actor running it (None in a task)
    ran_on = map_shards(cfg, eval, [("__import__('ray').get_runtime_context().get_actor_id()",)] * 6, "actors", gpus=1)
    assert len(ran_on) == 6 and None not in ran_on and len(set(ran_on)) <= 2  # two declared GPUs: two actors
    shards = []
    for label in ("bible", "code", "legal"):
        rows = [json.loads(l) for l in (SLICE / f"{label}.jsonl").read_text().splitlines()[:5]]
        shards.append(tmp_path / f"{label}.parquet")
        pl.DataFrame({"id": [f"{label}-{i}" for i in range(len(rows))], "text": [r["text"] for r in rows]}).write_parquet(shards[-1])
    calls = lambda out: [(cfg.embed, str(tmp_path / "models"), str(f), str(out)) for f in shards]  # noqa: E731
    on_actors = map_shards(cfg, embed_shard, calls(tmp_path / "actors"), "embed", gpus=1)
    cfg.executor = "local"
    local = map_shards(cfg, embed_shard, calls(tmp_path / "local"), "embed")
    assert [r[:3] for r in on_actors] == [r[:3] for r in local]
    for f in shards:
        assert np.array_equal(np.load(tmp_path / "actors" / f"{f.stem}.npy"), np.load(tmp_path / "local" / f"{f.stem}.npy"))


def test_without_an_address_a_build_starts_its_own_ray_while_another_cluster_runs(slice_config, ray_cluster):
    """No ray.address means a new local Ray, even when a cluster already runs on the machine (a
    user's `ray start`, here the module's): plain ray.init() would attach to that one and refuse."""
    import subprocess
    import sys

    import yaml

    config = yaml.safe_load(slice_config.read_text())
    slice_config.write_text(yaml.safe_dump(config | {"executor": "ray"}))
    session = ("import sys, ray; from mixforge.config import load_config; from mixforge.pipelines.run.shards import ray_session\n"
               "with ray_session(load_config(sys.argv[1])):\n"
               "    print(ray.get(ray.remote(lambda: 1).remote()), ray.get_runtime_context().gcs_address, flush=True)\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    run = subprocess.run([sys.executable, "-c", session, str(slice_config)], env=env, capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stdout + run.stderr[-3000:]
    ones, address = run.stdout.split()[-2:]
    assert ones == "1" and address != ray_cluster.address  # its own Ray, not the running cluster
