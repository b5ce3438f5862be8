"""Writes that fail for want of space or permission (ENOSPC, EDQUOT, EFBIG, EROFS, EACCES, EPERM)
become one message naming the path, the free space on its filesystem and what to do, instead of
a library's traceback. Stages and exports publish only what is complete, so the message can
always say: free the space (or fix the permission), then rerun the same command.

The failure often reaches mixforge without its path (a write on an open file names none) or as
another exception that carries it (a datatrove worker's error, re-raised in the parent, or a
library's own error wrapping the OSError): `find_write_error` walks causes and contexts and reads
`[Errno N]` in their text; `writing_to(folder)` names the folder being written when nothing else does.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
from pathlib import Path
from typing import Iterator

from mixforge.errors import MixforgeError

SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
ACCESS = {errno.EACCES, errno.EPERM}
WRITE_ERRNOS = SPACE | ACCESS | {errno.EROFS}
# an OSError as text: "[Errno 28] No space left on device" or "[Errno 13] Permission denied: '/ws/x'"
_ERRNO_TEXT = re.compile(r"\[Errno (\d+)\] [^:\n]*(?:: '([^'\n]+)')?")


class WriteError(MixforgeError):
    """A write failed for want of space or permission; the message says where and what to do."""


def find_write_error(exc: BaseException | None) -> tuple[int, str | None] | None:
    """(errno, the path it names or None) of the first write failure in `exc` or what caused it."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        code = getattr(exc, "errno", None) if isinstance(exc, OSError) else None
        path = getattr(exc, "filename", None) if code else None
        if code is None and (m := _ERRNO_TEXT.search(str(exc))):
            code, path = int(m[1]), m[2]
        # permission errors count on a file only: an EPERM without one is a signal or an ioctl, not a write
        if code in WRITE_ERRNOS and (code not in ACCESS or path):
            return code, os.fsdecode(path) if path is not None else None
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    return None


def write_error(exc: BaseException, where: Path | None) -> WriteError | None:
    """The WriteError for `exc` (naming its path, else `where`), or None when it is no write failure."""
    found = find_write_error(exc)
    if found is None:
        return None
    code, path = found
    return WriteError(describe(code, Path(path) if path else where))


def describe(code: int, path: Path | None) -> str:
    if code in SPACE:
        todo = "free space there (or raise the quota or file size limit)"
    elif code == errno.EROFS:
        todo = "remount it writable or point mixforge at a writable folder (workspace, --out)"
    else:  # the one errno that may come from a read too (an unreadable source)
        todo = "give this user access to it (read for a source, write for the workspace or --out) or point mixforge elsewhere"
    verb = "access" if code in ACCESS else "write"
    return (f"cannot {verb} {path if path else '(the library did not name the file)'}: {os.strerror(code)} "
            f"({free_space(path) if path else 'free space unknown'}). {todo[0].upper()}{todo[1:]}, then rerun the same "
            "command: it resumes from what was finished, and nothing half-written was published.")


def free_space(path: Path) -> str:
    """'<free> free of <total>' on the filesystem holding `path` (or its nearest existing folder)."""
    for folder in (path, *path.parents):
        try:
            usage = shutil.disk_usage(folder)
        except OSError:
            continue
        return f"{_size(usage.free)} free of {_size(usage.total)} on that filesystem"
    return "free space unknown"


def _size(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} bytes"


@contextlib.contextmanager
def writing_to(where: Path) -> Iterator[None]:
    """A write failure in the block becomes a WriteError naming its file, else `where` (the folder
    the block writes). Other errors, and mixforge's own clear ones, pass unchanged."""
    try:
        yield
    except MixforgeError:
        raise
    except Exception as e:
        err = write_error(e, Path(where))
        if err is None:
            raise
        raise err from e
