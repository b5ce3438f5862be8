"""Shared fixtures: real fixture data, configs written to tmp folders, Prefect kept local."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
SLICE = FIXTURES / "slice"

# Prefect: a project-local home (one per pytest-xdist worker: each worker's flows start their own
# ephemeral server on its own database), no analytics, generous start-up for 2-core CI machines.
os.environ.setdefault("PREFECT_HOME", str(ROOT / ".prefect"))
if worker := os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["PREFECT_HOME"] = str(Path(os.environ["PREFECT_HOME"]) / worker)
    Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)  # Prefect makes the last folder only
    # The workers share the cores: each one's torch and BLAS threads (its subprocesses' too) take a
    # share, where each would take them all and the threads would wait on each other.
    share = max(1, (os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(name, str(share))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("MIXFORGE_PROGRESS", "0")


def pytest_configure(config):
    """One real Prefect server per process that runs tests (each pytest-xdist worker, or pytest
    itself without workers), in PREFECT_API_URL for its flows and the CLI commands it starts: each
    flow would otherwise start Prefect's temporary server anew, about 6 s a command on 2 cores.
    Set before any test module imports Prefect, which reads its settings once, at import. The
    temporary server stays tested: test_flow_e2e's first test and `make demo` run without one."""
    runs_tests = os.environ.get("PYTEST_XDIST_WORKER") or not getattr(config.option, "numprocesses", None)
    if runs_tests and not os.environ.get("PREFECT_API_URL"):
        from prefect_server import start_server

        config.prefect_server, os.environ["PREFECT_API_URL"] = start_server(Path(os.environ["PREFECT_HOME"]) / "server", loops=False)


def pytest_unconfigure(config):
    if server := getattr(config, "prefect_server", None):
        from prefect_server import stop_group

        stop_group(server)
        os.environ.pop("PREFECT_API_URL", None)

# The slice's sources, with the demo's kinds (see mixforge/demo/demo.yaml).
SLICE_KINDS = {
    "bible": "prose", "quotes": "prose", "manuals": "reference", "legal": "reference",
    "dictionary": "reference", "python_docs": "reference", "man_pages": "reference", "code": "code",
}


def write_config(folder: Path, sources: list[dict], **top) -> Path:
    """A config file in `folder` with a workspace beside it."""
    data = {"workspace": str(folder / "ws"), "workers": 2, "sources": sources, **top}
    path = folder / "mixforge.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def slice_sources(data: str | Path = "data") -> list[dict]:
    """The slice's sources as config entries, their files in the folder `data`."""
    return [{"path": f"{data}/{label}.jsonl", "label": label, "kind": kind} for label, kind in SLICE_KINDS.items()]


@pytest.fixture
def slice_config(tmp_path: Path) -> Path:
    """The committed demo slice (8 labels, 128 real documents) as a config."""
    data = tmp_path / "data"
    shutil.copytree(SLICE, data)
    return write_config(tmp_path, slice_sources())


def shared_once(tmp_path_factory, name: str, make) -> Path:
    """`make(folder)` run once per test session into a folder every pytest-xdist worker reads: the
    first worker to get here makes it (the others wait on a file lock), so a session fixture that
    builds a workspace costs one build, not one per worker. Read it, never write into it."""
    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base  # the session's folder, shared by its workers
    folder, done = root / name, root / f"{name}.done"
    with FileLock(str(root / f"{name}.lock")):
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            make(folder)
            done.touch()
    return folder


@pytest.fixture(scope="session")
def slice_built(tmp_path_factory) -> tuple[Path, Path]:
    """The slice built once per session by an uninterrupted `mixforge build`, with `slice_config`'s
    settings: (data folder, workspace). The reference that tests comparing a build of their own
    (killed and resumed, on Ray) read. Documents record the path of the file they came from, so a
    test's config must name this same data folder (`slice_config_over`) for byte-identical outputs;
    the workspace path is recorded nowhere in documents. The data folder lies outside the
    workspace's folder (the config's), so that outputs compared with that folder written as <root>
    (scripts/fault_inject.py's `outputs`) name the same data. Shared: read it, never write into it."""
    import subprocess

    def make(folder: Path) -> None:
        shutil.copytree(SLICE, folder / "data")
        (folder / "built").mkdir()
        config = write_config(folder / "built", slice_sources(folder / "data"))
        run = subprocess.run(mixforge_cmd() + ["build", str(config)], timeout=300, capture_output=True, text=True)
        assert run.returncode == 0, run.stderr[-3000:]

    folder = shared_once(tmp_path_factory, "slice-built", make)
    return folder / "data", folder / "built" / "ws"


def fault_inject_tool():
    """scripts/fault_inject.py as a module: its output comparison and its checks of a killed run."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("fault_inject", ROOT / "scripts" / "fault_inject.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


def slice_config_over(folder: Path, data: Path) -> Path:
    """`slice_config`'s settings in `folder` (workspace `folder/ws`), the sources read from `data`."""
    return write_config(folder, slice_sources(data))


def over_slice_built(slice_built: tuple[Path, Path], folder: Path) -> tuple[Path, list[str]]:
    """A config in `folder` over the session's built slice (its data and workspace, read only: an
    export writes nothing there) and the components of its tokens stage."""
    import json

    data, ws = slice_built
    config = write_config(folder, slice_sources(data), workspace=str(ws))
    return config, sorted(json.loads((ws / "tokens" / "_stage.json").read_text())["counts"]["components"])


def wait_until(predicate, timeout: float, what: str):
    """`predicate()`'s first true value, polled every 0.1 s; AssertionError after `timeout` s."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def mixforge_cmd() -> list[str]:
    return [sys.executable, "-m", "mixforge.cli"]


def ephemeral_env() -> dict:
    """This environment without PREFECT_API_URL: a command run in it starts Prefect's temporary
    server in its own process group, as `make demo` and a user's terminal do (the other tests'
    commands use this process's server: pytest_configure)."""
    return {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}


def slice_token_streams(folder: Path, labels=("bible", "code"), vocab_size: int = 1024):
    """Slice documents of `labels` tokenized with a small BPE trained on them: (tokenizer,
    {label: int64 token stream}). Shared by the proxy-training tests."""
    import json

    import numpy as np

    from mixforge.pipelines.tokens.tokenizer import tokenize_components, train_default_tokenizer

    docs = [(label, json.loads(l)["text"]) for label in labels for l in (SLICE / f"{label}.jsonl").read_text().splitlines()]
    tok = train_default_tokenizer([t for _, t in docs], folder / "tokenizer.json", vocab_size=vocab_size, seed=0)
    tokenize_components(docs, tok, folder)
    return tok, {c: np.fromfile(folder / f"{c}.bin", dtype=np.uint16).astype(np.int64) for c in labels}


LABELS = ("bible", "code", "legal")


def workspace_with_tokens(tmp_path: Path, tokens: int = 20_000, extra: tuple[str, ...] = ()) -> Path:
    """A config whose workspace holds a tokens stage built from the slice (labels as components),
    as `mixforge build` leaves it, without running the embedding stages. Shared by the proxy and
    search tests. `extra`: slice labels added as components with the same tokenizer (trained on
    LABELS' documents), as an incremental build that adds a source leaves the tokens."""
    import json

    from mixforge.pipelines.tokens.eval_tasks import next_line_task
    from mixforge.pipelines.tokens.tokenizer import tokenize_components, tokenizer_identity, train_default_tokenizer
    from mixforge.workspace import atomic_write_json

    config = tmp_path / "mixforge.yaml"
    config.write_text(yaml.safe_dump({
        "workspace": "ws", "sources": [{"path": "unused.jsonl"}],
        "proxy": {"tokens": tokens, "seq_len": 32, "batch_size": 8, "warmup_steps": 5, "lr": 3e-3, "vocab_size": 512},
    }))
    out = tmp_path / "ws" / "tokens" / "extra"
    labels = (*LABELS, *extra)
    docs = [(label, json.loads(l)["text"]) for label in labels for l in (SLICE / f"{label}.jsonl").read_text().splitlines()]
    tok = train_default_tokenizer([t for c, t in docs if c in LABELS], out / "tokenizer.json", vocab_size=512, seed=0)
    held = [d for i, d in enumerate(docs) if i % 8 == 0]
    tokenize_components([d for i, d in enumerate(docs) if i % 8], tok, out / "train")
    meta = tokenize_components(held, tok, out / "heldout")
    held_bytes = {c: sum(len(t.encode()) for cc, t in held if cc == c) for c in labels}
    task = next_line_task(held, n_items=30, seed=0)
    (out / "tasks").mkdir(exist_ok=True)
    (out / "tasks" / "next_line.jsonl").write_text("".join(json.dumps(i) + "\n" for i in task))
    counts = {"tokenizer": tokenizer_identity(out / "tokenizer.json") | {"source": "default BPE"},
              "components": {c: {"train_tokens": 1, "heldout_tokens": meta[c]["tokens"], "heldout_bytes": held_bytes[c]} for c in labels}}
    train_meta = {c: json.loads((out / "train" / f"{c}.json").read_text())["tokens"] for c in labels}
    for c in labels:
        counts["components"][c]["train_tokens"] = train_meta[c]
    atomic_write_json(tmp_path / "ws" / "tokens" / "_stage.json", {"stage": "tokens", "fingerprint": "x", "counts": counts})
    return config


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    """The slice built through the tokens stage, components are 4 clusters: (config path, config,
    root). Shared by the export tests (and by the pytest-xdist workers: read it, never write into it)."""
    from mixforge.config import load_config
    from mixforge.pipelines.build import build

    def make(root: Path) -> None:
        shutil.copytree(SLICE, root / "data")
        build(load_config(write_config(root, slice_sources(), cluster={"n_components": 4}, proxy={"vocab_size": 1024})))

    root = shared_once(tmp_path_factory, "export", make)
    return root / "mixforge.yaml", load_config(root / "mixforge.yaml"), root


def private_built(built, folder: Path):
    """A copy of `built`'s workspace in `folder`, for a test that changes it (the shared one is read
    by the other worker meanwhile): (config path, config), the sources still read from `built`'s data
    through a link `folder/data`, so that they are spelt and resolve as in `built`'s config and its
    stages are done for this config too (an export checks that)."""
    from mixforge.config import load_config

    config, _, root = built
    settings = yaml.safe_load(config.read_text())
    shutil.copytree(root / "ws", folder / "ws", symlinks=True)
    (folder / "data").symlink_to(root / "data")
    path = write_config(folder, slice_sources(), **{k: v for k, v in settings.items() if k not in ("workspace", "sources", "workers")})
    return path, load_config(path)


def proxies_in_turn(cfg):
    """A search's trainer that trains its proxies one after another in this process (what a
    notebook would pass to run_search or verify)."""
    from mixforge.proxy_training.proxy import run_proxy

    return lambda mixtures, seeds, label, checkpoints=0: [
        run_proxy(cfg, w, seed=s, checkpoints=checkpoints) for w, s in zip(mixtures, seeds)]


@pytest.fixture(scope="session")
def s3_store():
    """A real S3-compatible server (moto's) on 127.0.0.1 for this test process, its endpoint and
    credentials in os.environ (read by s3fs here and by the CLI commands tests start): the
    environment variables. One per process: fsspec caches its S3 filesystems by their arguments,
    not by the endpoint the environment names."""
    from s3_server import start_s3
    from prefect_server import stop_group

    proc, env = start_s3()
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield env
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        stop_group(proc)


@pytest.fixture(scope="session")
def ray_cluster():
    """Two Ray nodes of one CPU each on 127.0.0.1, dashboard and usage stats off, connected to.
    One per test process, started for the first test that asks and stopped at the session's end:
    a second cluster started in a process after the first was shut down left datatrove's Ray
    tasks waiting forever. Modules that use it put their tests in xdist_group("ray"), so one
    pytest-xdist worker runs them all."""
    from mixforge.pipelines.run.shards import LOOPBACK_ENV

    saved = {k: os.environ.get(k) for k in LOOPBACK_ENV}
    os.environ.update(LOOPBACK_ENV)
    import ray
    from ray.cluster_utils import Cluster

    # one declared GPU per node (Ray takes the count on trust): GPU stages' actors get scheduled,
    # while torch still finds no CUDA and runs on the CPU
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "num_gpus": 1, "object_store_memory": 80 << 20,
                                                             "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1, num_gpus=1, object_store_memory=80 << 20)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False)
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


def kill_first_task(name: str, killed: list, stop) -> None:
    """SIGKILL the first Ray worker process seen running task `name` (Ray titles it ray::<name>);
    its pid goes in `killed`. Run it in a thread; it stops when `stop` (a threading.Event) is set."""
    import signal
    import time

    while not stop.is_set() and not killed:
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                title = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if title.startswith(f"ray::{name}"):
                os.kill(int(proc.name), signal.SIGKILL)
                killed.append(int(proc.name))
                return
        time.sleep(0.05)
