"""Sources in object storage (an fsspec URL: s3://bucket/prefix/*.jsonl.zst, gs://..., hf://...):
their objects, each object's format and version. Reading them is datatrove's readers' job, as for
local files (they open fsspec URLs); mixforge.urls says where credentials come from."""

from __future__ import annotations

from datetime import datetime

from mixforge.urls import url_filesystem
from mixforge.pipelines.ingest.readers import MAGIC, format_by_name

# The first of these that an object's info holds names its version: S3's version id (buckets with
# versioning) or ETag, GCS's generation, the Hub's blob id.
VERSION_KEYS = ("VersionId", "generation", "ETag", "etag", "blob_id")
TIME_KEYS = ("LastModified", "updated", "mtime", "last_modified")


def remote_files(url: str, fmt: str) -> list[tuple[str, str | None, str, int]]:
    """The objects of one source as (URL, format or None, path relative to the source, size),
    sorted; formats chosen as for local files (source_files), by name, and by the first bytes
    when the name does not tell (one small read per such object). A URL naming one object is that
    object; a folder, every object under it except hidden ones; a glob, the objects it matches."""
    fs, path = url_filesystem(url)
    if any(c in path for c in "*?["):
        base = path.rsplit("/", 1)[0]
        found = fs.glob(path, detail=True)
    elif fs.isfile(path):
        info = fs.info(path)
        own = format_by_name(path) or _sniffed(fs, path)
        return [(fs.unstrip_protocol(path), fmt if fmt != "auto" else own or "jsonl", path.rsplit("/", 1)[-1], info["size"])]
    else:
        base = path.rstrip("/")
        found = fs.find(base, detail=True)
    files = []
    for p, info in sorted(found.items()):
        relative = p[len(base):].lstrip("/")
        if info.get("type") != "file" or any(part.startswith(".") for part in relative.split("/")):
            continue
        own = format_by_name(p) or _sniffed(fs, p)
        files.append((fs.unstrip_protocol(p), own if fmt in ("auto", own) else None, relative, int(info["size"])))
    return files


def _sniffed(fs, path: str) -> str | None:
    """parquet when the object's first bytes say so (compressed JSONL is told from its name)."""
    with fs.open(path, "rb") as f:
        return "parquet" if MAGIC.get(f.read(4)) == "parquet" else None


def object_state(url: str) -> dict:
    """{size, mtime_ns, version}: what the store says of one object now (never a cached listing)."""
    fs, path = url_filesystem(url)
    fs.invalidate_cache(path)
    info = fs.info(path)
    version = next((f"{k}:{str(info[k]).strip(chr(34))}" for k in VERSION_KEYS if info.get(k)), None)
    when = next((info[k] for k in TIME_KEYS if info.get(k)), None)
    if isinstance(when, datetime):
        when = int(when.timestamp() * 1e9)
    elif isinstance(when, (int, float)):
        when = int(when * 1e9) if when < 1e12 else int(when)
    else:
        when = 0
    return {"size": int(info["size"]), "mtime_ns": when, "version": version}
