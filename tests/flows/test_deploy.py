"""`mixforge deploy`: a scheduled deployment of the build served against a real Prefect server
(started here on a free port with its own PREFECT_HOME), a run of it, --list, --delete, a work
pool deployment, and the mistakes a user can make (no server, bad schedule, bad --then)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import warnings
from datetime import datetime, timezone
from pathlib import Path

# Prefect makes its process-wide settings once, at import: imported here, before a test sets
# PREFECT_API_URL for itself, so that no later flow in this process keeps that URL
import prefect.context  # noqa: F401
import pytest

from conftest import SLICE, mixforge_cmd, write_config
from prefect_server import PREFECT, free_port, start_server, stop_group

DEPLOYMENT = "mixforge-scheduled-build/nightly"
# The served deployment's daily hour: 12 hours from now, so that no scheduled run fires during the
# test (at a fixed 03:00 a suite running then saw the scheduled build run beside its own).
HOUR = (datetime.now(timezone.utc).hour + 12) % 24
CRON = f"0 {HOUR} * * *"
def _post(api: str, path: str, body: dict) -> list | dict:
    req = urllib.request.Request(f"{api}{path}", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def _config(folder: Path) -> Path:
    """Two slice sources (32 documents): the cheapest real build."""
    (folder / "data").mkdir(parents=True)
    for label in ("bible", "code"):
        shutil.copy(SLICE / f"{label}.jsonl", folder / "data")
    return write_config(folder, [{"path": "data/bible.jsonl", "label": "bible", "kind": "prose"},
                                 {"path": "data/code.jsonl", "label": "code", "kind": "code"}])


pytestmark = pytest.mark.xdist_group("deploy")  # its tests share one module fixture: built once, on one worker


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A real `prefect server start` on a free port: (API URL, environment for clients)."""
    home = tmp_path_factory.mktemp("prefect-home")
    env = dict(os.environ, PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1",
               PREFECT_RUNNER_POLL_FREQUENCY="1", COLUMNS="200")
    proc, api = start_server(home, env)
    try:
        yield api, dict(env, PREFECT_API_URL=api)
    finally:
        stop_group(proc)


@pytest.fixture(scope="module")
def served(server, tmp_path_factory):
    """`mixforge deploy CONFIG --name nightly --cron CRON --serve`, running: (config, log)."""
    _, env = server
    config = _config(tmp_path_factory.mktemp("deploy"))
    log_path = config.parent / "serve.log"
    log = open(log_path, "wb")
    proc = subprocess.Popen(mixforge_cmd() + ["deploy", str(config), "--name", "nightly", "--cron", CRON, "--serve"],
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield config, log_path, proc
    finally:
        stop_group(proc)
        log.close()


def _cli(env: dict, *args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run(mixforge_cmd() + list(args), env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_served_deployment_schedules_runs_builds_lists_and_deletes(server, served):
    api, env = server
    config, log, proc = served
    # (a) the served deployment exists with its schedule and has scheduled runs in the future
    deadline, runs = time.monotonic() + 120, []
    while time.monotonic() < deadline and not runs:
        assert proc.poll() is None, log.read_text()[-3000:]
        deployments = _post(api, "/deployments/filter", {"deployments": {"name": {"any_": ["nightly"]}}})
        if deployments:
            runs = _post(api, "/flow_runs/filter", {"deployments": {"id": {"any_": [deployments[0]["id"]]}},
                                                     "flow_runs": {"state": {"type": {"any_": ["SCHEDULED"]}}}})
        time.sleep(1)
    assert runs, f"no scheduled runs after 120 s; serve log:\n{log.read_text()[-3000:]}"
    (deployment,) = deployments
    assert [s["schedule"]["cron"] for s in deployment["schedules"]] == [CRON]
    assert deployment["parameters"]["config_path"] == str(config.resolve())
    assert deployment["parameters"]["workspace"] == str(config.parent / "ws")
    now = datetime.now(timezone.utc)
    starts = [datetime.fromisoformat(r["expected_start_time"].replace("Z", "+00:00")) for r in runs]
    assert all(t > now and (t.hour, t.minute) == (HOUR, 0) for t in starts), starts
    out = log.read_text()
    assert DEPLOYMENT in out and f'"{CRON}"' in out and "Ctrl-C" in out

    # (b) a run of the deployment (up to dedup: the cheap stages) builds into the workspace
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    ws = config.parent / "ws"
    with temporary_settings(updates={PREFECT_API_URL: api}):
        run = run_deployment(DEPLOYMENT, parameters={"until": "dedup"}, timeout=300, poll_interval=1)
    assert run.state.is_completed(), (run.state, log.read_text()[-3000:])
    ledger = json.loads((ws / "ledger.json").read_text())
    assert set(ledger) == {"ingest", "filter", "dedup"} and ledger["ingest"]["docs_in"] == 32
    for row in ledger.values():
        assert row["docs_in"] == row["docs_out"] + sum(r["docs"] for r in row["removed"].values())
    assert sorted((ws / "dedup" / "docs").glob("*.parquet")) and not (ws / "embed").exists()
    # resumable like any build: a second run skips every finished stage (their records untouched)
    records = {s: (ws / s / "_stage.json").stat().st_mtime_ns for s in ledger}
    with temporary_settings(updates={PREFECT_API_URL: api}):
        again = run_deployment(DEPLOYMENT, parameters={"until": "dedup"}, timeout=300, poll_interval=1)
    assert again.state.is_completed(), again.state
    assert {s: (ws / s / "_stage.json").stat().st_mtime_ns for s in ledger} == records

    # (c) --list: the deployment, its schedule, its last run's state, its config
    listing = _cli(env, "deploy", "--list")
    assert listing.returncode == 0, listing.stderr
    row = next(line for line in listing.stdout.splitlines() if "nightly" in line)
    assert f'"{CRON}"' in row and "Completed" in row and str(config.resolve()) in row, listing.stdout

    # (d) --delete: gone from the server; deleting it again names it
    gone = _cli(env, "deploy", "--delete", "nightly")
    assert gone.returncode == 0 and "deleted" in gone.stdout, gone.stderr
    assert _post(api, "/deployments/filter", {"deployments": {"name": {"any_": ["nightly"]}}}) == []
    assert "nightly" not in _cli(env, "deploy", "--list").stdout
    twice = _cli(env, "deploy", "--delete", "nightly")
    assert twice.returncode == 2 and "no deployment named 'nightly'" in twice.stderr and "Traceback" not in twice.stderr


@pytest.mark.timeout(300)
def test_work_pool_deployment_is_registered_on_an_existing_process_pool(server, tmp_path):
    api, env = server
    config = _config(tmp_path)
    missing = _cli(env, "deploy", str(config), "--name", "pooled", "--interval", "3600", "--work-pool", "nopool")
    assert missing.returncode == 2 and "no such work pool" in missing.stderr and "Traceback" not in missing.stderr
    subprocess.run([PREFECT, "work-pool", "create", "local", "--type", "process"], env=env, capture_output=True,
                   timeout=120, check=True)
    done = _cli(env, "deploy", str(config), "--name", "pooled", "--interval", "3600", "--work-pool", "local")
    assert done.returncode == 0, done.stderr
    (deployment,) = _post(api, "/deployments/filter", {"deployments": {"name": {"any_": ["pooled"]}}})
    assert deployment["work_pool_name"] == "local"
    assert deployment["entrypoint"] == "mixforge.flows.scheduled.scheduled_build_flow"  # the installed package
    assert [s["schedule"]["interval"] for s in deployment["schedules"]] == [3600.0]
    assert deployment["parameters"]["config_path"] == str(config.resolve())
    assert _cli(env, "deploy", "--delete", "pooled").returncode == 0


def test_no_server_is_an_error_never_an_ephemeral_server(tmp_path):
    config = _config(tmp_path)
    env = dict(os.environ, PREFECT_HOME=str(tmp_path / "home"), PREFECT_API_URL=f"http://127.0.0.1:{free_port()}/api")
    t0 = time.monotonic()
    for args in (["deploy", str(config), "--name", "nightly", "--cron", "0 3 * * *"], ["deploy", "--list"]):
        run = _cli(env, *args, timeout=60)
        assert run.returncode == 2 and "no Prefect server answers at PREFECT_API_URL=" in run.stderr, run.stderr
        assert "Traceback" not in run.stderr and "prefect server start" in run.stderr
    env.pop("PREFECT_API_URL")
    run = _cli(env, "deploy", str(config), "--name", "nightly", "--cron", "0 3 * * *", timeout=60)
    assert run.returncode == 2 and "PREFECT_API_URL is not set" in run.stderr and "Traceback" not in run.stderr
    assert time.monotonic() - t0 < 60  # no temporary server was started and waited for
    assert not (tmp_path / "home" / "prefect.db").exists()


@pytest.mark.parametrize("args, message", [
    (["--cron", "0 3 * *"], "--cron '0 3 * *'"),
    (["--cron", "0 3 * * *", "--interval", "60"], "exactly one of --cron EXPR or --interval SECONDS"),
    ([], "exactly one of --cron EXPR or --interval SECONDS"),
    (["--cron", "0 3 * * *", "--timezone", "Mars/Olympus"], "Invalid timezone"),
    (["--cron", "0 3 * * *", "--then", "search,train"], "unknown stage 'train'"),
    (["--cron", "0 3 * * *", "--then", "export"], "--then export needs search too"),
    (["--cron", "0 3 * * *", "--serve", "--work-pool", "p"], "--serve or --work-pool"),
])
def test_bad_options_are_clear_errors(tmp_path, monkeypatch, capsys, args, message):
    """Checked before any server is asked (PREFECT_API_URL points nowhere: never reached)."""
    config = _config(tmp_path)
    monkeypatch.setenv("PREFECT_API_URL", f"http://127.0.0.1:{free_port()}/api")
    code, err = _main(monkeypatch, capsys, "deploy", str(config), "--name", "nightly", *args)
    assert code == 2 and message in err and "no Prefect server" not in err, err


def test_a_config_that_does_not_load_is_a_clear_error(tmp_path, monkeypatch, capsys):
    bad = tmp_path / "mixforge.yaml"
    bad.write_text("sources: [{path: data/x.jsonl}]\nfilters: {length: {min_chars: -1}}\n")
    for config, message in ((tmp_path / "nope.yaml", "config file not found"), (bad, "min_chars")):
        code, err = _main(monkeypatch, capsys, "deploy", str(config), "--name", "n", "--cron", "0 3 * * *")
        assert code == 2 and message in err and "Traceback" not in err, err


def _main(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    """`mixforge ARGS` in this process: (exit code, stderr)."""
    from mixforge.cli import main

    monkeypatch.setattr(sys, "argv", ["mixforge", *args])
    handler, formatwarning = signal.getsignal(signal.SIGTERM), warnings.formatwarning
    try:
        with pytest.raises(SystemExit) as exit_:
            main()
    finally:  # main() sets these for the process it runs in
        signal.signal(signal.SIGTERM, handler)
        warnings.formatwarning = formatwarning
    return exit_.value.code, capsys.readouterr().err
