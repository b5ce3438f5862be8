"""Exports to object storage (`--out s3://bucket/mixes/web-v3`, any fsspec URL).

A store has no rename, so an export cannot be put in place whole as on a filesystem. Instead:
- it is written and verified in a staging folder in the workspace (the workspace is local);
- its data files go to a generation folder of their own, `<out>/g<N>/` (the manifest's paths
  name it), so they never overwrite the files an existing export's manifest names;
- `manifest.json` is uploaded after every file it names: a reader that checks the manifest sees
  a complete export or none, and during `--overwrite` the old export stays whole and readable
  until the new manifest replaces the old one; then the old generation is deleted;
- `<out>/.mixforge-upload-g<N>` marks a generation being uploaded: an upload killed before its
  manifest leaves a marked generation, which the next export to `<out>` deletes.
The top-level README.md, mixture.png and trainer/ files follow the manifest (they are derived
from it); the marker is deleted last. One export to a URL at a time from a workspace (a lock on
its staging folder); two workspaces exporting to one URL at once are the user's to prevent.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Callable

from mixforge.errors import MixforgeError, first_few
from mixforge.urls import url_filesystem
from mixforge.workspace import Workspace

MARKER = ".mixforge-upload-"
_GENERATION = re.compile(r"g(\d+)")
TOP_FILES = ("README.md", "mixture.png")


def export_to_url(url: str, ws: Workspace, write: Callable[[Path, str], dict], overwrite: bool, force_replace: bool) -> dict:
    """Write an export with `write(folder, prefix)` into a staging folder, then upload it to `url`
    (see the module docstring); returns its manifest."""
    import hashlib

    from mixforge.pipelines.export.folder import export_lock

    fs, root = url_filesystem(url)
    root = root.rstrip("/")
    staging = ws.root / ".export-staging" / hashlib.sha256(url.encode()).hexdigest()[:16]
    with export_lock(staging):
        old = remote_manifest(fs, root)
        _delete_unfinished(fs, root, old)
        _check_replaceable(fs, root, url, old, overwrite, force_replace)
        generation = f"g{_generation_number(old) + 1}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        try:
            manifest = write(staging, f"{generation}/")
            _upload(fs, root, staging, generation)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return manifest


def remote_manifest(fs, root: str) -> dict | None:
    """The parsed manifest.json at `root`, None when there is none."""
    try:
        return json.loads(fs.cat_file(f"{root}/manifest.json"))
    except FileNotFoundError:
        return None
    except (ValueError, UnicodeDecodeError) as e:
        raise MixforgeError(f"{fs.unstrip_protocol(root)}/manifest.json: not valid JSON ({e})") from None


def _generation_number(manifest: dict | None) -> int:
    """N of the generation folder `g<N>/` the manifest's shards live in (0 for none)."""
    try:
        first = str(manifest["shards"][0]["path"])
    except (KeyError, IndexError, TypeError):  # none, or not mixforge's (check_replaceable says so)
        return 0
    m = _GENERATION.fullmatch(first.split("/", 1)[0])
    return int(m.group(1)) if m else 0


def _objects(fs, root: str) -> list[str]:
    """Every object under `root`, as paths relative to it."""
    fs.invalidate_cache(root)
    try:
        return sorted(p[len(root) + 1:] for p in fs.find(root))
    except FileNotFoundError:
        return []


def _delete_unfinished(fs, root: str, manifest: dict | None) -> None:
    """Delete the generations an interrupted upload left (marked, and not the manifest's own)."""
    current = _generation_number(manifest)
    for rel in _objects(fs, root):
        if rel.startswith(MARKER):
            generation = rel.removeprefix(MARKER)
            if _GENERATION.fullmatch(generation) and generation != f"g{current}":
                _remove(fs, f"{root}/{generation}")
            fs.rm(f"{root}/{rel}")


def unfinished_uploads_left_out(found: list[str], manifest: dict) -> list[str]:
    """The objects of `found` less the markers and the generations being uploaded (or left by a
    killed upload) other than the manifest's: no part of the export its manifest describes."""
    marked = {rel.removeprefix(MARKER) for rel in found if rel.startswith(MARKER)} - {f"g{_generation_number(manifest)}"}
    return [rel for rel in found if not rel.startswith(MARKER) and rel.split("/", 1)[0] not in marked]


def _check_replaceable(fs, root: str, url: str, old: dict | None, overwrite: bool, force_replace: bool) -> None:
    """As for a folder (export.folder.check_replaceable): replace only mixforge's own export, and
    none of the user's objects beside it unless `force_replace`."""
    from mixforge.pipelines.export.folder import unlisted
    from mixforge.pipelines.export.manifest import validate_manifest

    found = _objects(fs, root)
    if not found:
        return
    if not overwrite:
        raise MixforgeError(f"{url} exists: pass --overwrite to replace it")
    advice = "--overwrite replaces only mixforge's own exports; choose another --out or remove it yourself"
    if old is None:
        raise MixforgeError(f"{url} is not an export of mixforge (no manifest.json; it holds {first_few(found, sep=', ')}): {advice}")
    try:
        validate_manifest(old)
    except MixforgeError as e:
        raise MixforgeError(f"{url} is not an export of mixforge (its manifest.json does not match mixforge's schema: "
                            f"{str(e)[:300]}): {advice}") from None
    others = unlisted(found, old)
    if others and not force_replace:
        raise MixforgeError(f"{url} holds {len(others)} object{'s' if len(others) > 1 else ''} its manifest.json does not "
                            f"list, which --overwrite would delete: {first_few(others, sep=', ')}; move them, or pass "
                            "--force-replace to delete them with the old export")


def _upload(fs, root: str, staging: Path, generation: str) -> None:
    """Data files, then the manifest, then what derives from it; then the old export goes."""
    fs.pipe_file(f"{root}/{MARKER}{generation}", b"")
    _put(fs, staging / generation, f"{root}/{generation}")
    fs.put_file(str(staging / "manifest.json"), f"{root}/manifest.json")
    for name in TOP_FILES:
        if (staging / name).is_file():
            fs.put_file(str(staging / name), f"{root}/{name}")
    if (staging / "trainer").is_dir():
        _put(fs, staging / "trainer", f"{root}/trainer")
    own = {p.relative_to(staging).as_posix() for p in staging.rglob("*") if p.is_file()}
    stale = [rel for rel in _objects(fs, root) if rel not in own and not rel.startswith(MARKER)]
    if stale:  # the old generation, and objects beside it that --force-replace allowed to delete
        fs.rm([f"{root}/{rel}" for rel in stale])
    fs.rm(f"{root}/{MARKER}{generation}")


def _put(fs, folder: Path, url: str) -> None:
    """Every file under `folder` to `url`, keeping relative paths (fsspec uploads them concurrently)."""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    fs.put([str(p) for p in files], [f"{url}/{p.relative_to(folder).as_posix()}" for p in files])


def _remove(fs, path: str) -> None:
    try:
        fs.rm(path, recursive=True)
    except FileNotFoundError:
        pass
