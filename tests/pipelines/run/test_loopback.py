"""Every server mixforge starts listens on loopback only: during a real `mixforge build` with
`executor: ray` and no address (mixforge starts a local Ray, and the CLI Prefect's temporary
server), the listening TCP sockets of the build's process tree are read from /proc and each must
be on 127.0.0.1 or ::1."""

from __future__ import annotations

import ipaddress
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import mixforge_cmd

pytestmark = [pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc"),
              pytest.mark.xdist_group("ray")]  # one Ray cluster at a time under pytest-xdist


def descendants(root: int) -> dict[int, str]:
    """pid -> command name of `root` and every process below it."""
    parents: dict[int, int] = {}
    names: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name, rest = stat[stat.index("(") + 1: stat.rindex(")")], stat[stat.rindex(")") + 2:].split()
        parents[int(entry.name)], names[int(entry.name)] = int(rest[1]), name
    tree, grew = {root}, True
    while grew:
        below = {pid for pid, parent in parents.items() if parent in tree} - tree
        tree |= below
        grew = bool(below)
    return {pid: names.get(pid, "?") for pid in tree}


def _address(hex_address: str) -> str:
    raw = bytes.fromhex(hex_address)
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw[::-1])
    return socket.inet_ntop(socket.AF_INET6, b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4)))


def listening(pids: dict[int, str]) -> set[tuple[str, int, str]]:
    """(address, port, process name) of the TCP sockets in LISTEN state that `pids` hold."""
    owner: dict[int, str] = {}
    for pid, name in pids.items():
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link.startswith("socket:["):
                    owner[int(link[8:-1])] = name
        except OSError:  # the process ended meanwhile
            continue
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            cols = line.split()
            if cols[3] == "0A" and int(cols[9]) in owner:  # 0A: LISTEN
                address, port = cols[1].split(":")
                found.add((_address(address), int(port, 16), owner[int(cols[9])]))
    return found


def is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    return ip.is_loopback or (ip.version == 6 and ip.ipv4_mapped is not None and ip.ipv4_mapped.is_loopback)


@pytest.mark.timeout(400)
def test_a_local_ray_build_listens_on_loopback_only(slice_config):
    config = yaml.safe_load(slice_config.read_text())
    config.update(executor="ray", ray={"memory_per_task_gb": 0.25})
    slice_config.write_text(yaml.safe_dump(config))
    env = dict(os.environ)
    for key in [k for k in env if k.startswith("RAY_")]:  # as a user's shell has it: nothing set for Ray
        del env[key]
    build = subprocess.Popen(mixforge_cmd() + ["build", str(slice_config), "--until", "ingest"], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    seen: set[tuple[str, int, str]] = set()
    processes: dict[int, str] = {}
    try:
        while build.poll() is None:
            tree = descendants(build.pid)
            processes |= tree
            seen |= listening(tree)
            time.sleep(0.2)
        output = build.stdout.read()
    finally:
        if build.poll() is None:
            os.killpg(build.pid, signal.SIGKILL)
        build.wait()
    assert build.returncode == 0, output[-3000:]
    names = {name for _, _, name in seen}
    assert {"gcs_server", "raylet"} <= names, (names, sorted(set(processes.values())))  # Ray was seen listening
    print(f"{len(seen)} listening sockets of {len(names)} kinds of process: {sorted(names)}")
    exposed = sorted(s for s in seen if not is_loopback(s[0]))
    assert not exposed, f"listening beyond loopback: {exposed}"


SESSION = """
import sys
import ray  # imported before mixforge could set anything: Ray's constants are read now
from mixforge.config import load_config
from mixforge.pipelines.run.shards import ray_session

cfg = load_config(sys.argv[1])
with ray_session(cfg):
    ray.get([ray.remote(lambda: 1).remote() for _ in range(2)])
    print("ready", flush=True)
    sys.stdin.readline()
"""


@pytest.mark.timeout(200)
def test_ray_imported_before_mixforge_still_starts_on_loopback(slice_config):
    config = yaml.safe_load(slice_config.read_text())
    config.update(executor="ray")
    slice_config.write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    proc = subprocess.Popen([sys.executable, "-c", SESSION, str(slice_config)], env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        line = proc.stdout.readline()
        assert line.strip() == "ready", line + proc.stdout.read()[-3000:]
        seen = listening(descendants(proc.pid))
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert {"gcs_server", "raylet"} <= {name for _, _, name in seen}, seen
    assert not [s for s in seen if not is_loopback(s[0])], seen
