"""The life cycle of an export folder `<parent>/<name>`: one export at a time, written beside it,
put in place so that no kill loses the old export without the new one complete in place.

- `.<name>.lock`: flock held for the whole export; a second export to the folder fails at once,
  naming the holder's pid. The kernel drops the lock of a killed process.
- `.<name>.partial-<pid>/`: the export being written; a stale one (its writer died) is deleted,
  but only by the holder of the lock, so two exports never delete each other's output.
- `.<name>.old-<pid>/`: the old export during `--overwrite`, between the two renames
  (`<name>` -> old, partial -> `<name>`). The next export puts it back if `<name>` is missing
  (killed between the renames) and deletes it if `<name>` exists (killed after them). It is
  renamed to `.<name>.deleting-<pid>/` before it is deleted, so an `.old-*` is always whole.

`--overwrite` replaces only an export of mixforge's (`check_replaceable`): its manifest.json
validates against the schema, and it holds no file the manifest does not list (unless
`--force-replace`), so another tool's folder or a user's notes are never deleted.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import warnings
from pathlib import Path
from typing import Iterator

from mixforge.errors import MixforgeError, first_few
from mixforge.workspace_lock import try_flock
from mixforge.write_errors import write_error, writing_to


@contextlib.contextmanager
def export_lock(out: Path) -> Iterator[None]:
    """Hold `<parent>/.<name>.lock` (flock) for the block; refuse at once if another process holds it."""
    lock = out.parent / f".{out.name}.lock"
    while True:
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:  # a read-only, full or missing place for --out: the user's to fix
            raise write_error(e, lock) or MixforgeError(f"cannot export to {out}: {lock}: {e.strerror}") from None
        holder = try_flock(fd)
        if holder is not None:
            raise MixforgeError(f"{out} is being exported by another process (pid {holder or 'unknown'}, lock {lock}): "
                                "wait for it to finish, then rerun")
        try:  # the holder before us unlinks the file on release: lock the file that is there now
            same = os.path.samestat(os.fstat(fd), os.stat(lock))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        with writing_to(partial_dir(out)):  # a full disk, a read-only folder: one message naming where
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock)  # while still locked, so no one can lock this file after we let go
        os.close(fd)


def check_replaceable(out: Path, force_replace: bool) -> None:
    """Refuse to replace `out` unless it is an empty folder or an export of mixforge's: a
    manifest.json that validates against the schema, and no file the manifest does not list
    (refused by name unless `force_replace`: --overwrite would delete them)."""
    from mixforge.pipelines.export.manifest import read_manifest, validate_manifest

    if out.is_dir() and not any(out.iterdir()):
        return
    advice = "--overwrite replaces only mixforge's own exports; choose another --out or remove it yourself"
    if not (out / "manifest.json").is_file():
        raise MixforgeError(f"{out} is not an export of mixforge (no manifest.json): {advice}")
    try:
        manifest = read_manifest(out)
        validate_manifest(manifest)
    except MixforgeError as e:
        why = str(e) if len(str(e)) <= 300 else str(e)[:300] + "..."  # another tool's values may be long
        raise MixforgeError(f"{out} is not an export of mixforge (its manifest.json does not match mixforge's schema "
                            f"manifest-v1.json: {why}): {advice}") from None
    unlisted = unlisted_files(out, manifest)
    if unlisted and not force_replace:
        named = first_few(unlisted, sep=", ")
        raise MixforgeError(f"{out} holds {len(unlisted)} file{'s' if len(unlisted) > 1 else ''} its manifest.json does not "
                            f"list, which --overwrite would delete: {named}; move them out, or pass --force-replace to "
                            "delete them with the old export")


def unlisted_files(out: Path, manifest: dict) -> list[str]:
    """Files (and links) under `out` that are not the export's own (see `unlisted`)."""
    found = []
    for folder, dirs, files in os.walk(out):
        links = [d for d in dirs if os.path.islink(os.path.join(folder, d))]  # not followed: listed as entries
        found += [Path(folder, name).relative_to(out).as_posix() for name in files + links]
    return unlisted(found, manifest)


def unlisted(found: list[str], manifest: dict) -> list[str]:
    """The paths of `found` (relative to an export's folder) that are not the export's own: its
    shards and their companion files (`<shard>.*`), index files, manifest.json, README.md,
    mixture.png and the trainer/ files its fragments give; the top level first."""
    from mixforge.pipelines.export.manifest import named_files

    shards, own = [s["path"] for s in manifest["shards"]], named_files(manifest)
    rest = [rel for rel in found if rel not in own and not any(rel.startswith(s + ".") for s in shards)]
    return sorted(rest, key=lambda rel: (rel.count("/"), rel))  # the top level first: what a user put there


def recover(out: Path) -> None:
    """Undo what a killed export left beside `out`. Call with the lock held."""
    for stale in out.parent.glob(f".{out.name}.deleting-*"):
        shutil.rmtree(stale, ignore_errors=True)
    for old in sorted(out.parent.glob(f".{out.name}.old-*")):
        if out.exists():  # the new export was in place: the old one is no longer needed
            _delete(old, out)
        else:  # killed between the two renames: the old export is the complete one
            old.rename(out)
            warnings.warn(f"{out}: put back the previous export from {old.name} (an --overwrite export was killed)")
    for stale in out.parent.glob(f".{out.name}.partial-*"):  # written by an export that died
        shutil.rmtree(stale, ignore_errors=True)


def partial_dir(out: Path) -> Path:
    return out.parent / f".{out.name}.partial-{os.getpid()}"


def put_in_place(tmp: Path, out: Path) -> None:
    """Rename the complete export `tmp` to `out`, replacing an existing `out` (see the module
    docstring for what a kill between the steps leaves and how the next export recovers it)."""
    if not out.exists():
        tmp.rename(out)
        return
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    out.rename(old)
    try:
        tmp.rename(out)
    except BaseException:
        if not out.exists():  # an error, not a kill: put the old export back now
            old.rename(out)
        raise
    _delete(old, out)


def _delete(old: Path, out: Path) -> None:
    """Delete a replaced export. Renamed first, so an `.old-*` folder is always a whole export
    (a kill during the deletion leaves a `.deleting-*` one, which the next export deletes)."""
    gone = out.parent / f".{out.name}.deleting-{os.getpid()}"
    old.rename(gone)
    shutil.rmtree(gone, ignore_errors=True)
