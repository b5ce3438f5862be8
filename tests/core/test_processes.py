"""No orphaned workers: `mixforge build` stops its children (datatrove's pool, manager and
forkserver, Prefect's temporary server) on SIGTERM, and a rerun after a SIGKILL of the main
process alone (which no handler sees) finds the leftovers and stops them before it builds.
Its commands run with Prefect's temporary server in their process group, as in a terminal."""

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from conftest import ephemeral_env, mixforge_cmd, wait_until, workspace_with_tokens
from mixforge.processes import alive

pytestmark = pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc (Linux)")


def _group(pgid: int) -> set[tuple[int, int]]:
    """Live (pid, start time) of every process in process group `pgid` (zombies are dead)."""
    out = set()
    for d in Path("/proc").iterdir():
        try:
            text = (d / "stat").read_text() if d.name.isdigit() else ""
        except OSError:
            continue
        if text:
            fields = text[text.rindex(")") + 2 :].split()
            if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
                out.add((int(d.name), int(fields[19])))
    return out


def _start_build(config: Path, *extra: str) -> subprocess.Popen:
    # SIGINT as in a terminal: a background job (CI's shell) starts with it ignored, inherited across exec
    return subprocess.Popen(mixforge_cmd() + ["build", str(config), *extra], start_new_session=True, env=ephemeral_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _in_filter_with_children(proc: subprocess.Popen, ws: Path):
    """True once the build is in its filter stage and its record lists every child it has now
    (at least Prefect's server and datatrove's workers)."""
    assert proc.poll() is None, f"the build ended early: {proc.stderr.read()[-2000:]}"
    if not (ws / "filter.partial").exists():
        return False
    record = json.loads((ws / ".build.pid").read_text())
    children = _group(proc.pid) - {tuple(record["main"])}
    return len(children) >= 3 and children <= {tuple(c) for c in record["children"]}


@pytest.fixture
def group_reaper():
    """Kill whatever process groups a test started, whatever it asserted."""
    groups: list[int] = []
    yield groups.append
    for pgid in groups:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.mark.timeout(240)
@pytest.mark.parametrize("how", ["kill PID", "Ctrl-C"])
def test_sigterm_and_ctrl_c_stop_every_child(slice_config, group_reaper, how):
    ws = slice_config.parent / "ws"
    proc = _start_build(slice_config)
    group_reaper(proc.pid)
    wait_until(lambda: _in_filter_with_children(proc, ws), 180, "the filter stage with workers")
    assert len(_group(proc.pid)) >= 4  # main, Prefect's server, datatrove's workers: there is something to stop
    if how == "kill PID":
        proc.send_signal(signal.SIGTERM)  # to the main process only
    else:  # a terminal sends SIGINT to the whole foreground group: Prefect's server and the workers too
        os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=30) == 130
    err = proc.stderr.read()
    assert "interrupted" in err and "Traceback" not in err, err[-3000:]
    wait_until(lambda: not _group(proc.pid), 30, "no process of the build's group left")
    assert not (ws / ".build.pid").exists()


@pytest.mark.timeout(300)
def test_rerun_after_sigkill_stops_the_leftovers(slice_config, group_reaper):
    ws = slice_config.parent / "ws"
    proc = _start_build(slice_config, "--until", "filter")
    group_reaper(proc.pid)
    wait_until(lambda: _in_filter_with_children(proc, ws), 180, "the filter stage with workers")
    proc.kill()  # the main process only: no handler runs
    proc.wait()
    orphans = _group(proc.pid)
    assert orphans, "SIGKILL of the main process left no children (nothing to reap: the test would prove nothing)"

    rerun = subprocess.run(mixforge_cmd() + ["build", str(slice_config), "--until", "filter"], capture_output=True,
                           text=True, timeout=240)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "leftover process(es) of an interrupted `mixforge build`" in rerun.stderr
    assert not [o for o in orphans if alive(o)]
    assert (ws / "filter" / "_stage.json").exists() and not (ws / ".build.pid").exists()


@pytest.mark.timeout(240)
def test_a_sweep_after_a_killed_sweep_stops_its_leftovers(tmp_path, group_reaper):
    """Sweeps may run side by side (one record each); a dead one's Prefect server is stopped."""
    config = workspace_with_tokens(tmp_path)
    proc = subprocess.Popen(mixforge_cmd() + ["proxy", "sweep", str(config), "--runs", "200"], cwd=tmp_path, env=ephemeral_env(),
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    group_reaper(proc.pid)
    record = tmp_path / "ws" / ".runs" / f"sweep-{proc.pid}.json"

    def recorded():
        assert proc.poll() is None, f"the sweep ended early: {proc.stderr.read()[-2000:]}"
        children = {tuple(c) for c in json.loads(record.read_text())["children"]} if record.exists() else set()
        return children and _group(proc.pid) - {tuple(json.loads(record.read_text())["main"])} <= children

    wait_until(recorded, 150, "the sweep's children in its record")
    proc.kill()
    proc.wait()
    orphans = _group(proc.pid)
    assert orphans, "nothing outlived the sweep: the test would prove nothing"
    rerun = subprocess.run(mixforge_cmd() + ["proxy", "sweep", str(config), "--runs", "1"], cwd=tmp_path,
                           capture_output=True, text=True, timeout=180)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "leftover process(es) of an interrupted `mixforge sweep`" in rerun.stderr
    assert not [o for o in orphans if alive(o)] and not list(record.parent.iterdir())


def test_a_live_build_on_the_workspace_is_not_reaped(slice_config, tmp_path):
    """A record whose main process is alive is another build running: refused, nothing killed."""
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        from mixforge.processes import identity

        ws = tmp_path / "ws"
        ws.mkdir()
        (ws / ".build.pid").write_text(json.dumps({"main": identity(sleeper.pid), "children": []}))
        run = subprocess.run(mixforge_cmd() + ["build", str(slice_config)], capture_output=True, text=True, timeout=120)
        assert run.returncode == 2
        assert f"pid {sleeper.pid}" in run.stderr and "Traceback" not in run.stderr
        assert sleeper.poll() is None
    finally:
        sleeper.kill()
        sleeper.wait()
