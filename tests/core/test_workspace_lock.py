"""One writer per workspace (issue 22, item 7): while a command writes a workspace (here a real
`mixforge proxy sweep`), every other writer (build, proxy train, proxy sweep, search, search
verify) is refused at once naming the holder's pid and command, readers keep working, and the
lock is gone once the holder exits, is stopped with SIGTERM or killed with SIGKILL, even while
processes it forked live on."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import mixforge_cmd, wait_until, workspace_with_tokens
from mixforge.errors import MixforgeError
from mixforge.processes import alive, identity
from mixforge.workspace_lock import LOCK_NAME, writer_lock

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="flock and /proc (Linux)")

# A writer in a process of its own, holding the lock as the commands do; with "fork", it forks a
# child that outlives it (as a pool worker can) before it says it holds the lock.
HOLDER = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from mixforge.workspace_lock import writer_lock

    with writer_lock(Path(sys.argv[1]), "proxy sweep"):
        if "fork" in sys.argv:
            child = os.fork()
            if child == 0:
                time.sleep(60)
                os._exit(0)
            print(child, flush=True)
        print("locked", flush=True)
        time.sleep(0 if "exit" in sys.argv else 120)
""")


@pytest.fixture
def started():
    """Start processes in sessions of their own; at the end, SIGKILL what is left of each group."""
    procs = []

    def start(args, **kw):
        proc = subprocess.Popen(args, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def _free(ws: Path) -> bool:
    """Whether this process can take the lock now (and lets it go again)."""
    try:
        with writer_lock(ws, "test"):
            return True
    except MixforgeError:
        return False


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(mixforge_cmd() + list(args), capture_output=True, text=True, timeout=120, cwd=cwd)


@pytest.mark.timeout(420)
def test_writers_are_refused_while_a_sweep_writes_and_readers_work(tmp_path, started):
    config = workspace_with_tokens(tmp_path)
    (tmp_path / "unused.jsonl").write_text('{"text": "a source for build to plan"}\n')
    (tmp_path / "mix.yaml").write_text("bible: 1\ncode: 1\nlegal: 1\n")
    ws = tmp_path / "ws"
    sweep = started(mixforge_cmd() + ["proxy", "sweep", str(config), "--runs", "500"], cwd=tmp_path)
    lock = ws / LOCK_NAME
    wait_until(lambda: lock.exists() and f"pid {sweep.pid}" in lock.read_text() or sweep.poll() is not None, 120, "the sweep's lock")
    assert sweep.poll() is None, sweep.stderr.read()[-3000:]

    writers = [["build", str(config)], ["proxy", "train", str(config), "--mixture", "mix.yaml"],
               ["proxy", "sweep", str(config), "--runs", "1"], ["search", str(config), "--runs", "2"],
               ["search", "verify", str(config), "--folder", str(ws / "search" / "none")]]
    for args in writers:
        start = time.monotonic()
        run = _cli(*args, cwd=tmp_path)
        assert run.returncode == 2, (args, run.stderr[-3000:])
        assert f"pid {sweep.pid}" in run.stderr and "`mixforge proxy sweep`" in run.stderr, (args, run.stderr)
        assert "Traceback" not in run.stderr and time.monotonic() - start < 60
    assert not (ws / "runs").exists() or sweep.poll() is None  # nothing but the sweep wrote runs
    assert not _free(ws)

    status = _cli("status", str(config), cwd=tmp_path)  # a reader
    assert status.returncode == 0, status.stderr[-3000:]
    assert "tokens" in status.stdout

    sweep.send_signal(signal.SIGTERM)  # unwinds like Ctrl-C: the lock is let go
    assert sweep.wait(timeout=120) == 130, sweep.stderr.read()[-3000:]
    assert _free(ws) and lock.read_text() == ""


@pytest.mark.timeout(120)
@pytest.mark.parametrize("ending", ["exit", "SIGTERM", "SIGKILL"])
def test_the_lock_goes_with_its_holder(tmp_path, started, ending):
    ws = tmp_path / "ws"
    holder = started([sys.executable, "-c", HOLDER, str(ws), "fork", *(["exit"] if ending == "exit" else [])])
    child = int(holder.stdout.readline())
    assert holder.stdout.readline().strip() == "locked", holder.stderr.read()
    if ending != "exit":
        assert not _free(ws)
        refused = subprocess.run([sys.executable, "-c", HOLDER, str(ws)], capture_output=True, text=True, timeout=60)
        assert refused.returncode == 1 and f"pid {holder.pid}" in refused.stderr and "MixforgeError" in refused.stderr
        os.kill(holder.pid, getattr(signal, ending))
    holder.wait(timeout=60)
    assert wait_until(lambda: _free(ws), 10, "the lock to be let go")
    assert alive(identity(child)), "the forked child died with its parent: the test would prove nothing"


@pytest.mark.timeout(60)
def test_the_lock_is_reentrant_in_its_process_and_refused_elsewhere(tmp_path):
    ws = tmp_path / "ws"
    with writer_lock(ws, "deploy (a scheduled build)"):
        with writer_lock(ws, "build"):  # a scheduled build's own build and search
            pass
        assert (ws / LOCK_NAME).read_text().startswith(f"`mixforge deploy (a scheduled build)` (pid {os.getpid()}")
        other = subprocess.run([sys.executable, "-c", HOLDER, str(ws)], capture_output=True, text=True, timeout=60)
        assert other.returncode == 1 and f"pid {os.getpid()}" in other.stderr and "one command writes a workspace" in other.stderr
    assert _free(ws)


@pytest.mark.timeout(120)
def test_a_scheduled_build_is_refused_while_another_writer_holds_the_workspace(tmp_path, started):
    from mixforge.flows.scheduled import scheduled_build_flow

    config = workspace_with_tokens(tmp_path)
    holder = started([sys.executable, "-c", HOLDER, str(tmp_path / "ws")])
    assert holder.stdout.readline().strip() == "locked", holder.stderr.read()
    with pytest.raises(MixforgeError, match=rf"pid {holder.pid}\b.*one command writes a workspace"):
        scheduled_build_flow.fn(str(config))  # the flow's body, without starting Prefect
