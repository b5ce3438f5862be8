"""What a published stage holds: every file it wrote, with its size and xxh3-128 digest, listed in
the stage record (`files`) when the stage publishes. A reader of the stage checks what it is about
to use against that list, so a file changed, truncated, removed or planted after publishing is
an error naming the file instead of data used silently.

The check has two depths: `size` (a stat per file: catches truncation, removal and planted files)
and `digest` (rereads every byte: also catches bytes changed in place with the same size and time).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from mixforge.digests import file_digest
from mixforge.errors import MixforgeError, first_few

if TYPE_CHECKING:
    from mixforge.workspace import Workspace

FILES_KEY = "files"  # the stage record's inventory: {path relative to the workspace: {bytes, xxh3}}
CHECKS = ("digest", "size")


def stage_files(ws: Workspace, stage: str) -> list[Path]:
    """The files a published stage owns: `<stage>/docs`, `<stage>/extra` and its removed rows.
    (`<stage>/logs` are datatrove's logs for people: nothing reads them.)"""
    found = [f for name in ("docs", "extra") for f in sorted((ws.stage_dir(stage) / name).rglob("*"))
             if f.is_file() or f.is_symlink()]
    return found + ws.removed_files(stage)


def inventory(ws: Workspace, stage: str) -> dict[str, dict]:
    """Size and digest of every file of the stage, by path relative to the workspace."""
    return {f.relative_to(ws.root).as_posix(): {"bytes": f.stat().st_size, "xxh3": file_digest(f)}
            for f in stage_files(ws, stage)}


def check_stage(ws: Workspace, stage: str, depth: str = "digest") -> list[str]:
    """Problems with a published stage's files against its record (empty: as written). A stage
    without a record has nothing to check; a record without `files` predates them (see `Workspace.adopt`)."""
    record = ws.stage_record(stage)
    listed = (record or {}).get(FILES_KEY)
    if listed is None:
        return []
    problems = []
    for rel, entry in sorted(listed.items()):
        path = ws.root / rel
        if path.is_symlink() or not path.is_file():
            problems.append(f"{rel}: {'a symlink' if path.is_symlink() else 'missing'}")
        elif (size := path.stat().st_size) != entry["bytes"]:
            problems.append(f"{rel}: {size:,} bytes, {entry['bytes']:,} when the stage wrote it (truncated or changed)")
        elif depth == "digest" and file_digest(path) != entry["xxh3"]:
            problems.append(f"{rel}: its content changed since the stage wrote it (same size, other bytes)")
    for f in stage_files(ws, stage):
        if f.relative_to(ws.root).as_posix() not in listed:
            problems.append(f"{f.relative_to(ws.root).as_posix()}: not written by the {stage} stage (a file put there later)")
    return problems



def damage_report(ws: Workspace, stage: str, problems: list[str], show: int = 5) -> str:
    return f"the {stage} stage's outputs in {ws.root} are damaged: {first_few(problems, show)}"


def require_intact(ws: Workspace, stages: list[str], depth: str = "digest", rebuild: str = "mixforge build CONFIG") -> None:
    """Raise, naming the files and the command that rebuilds them, when a stage's files fail the check."""
    for stage in stages:
        problems = check_stage(ws, stage, depth)
        if problems:
            raise MixforgeError(f"{damage_report(ws, stage, problems)}. `{rebuild}` finds the damage and redoes "
                                f"{stage} and the stages after it")
