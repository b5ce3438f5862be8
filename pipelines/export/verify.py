"""`mixforge verify`: an export checked against its manifest: every path inside the folder, every
file re-hashed, every shard re-counted, the trainer files as the manifest renders them, nothing unnamed."""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

import numpy as np

from mixforge.digests import file_digest
from mixforge.errors import InputError, MixforgeError
from mixforge.pipelines.export.formats import (count_shard)

from mixforge.urls import is_url
from mixforge.pipelines.export.manifest import named_files, read_manifest, trainer_files, trainer_fragments, validate_manifest


def verify_export(folder: Path | str) -> list[str]:
    """Problems found (empty when the export matches its manifest): the schema; every path the
    manifest names (shards, their files, index files) inside the folder; every file's size and
    sha256; each shard's documents and tokens re-counted from its files (what `count_shard`
    can count in that format); the total; the trainer fragments and `trainer/` files against the
    shards; no file the manifest does not name. MixforgeError when the folder has no readable
    manifest. `folder` may be an fsspec URL: its objects are read from the store (verify_url)."""
    if is_url(str(folder)):
        return verify_url(str(folder))
    folder = Path(folder).resolve()
    manifest = read_manifest(folder)
    found = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() or p.is_symlink())
    return _verify(folder, manifest, found, lambda rels: contextlib.nullcontext())


def verify_url(url: str) -> list[str]:
    """verify_export for an export in a store: each shard's files are downloaded to a temporary
    folder, checked and deleted before the next (disk use: one shard), every byte re-hashed."""
    from mixforge.pipelines.export.remote import remote_manifest, unfinished_uploads_left_out
    from mixforge.urls import url_filesystem

    fs, root = url_filesystem(url)
    root = root.rstrip("/")
    manifest = remote_manifest(fs, root)
    if manifest is None:
        raise MixforgeError(f"{url}/manifest.json not found: {url} is not an export")
    found = unfinished_uploads_left_out(sorted(p[len(root) + 1:] for p in fs.find(root)), manifest)

    with tempfile.TemporaryDirectory(prefix="mixforge-verify-") as tmp:
        folder = Path(tmp).resolve()

        @contextlib.contextmanager
        def fetched(rels: list[str]):
            """The objects `rels` (those that exist, and name no place outside the folder) in `folder`."""
            local = [(rel, _inside(folder, rel)) for rel in rels if rel in set(found)]
            for rel, path in local:
                if path is not None:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    fs.get_file(f"{root}/{rel}", str(path))
            try:
                yield
            finally:
                for _, path in local:
                    if path is not None:
                        path.unlink(missing_ok=True)

        with fetched([rel for rel in found if rel.startswith("trainer/")]):
            return _verify(folder, manifest, found, fetched)


def _verify(folder: Path, manifest: dict, found: list[str], fetched) -> list[str]:
    """The checks of verify_export over `folder`, where `fetched(paths)` makes those files present
    for the length of a `with` block (a store's objects; nothing to do for a folder)."""
    try:
        validate_manifest(manifest)
    except InputError as e:
        return [f"manifest.json: {e}"]
    try:
        dtype = np.dtype(manifest.get("token_dtype") or "uint16")
    except TypeError:
        return [f"manifest.json: token_dtype {manifest['token_dtype']!r} is not a numpy dtype"]
    problems: list[str] = []
    for entry in manifest.get("index_files", []):
        with fetched([entry["path"]]):
            _check_file(folder, entry, problems)
    for shard in manifest["shards"]:
        with fetched([f["path"] for f in shard["files"]]):
            problems += _check_shard(folder, manifest["format"], dtype, shard)
    total = sum(s["tokens"] for s in manifest["shards"])
    if total != manifest["tokens"]:
        problems.append(f"shards hold {total} tokens, the manifest's total is {manifest['tokens']}")
    return problems + _check_trainer(folder, manifest) + _unnamed_files(found, manifest)


def _unnamed_files(found: list[str], manifest: dict) -> list[str]:
    """Files the manifest does not name: a loader that globs the folder (`*.parquet`, `*.bin`)
    would train on them too (a shard left from another export, say)."""
    named = named_files(manifest)
    return [f"{rel}: a file the manifest does not name (a loader that globs the folder would read it); remove it or "
            "export again" for rel in found if rel not in named]


def _check_shard(folder: Path, fmt: str, dtype: np.dtype, shard: dict) -> list[str]:
    problems: list[str] = []
    if _inside(folder, shard["path"]) is None:
        problems.append(f"{shard['path']}: shard path points outside the export folder; refused")
    for f in shard["files"]:
        if not f["path"].startswith(shard["path"] + "."):
            problems.append(f"{f['path']}: not a file of shard {shard['path']}")
    paths = [_check_file(folder, f, problems) for f in shard["files"]]
    if problems:
        return problems
    try:
        docs, tokens = count_shard(fmt, paths, dtype)
    except Exception as e:  # a damaged file fails a reader in many ways: report it, never a traceback
        return [f"{shard['path']}: cannot be read as {fmt}: {e}"]
    if docs >= 0 and docs != shard["documents"]:
        problems.append(f"{shard['path']}: {docs} documents, the manifest says {shard['documents']}")
    if tokens >= 0 and tokens != shard["tokens"]:
        problems.append(f"{shard['path']}: {tokens} tokens, the manifest says {shard['tokens']}")
    return problems


def _check_trainer(folder: Path, manifest: dict) -> list[str]:
    """The trainer fragments name shard paths too: they must be the ones derived from the shards,
    and `trainer/` must hold them as written."""
    if "trainer" not in manifest:
        return []
    try:
        expected = trainer_fragments({k: v for k, v in manifest.items() if k != "trainer"})
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as e:
        return [f"manifest.json: its trainer fragments cannot be derived from its shards and components ({e!r})"]
    if manifest["trainer"] != expected:
        return ["manifest.json: trainer fragments differ from the ones its shards give (paths or weights changed)"]
    problems = []
    for name, text in trainer_files(manifest).items():
        path = folder / "trainer" / name
        if not path.is_file() or path.read_bytes() != text.encode("utf-8"):
            problems.append(f"trainer/{name}: {'missing' if not path.is_file() else 'differs from the manifest'}")
    return problems


def _inside(folder: Path, rel: str) -> Path | None:
    """`folder/rel` resolved (symlinks followed), or None when that lands outside the folder."""
    try:
        path = (folder / rel).resolve()
    except (OSError, ValueError):  # a NUL byte, a symlink loop
        return None
    return path if path.is_relative_to(folder) and path != folder else None


def _check_file(folder: Path, entry: dict, problems: list[str]) -> Path | None:
    """The file of a manifest entry if it is inside the folder and exists (a changed one is reported)."""
    path = _inside(folder, entry["path"])
    if path is None:
        problems.append(f"{entry['path']}: points outside the export folder; refused")
    elif not path.is_file():
        problems.append(f"{entry['path']}: missing")
    else:
        if path.stat().st_size != entry["bytes"]:
            problems.append(f"{entry['path']}: {path.stat().st_size} bytes, the manifest says {entry['bytes']} (truncated or changed)")
        elif file_digest(path, "sha256") != entry["sha256"]:
            problems.append(f"{entry['path']}: sha256 differs from the manifest's (the file changed)")
        return path
    return None
