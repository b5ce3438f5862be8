"""The source manifest: every input file of a build (path, size, mtime, content hash), and the
diff between two builds' manifests (added, changed, deleted).

A file's content hash is reused from the previous manifest when its size and mtime are unchanged
(as rsync and git do), so an unchanged corpus is not reread on every scheduled run; a file touched
without changing its bytes is not "changed". An object in a store (a URL) is known by the version
the store gives it (S3's version id or ETag, GCS's generation): a changed object has a new one,
and nothing is reread to find out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mixforge.digests import file_digest, stream_digest
from mixforge.errors import MixforgeError
from mixforge.pipelines.ingest.remote import object_state
from mixforge.urls import is_url, url_filesystem


def _files_of(path: Path) -> list[Path]:
    """A work item is one file, or a saved HF dataset folder (hashed as all its files)."""
    return sorted(f for f in path.rglob("*") if f.is_file()) if path.is_dir() else [path]


def item_stat(path: str) -> tuple[int, int] | tuple[int, int, str | None]:
    """(size, newest mtime_ns) of one work item: a file, or all the files of a folder; for an
    object in a store, (size, mtime_ns, version)."""
    if is_url(path):
        state = object_state(path)
        return state["size"], state["mtime_ns"], state["version"]
    stats = [f.stat() for f in _files_of(Path(path))]
    return sum(s.st_size for s in stats), max((s.st_mtime_ns for s in stats), default=0)


def changed_since(manifest: list[dict]) -> list[str]:
    """The entries whose files differ now (size or time) from when the manifest was made, each
    as 'path: before -> now'. Called once their files were read: a file written meanwhile
    (appended to while being read, say) would otherwise be recorded as it was before."""
    changed = []
    for e in manifest:
        try:
            now = item_stat(e["path"])
        except (OSError, MixforgeError):
            now = (-1, -1)
        if now != _stat_of(e):
            size = now[0]
            now = "gone" if size < 0 else f"{size:,} bytes" + (", modified again" if size == e["size"] else "")
            changed.append(f"{e['path']}: {e['size']:,} bytes when the build started, {now} after it was read")
    return changed


def manifest_entry(path: str, previous: dict | None) -> dict:
    """{path, size, mtime_ns, hash} of one work item (and `version` for an object in a store);
    `previous`: its entry in the last manifest."""
    if is_url(path):
        return _object_entry(path, previous)
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


def _object_entry(url: str, previous: dict | None) -> dict:
    """An object's entry: its version stands for its content (hashed only where the store gives none)."""
    size, mtime, version = item_stat(url)
    if previous and _stat_of(previous) == (size, mtime, version):
        return dict(previous)
    if version:
        digest = version
    else:
        fs, inside = url_filesystem(url)
        with fs.open(inside, "rb") as f:
            digest = stream_digest(f)
    return {"path": url, "size": size, "mtime_ns": mtime, "version": version, "hash": digest}


def _stat_of(entry: dict) -> tuple:
    """What item_stat gives for the entry's item when it has not changed."""
    if "version" in entry:
        return entry["size"], entry["mtime_ns"], entry["version"]
    return entry["size"], entry["mtime_ns"]


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
