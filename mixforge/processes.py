"""The child processes of a long command (datatrove's pool, its manager and forkserver, Prefect's
temporary server): recorded in the workspace while the command runs, so that a rerun after a
SIGKILL (which no handler sees) finds and stops the leftovers before they write into the stages
it is about to redo; and stopped when the command ends, interrupted or not.

Read from /proc (Linux) by hand: psutil is not a dependency. Elsewhere this does nothing.
A process is named by (pid, start time), so a recycled pid is never mistaken for a leftover.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

from mixforge.errors import MixforgeError
from mixforge.workspace import atomic_write_json, read_json

PROC = Path("/proc")
Ident = tuple[int, int]  # (pid, start time in clock ticks since boot)


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time) of a live process; None when gone or a zombie."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # the name in (...) may hold spaces
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[1]), int(fields[19])  # fields 4 (ppid) and 22 (starttime) of proc(5)


def alive(ident: Ident) -> bool:
    st = _stat(ident[0])
    return st is not None and st[1] == ident[1]


def identity(pid: int) -> Ident | None:
    st = _stat(pid)
    return (pid, st[1]) if st else None


def descendants(pid: int) -> list[Ident]:
    """Every live process below `pid` (children, grandchildren, ...)."""
    if not PROC.is_dir():
        return []
    children: dict[int, list[Ident]] = {}
    for d in PROC.iterdir():
        if d.name.isdigit() and (st := _stat(int(d.name))):
            children.setdefault(st[0], []).append((int(d.name), st[1]))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child[0])
    return out


def stop(idents: list[Ident], grace: float = 5.0) -> list[int]:
    """SIGTERM each live process of `idents`, SIGKILL what is left after `grace` s; the pids signalled."""
    hit = []
    for ident in idents:
        if alive(ident):
            try:
                os.kill(ident[0], signal.SIGTERM)
                hit.append(ident)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + grace
    while any(alive(i) for i in hit) and time.monotonic() < deadline:
        time.sleep(0.1)
    for ident in hit:
        if alive(ident):
            try:
                os.kill(ident[0], signal.SIGKILL)
            except ProcessLookupError:
                pass
    return [pid for pid, _ in hit]


def reap_leftovers(record: Path, what: str, say: Callable[[str], None]) -> None:
    """Stop the leftovers of an earlier, killed run recorded in `record`. A recorded main process
    that is still alive is another run on the same workspace: that is an error, not a leftover."""
    data = read_json(record)
    if not data:
        return
    main = tuple(data.get("main") or (0, 0))
    if main[0] != os.getpid() and alive(main):
        raise MixforgeError(f"another `mixforge {what}` (pid {main[0]}) is running on this workspace "
                            f"({record.parent}): wait for it or stop it, then rerun")
    left = [tuple(i) for i in data.get("children", []) if alive(tuple(i)) and _runs(i[0], (b"python",))]
    pids = stop(left)
    if pids:
        say(f"stopped {len(pids)} leftover process(es) of an interrupted `mixforge {what}`: pids {', '.join(map(str, pids))}")
    record.unlink(missing_ok=True)


def reap_dead_runs(folder: Path, say: Callable[[str], None]) -> None:
    """The same for commands that may run side by side on one workspace (proxy sweeps, searches,
    verifies: each run writes its own rows), each recorded in `folder/<command>-<pid>.json`:
    the leftovers of every recorded run whose main process is gone are stopped."""
    for record in sorted(folder.glob("*-*.json")) if folder.is_dir() else []:
        data = read_json(record) or {}
        if not alive(tuple(data.get("main") or (0, 0))):
            reap_leftovers(record, record.stem.rsplit("-", 1)[0], say)


@contextlib.contextmanager
def build_children(workspace: Path, say: Callable[[str], None]) -> Iterator[None]:
    """What `mixforge build` holds while it runs: the workspace's writer lock (refused at once
    while another command writes it), after stopping a killed build's leftovers, and the record
    of its child processes (<workspace>/.build.pid) for a rerun after a SIGKILL."""
    from mixforge.workspace_lock import writer_lock

    record = Path(workspace) / ".build.pid"
    with writer_lock(Path(workspace), "build"):
        reap_leftovers(record, "build", say)
        with ChildTracker(record):
            yield


@contextlib.contextmanager
def proxy_children(workspace: Path, what: str, say: Callable[[str], None]) -> Iterator[None]:
    """The same for proxy sweeps, searches and verifies (`what`): the writer lock, and this
    command's child processes (Prefect's server, proxy workers) recorded under <workspace>/.runs/
    for as long as it runs, after stopping what killed runs left there."""
    from mixforge.workspace_lock import writer_lock

    folder = Path(workspace) / ".runs"
    with writer_lock(folder.parent, {"sweep": "proxy sweep", "verify": "search verify"}.get(what, what)):
        reap_dead_runs(folder, say)
        with ChildTracker(folder / f"{what}-{os.getpid()}.json"):
            yield


class ChildTracker:
    """While active, keeps `record` listing this process and its live descendants (polled every
    `every` s: a child started and killed within one poll is missed). At interpreter exit
    (after Prefect's own atexit has stopped its server, atexit being last-in first-out) stops
    whatever children remain and removes the record."""

    def __init__(self, record: Path, every: float = 0.5):
        self.record, self.every = record, every
        self._stop = threading.Event()
        self._seen: set[Ident] = set()

    def _write(self) -> None:
        atomic_write_json(self.record, {"main": identity(os.getpid()), "children": sorted(self._seen)})

    def _poll(self) -> None:
        while not self._stop.wait(self.every):
            now = set(descendants(os.getpid()))
            if not now <= self._seen:
                self._seen = {i for i in self._seen if alive(i)} | now
                self._write()

    def __enter__(self) -> "ChildTracker":
        if not PROC.is_dir():
            return self
        self._write()
        atexit.register(self.close)
        threading.Thread(target=self._poll, daemon=True, name="mixforge-children").start()
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is not None:  # interrupted or failed: do not wait for exit to stop the pool
            self.close(keep_prefect=True)

    def close(self, keep_prefect: bool = False) -> None:
        self._stop.set()
        # before exit, Prefect's server stays: Prefect logs to it until then and stops it itself
        keep = SELF_ENDING + ((b"prefect.server",) if keep_prefect else ())
        me = os.getpid()
        stop([i for i in descendants(me) if not (_runs(i[0], keep) and (_stat(i[0]) or (0,))[0] == me)])
        if not keep_prefect:
            self.record.unlink(missing_ok=True)


# multiprocessing's helpers (our direct children; pool workers forked by the forkserver have the
# same command line) end by themselves once this process has exited and their pipes close;
# killing the resource tracker early makes the pool relaunch it and print KeyErrors
SELF_ENDING = (b"multiprocess.resource_tracker", b"multiprocessing.resource_tracker", b"forkserver import main")


def _runs(pid: int, needles: tuple[bytes, ...]) -> bool:
    """Whether the command line of `pid` contains one of `needles`."""
    try:
        cmdline = (PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return False
    return any(n in cmdline for n in needles)
