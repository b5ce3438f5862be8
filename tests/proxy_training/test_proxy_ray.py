"""Proxy sweeps on a real 2-node Ray cluster (127.0.0.1): the runs go to the workers, the driver
alone writes the runs table, and the rows are the local sweep's (same run ids, metrics within
float rounding), even when a worker is killed in the middle of a run."""

import threading

import pytest
import yaml

from conftest import kill_first_task, workspace_with_tokens
from mixforge.config import load_config
from mixforge.flows.proxy import sweep_flow
from mixforge.proxy_training.runs_table import RunsTable
from mixforge.workspace import Workspace

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900), pytest.mark.xdist_group("ray")]


def _config(folder, executor: str):
    folder.mkdir()
    config = workspace_with_tokens(folder)
    data = yaml.safe_load(config.read_text())
    data |= {"executor": executor, "ray": {"memory_per_task_gb": 0.25}}  # the test nodes are small
    config.write_text(yaml.safe_dump(data))
    return config


@pytest.fixture
def one_thread():
    """torch on one thread here, as in each Ray task of `ray.cpus_per_task: 1` (Ray sets its
    OMP_NUM_THREADS): a different thread count sums in another order, and a proxy's figures move
    by about 0.1% after 24 steps."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_a_sweep_on_ray_gives_the_local_rows_with_a_worker_killed_mid_run(tmp_path, ray_cluster, one_thread):
    local = sweep_flow(str(_config(tmp_path / "local", "local")), runs=6)
    on_ray_config = _config(tmp_path / "ray", "ray")
    killed: list[int] = []
    stop = threading.Event()
    killer = threading.Thread(target=kill_first_task, args=("_train_run", killed, stop), daemon=True)
    killer.start()
    try:
        on_ray = sweep_flow(str(on_ray_config), runs=6)
    finally:
        stop.set()
        killer.join(timeout=5)
    assert killed, "no proxy run was seen running on the Ray workers"

    assert [r["run_id"] for r in on_ray] == [r["run_id"] for r in local] and len({r["run_id"] for r in local}) == 6
    metrics = [k for k in local[0] if k.startswith(("loss_", "bpb_", "acc_")) or k == "train_loss"]
    assert metrics
    for a, b in zip(local, on_ray):
        assert all(abs(a[k] - b[k]) <= 1e-4 * max(1.0, abs(a[k])) for k in metrics), (a["run_id"], {k: (a[k], b[k]) for k in metrics})
    table = RunsTable(Workspace(load_config(on_ray_config).workspace_dir)).load()
    assert sorted(table["run_id"].to_list()) == sorted(r["run_id"] for r in local)  # one row per run: none lost, none twice
