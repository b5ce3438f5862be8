"""A real `prefect server start` on 127.0.0.1 for tests: started on a free port, waited for until
/health answers, stopped (its whole process group) by the caller's finaliser."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

PREFECT = str(Path(sys.executable).parent / "prefect")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# The server's loops that only scheduled deployments, paused or late runs and automations need; each
# wakes every few seconds, which a test run's server for plain flow runs can spare the cores.
LOOPS = ("SCHEDULER", "LATE_RUNS", "FOREMAN", "PAUSE_EXPIRATIONS", "REPOSSESSOR", "CANCELLATION_CLEANUP",
         "CLEANUP_RECONCILER", "TRIGGERS", "DB_VACUUM")


def start_server(home: Path, env: dict | None = None, timeout: float = 120, loops: bool = True) -> tuple[subprocess.Popen, str]:
    """(the server's process, its API URL). Its database and log live in `home` (its PREFECT_HOME).
    `loops=False`: without the background loops of LOOPS (flow runs are still recorded)."""
    home.mkdir(parents=True, exist_ok=True)
    env = dict(env or os.environ, PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1")
    if not loops:
        env |= {f"PREFECT_SERVER_SERVICES_{name}_ENABLED": "false" for name in LOOPS}
    env.pop("PREFECT_API_URL", None)
    port = free_port()
    with open(home / "server.log", "wb") as log:
        proc = subprocess.Popen([PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port), "--no-ui"],
                                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    api = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + timeout
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"prefect server exited: {(home / 'server.log').read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{api}/health", timeout=2) as r:
                    if r.status == 200:
                        return proc, api
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"prefect server not healthy after {timeout} s")
            time.sleep(0.5)
    except BaseException:
        stop_group(proc)
        raise


def stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM the process group, SIGKILL what is left after 20 s."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        except ProcessLookupError:
            pass
