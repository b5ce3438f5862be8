"""The source manifest: every input file of a build (path, size, mtime, content hash), and the
diff between two builds' manifests (added, changed, deleted).

A file's content hash is reused from the previous manifest when its size and mtime are unchanged
(as rsync and git do), so an unchanged corpus is not reread on every scheduled run; a file touched
without changing its bytes is not "changed".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mixforge.digests import file_digest


def _files_of(path: Path) -> list[Path]:
    """A work item is one file, or a saved HF dataset folder (hashed as all its files)."""
    return sorted(f for f in path.rglob("*") if f.is_file()) if path.is_dir() else [path]


def item_stat(path: str) -> tuple[int, int]:
    """(size, newest mtime_ns) of one work item: a file, or all the files of a folder."""
    stats = [f.stat() for f in _files_of(Path(path))]
    return sum(s.st_size for s in stats), max((s.st_mtime_ns for s in stats), default=0)


def changed_since(manifest: list[dict]) -> list[str]:
    """The entries whose files differ now (size or time) from when the manifest was made, each
    as 'path: before -> now'. Called once their files were read: a file written meanwhile
    (appended to while being read, say) would otherwise be recorded as it was before."""
    changed = []
    for e in manifest:
        try:
            size, mtime = item_stat(e["path"])
        except OSError:
            size, mtime = -1, -1
        if (size, mtime) != (e["size"], e["mtime_ns"]):
            now = "gone" if size < 0 else f"{size:,} bytes" + (", modified again" if size == e["size"] else "")
            changed.append(f"{e['path']}: {e['size']:,} bytes when the build started, {now} after it was read")
    return changed


def manifest_entry(path: str, previous: dict | None) -> dict:
    """{path, size, mtime_ns, hash} of one work item; `previous`: its entry in the last manifest."""
    files = _files_of(Path(path))
    size, mtime = item_stat(path)
    if previous and previous.get("size") == size and previous.get("mtime_ns") == mtime:
        return dict(previous)
    if len(files) == 1 and files[0] == Path(path):
        digest = file_digest(files[0])
    else:  # a folder: the digest of its files' relative paths and digests
        import xxhash

        digest = xxhash.xxh3_128("\n".join(f"{f.relative_to(path)} {file_digest(f)}" for f in files).encode()).hexdigest()
    return {"path": path, "size": size, "mtime_ns": mtime, "hash": digest}


def source_manifest(paths: list[str], previous: list[dict] | None = None) -> list[dict]:
    """Entries for `paths` (in their order), reusing hashes from `previous` where size and mtime match."""
    before = {e["path"]: e for e in previous or []}
    return [manifest_entry(p, before.get(p)) for p in paths]


@dataclass
class SourceDiff:
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"added": self.added, "changed": self.changed, "deleted": self.deleted}


def diff_manifests(old: list[dict], new: list[dict]) -> SourceDiff:
    before = {e["path"]: e["hash"] for e in old}
    after = {e["path"]: e["hash"] for e in new}
    return SourceDiff(
        added=[p for p in after if p not in before],
        changed=[p for p in after if p in before and before[p] != after[p]],
        deleted=[p for p in before if p not in after],
    )
