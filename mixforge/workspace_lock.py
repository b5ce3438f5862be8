"""One writer per workspace: the commands that write a stage or the runs table (build, proxy
train, proxy sweep, search, search verify, scheduled builds) hold an flock on
`<workspace>/.writer.lock` while they run; a second writer is refused at once, naming the
holder's pid and command. Readers (status, clusters, export, search fit) never take it.

The kernel drops an flock when its holder dies (exit, SIGTERM, SIGKILL), so a killed writer
never leaves the workspace locked. The descriptor is close-on-exec and closed in forked
children, so worker processes that outlive a killed writer do not keep the lock either.
The lock is reentrant within a process: a scheduled build holds it across its build and search.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
from pathlib import Path
from typing import Iterator

from mixforge.errors import MixforgeError
from mixforge.write_errors import write_error  # a read-only or full disk: the path, free space, what to do

LOCK_NAME = ".writer.lock"

_held: dict[Path, int] = {}  # workspace -> fd of the locks this process holds


def _close_in_child() -> None:
    for fd in _held.values():
        with contextlib.suppress(OSError):
            os.close(fd)  # the child's copy only: the parent's lock stays held
    _held.clear()


os.register_at_fork(after_in_child=_close_in_child)


def try_flock(fd: int) -> str | None:
    """None once `fd` holds an exclusive flock; else (`fd` closed) what its holder wrote in the file."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return None
    except BlockingIOError:
        holder = os.pread(fd, 400, 0).decode(errors="replace").strip()
        os.close(fd)
        return holder


@contextlib.contextmanager
def writer_lock(workspace: Path, command: str) -> Iterator[None]:
    """Hold the workspace's writer lock for the block, as `mixforge <command>`; refuse at once
    (MixforgeError naming the holder) when another process holds it."""
    key = Path(os.path.abspath(workspace))
    if key in _held:  # this process holds it already (an outer command)
        yield
        return
    lock = key / LOCK_NAME
    try:
        key.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    except OSError as e:
        raise write_error(e, lock) or MixforgeError(f"cannot lock workspace {key} for `mixforge {command}`: {lock}: {e.strerror}") from None
    holder = try_flock(fd)
    if holder is not None:
        raise MixforgeError(f"workspace {key} is in use by {holder or 'a process that is starting'} (lock {lock}); one "
                            f"command writes a workspace at a time: wait for it to finish or stop it, then rerun `mixforge {command}`")
    _held[key] = fd
    try:
        os.ftruncate(fd, 0)  # who holds it, for the message of the writer refused
        os.pwrite(fd, f"`mixforge {command}` (pid {os.getpid()}: {' '.join(sys.argv)[:200]})\n".encode(), 0)
        yield
    finally:
        del _held[key]
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)  # releases the flock
