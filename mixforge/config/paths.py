"""The paths of a config checked against each other at load, before anything is written or read:
a workspace that is the filesystem root, empty, or overlaps a source (a build would write where
it reads, and ingest its own outputs), and a source listed twice (its documents would be read
twice, however the paths are spelt: `..`, `//`, symlinks, a file inside a listed folder or
matched by a listed glob). Paths are compared after resolving symlinks; nothing is listed but
the folders of globs that share a folder."""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from mixforge.errors import ConfigError
from mixforge.urls import check_url, is_url

GLOB_CHARS = "*?["


@dataclass
class _Source:
    index: int
    spelt: str  # as the config writes it
    real: Path  # resolved: the file or folder, or a glob's folder
    pattern: str | None  # a glob's last part (readers glob only there)
    split: str | None
    is_dir: bool


def real_path(cfg, spelt: str, where: str) -> Path:
    """`spelt` resolved against the config's folder, symlinks followed; ConfigError if it cannot be."""
    try:
        return Path(os.path.realpath(cfg.resolve(spelt)))
    except (OSError, RuntimeError, ValueError) as e:  # a NUL byte, ~nosuchuser, a name too long
        raise ConfigError(f"{where}: {spelt!r} is not a usable path: {e}") from None


def check_paths(cfg, where: Callable[[str], str], workspace_where: str) -> None:
    """ConfigError naming the field and both paths when the workspace or a source overlaps
    another. `where(field)`: "FILE: line N, field `field`" for the message. Sources at URLs
    (object storage) are checked apart: they cannot overlap the workspace, which is local."""
    local = [i for i, s in enumerate(cfg.sources) if not is_url(s.path)]
    sources = [_source(cfg, i, where) for i in local]
    _check_workspace(cfg, sources, workspace_where)
    _check_distinct(sources, where)
    _check_urls(cfg, [i for i in range(len(cfg.sources)) if i not in set(local)], where)


def _check_urls(cfg, indexes: list[int], where: Callable[[str], str]) -> None:
    """Each source URL can be opened here and holds no credentials; no object is listed twice
    (the same URL, or one inside another's folder)."""
    for i in indexes:
        check_url(cfg.sources[i].path, where(f"sources.{i}.path"))
    for n, i in enumerate(indexes):
        for j in indexes[:n]:
            if _inside(cfg.sources[i].path, cfg.sources[j].path) or _inside(cfg.sources[j].path, cfg.sources[i].path):
                raise ConfigError(f"{where(f'sources.{i}.path')}: sources.{i} ({cfg.sources[i].path!r}) and sources.{j} "
                                  f"({cfg.sources[j].path!r}) name the same objects: they would be read twice; remove one")


def _inside(url: str, other: str) -> bool:
    """`url` is `other`, or lies in `other` as a folder (a glob is no folder)."""
    url, other = url.rstrip("/"), other.rstrip("/")
    return url == other or (not any(c in other for c in GLOB_CHARS) and url.startswith(other + "/"))


def _source(cfg, i: int, where: Callable[[str], str]) -> _Source:
    source = cfg.sources[i]
    spelt = source.path
    name = os.path.basename(spelt.rstrip("/"))
    glob = any(c in name for c in GLOB_CHARS)
    real = real_path(cfg, os.path.dirname(spelt.rstrip("/")) or "." if glob else spelt, where(f"sources.{i}.path"))
    split = source.split if source.format in ("hf_disk", "auto") else None  # two splits of one dataset are two sources
    return _Source(i, spelt, real, name if glob else None, split, not glob and real.is_dir())


def _check_workspace(cfg, sources: list[_Source], where: str) -> None:
    if not cfg.workspace.strip():
        raise ConfigError(f"{where}: the workspace is empty; name a folder for the outputs, such as ./mixforge-work")
    if is_url(cfg.workspace):
        raise ConfigError(f"{where}: the workspace {cfg.workspace!r} is a URL; the workspace stays on a filesystem every "
                          "worker sees (a local disk, NFS, Lustre): sources may be read from object storage and "
                          "exports written to it (`mixforge export --out s3://...`)")
    ws = real_path(cfg, cfg.workspace, where)
    if ws.parent == ws:
        raise ConfigError(f"{where}: the workspace {cfg.workspace!r} is the filesystem root ({ws}); name a folder of its "
                          "own, such as ./mixforge-work")
    for s in sources:
        if ws == s.real and (s.is_dir or s.pattern):
            why = "is the source folder"
        elif ws.is_relative_to(s.real) and s.is_dir:
            why = "lies inside the source folder"
        elif s.real.is_relative_to(ws):
            why = "holds the source"
        else:
            continue
        raise ConfigError(f"{where}: the workspace {ws} {why} {s.real} (sources.{s.index}: {s.spelt!r}); a build would "
                          "write where it reads: put the workspace beside the data, not in it")


def _check_distinct(sources: list[_Source], where: Callable[[str], str]) -> None:
    plain = {}  # (real path, split) -> the first source of it
    folders = {s.real: s for s in sources if s.is_dir}
    globs: dict[Path, list[_Source]] = {}
    for s in sources:
        if s.pattern:
            globs.setdefault(s.real, []).append(s)
            continue
        first = plain.setdefault((s.real, s.split), s)
        if first is not s:
            _twice(first, s, f"is the same {'folder' if s.is_dir else 'file'} as", where)
    for s in sources:  # a file or folder inside a listed folder (hidden parts are not read there)
        for parent in (s.real.parents if not s.pattern else [s.real, *s.real.parents]):
            if parent in folders and folders[parent] is not s and not _hidden(s.real.relative_to(parent)):
                _twice(folders[parent], s, "lies inside the folder of", where)
    by_folder: dict[Path, list[_Source]] = {}
    for s in sources:
        if not s.pattern:
            by_folder.setdefault(s.real.parent, []).append(s)
    for folder, listed in globs.items():  # a file a listed glob matches; two globs of one folder
        for s in listed:
            for other in by_folder.get(folder, []):
                if fnmatch.fnmatchcase(other.real.name, s.pattern):
                    _twice(s, other, "is matched by the glob of", where)
        if len(listed) > 1:
            names = [n for n in os.listdir(folder) if (folder / n).is_file()] if folder.is_dir() else []
            for i, a in enumerate(listed):
                for b in listed[i + 1:]:
                    both = [n for n in names if fnmatch.fnmatchcase(n, a.pattern) and fnmatch.fnmatchcase(n, b.pattern)]
                    if both:
                        _twice(a, b, f"matches files ({both[0]}, ...) also matched by", where)


def _hidden(relative: Path) -> bool:
    return any(part.startswith(".") for part in relative.parts)


def _twice(first: _Source, second: _Source, relation: str, where: Callable[[str], str]) -> None:
    a, b = sorted((first, second), key=lambda s: s.index)
    raise ConfigError(f"{where(f'sources.{second.index}.path')}: sources.{second.index} ({second.spelt!r}: {second.real}) {relation} "
                      f"sources.{first.index} ({first.spelt!r}): its files would be read twice; remove one of "
                      f"sources.{a.index} and sources.{b.index}")
