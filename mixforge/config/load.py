"""Loading a config file with errors that name the file, line, field and bad value."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from pydantic import ValidationError

from mixforge.errors import ConfigError
from mixforge.config.paths import check_paths
from mixforge.config.problems import error_lines, line_of
from mixforge.config.project import MixforgeConfig
from mixforge.config.yaml_text import parse_yaml, read_text


# A config lists folders and globs, not files one by one: bigger ones are refused before parsing
# (400,000 sources took minutes to parse and validate; at these caps load and status take seconds).
MAX_CONFIG_BYTES = 1024 * 1024
MAX_SOURCES = 10_000
MAX_PROBLEMS = 20  # validation problems listed; the rest are counted


def load_config(path: str | Path, workspace: str | None = None, overrides: dict | None = None) -> MixforgeConfig:
    """Read and validate a config file (optionally overriding its workspace, and sections' keys:
    `{"proxy": {"preset": "small"}}` for a verification at another proxy size).
    Raises ConfigError naming file, line, field and value."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    size = path.stat().st_size
    if size > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: {size:,} bytes is too large for a config (at most {MAX_CONFIG_BYTES:,}): list folders "
                          f"or globs as sources (a folder source reads every file under it), not files one by one")
    data, root = parse_yaml(read_utf8(path), path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top, got {type(data).__name__}")
    sources = data.get("sources")
    if isinstance(sources, list) and len(sources) > MAX_SOURCES:
        raise ConfigError(f"{path}: line {line_of(root, ['sources'])}, field `sources`: {len(sources):,} sources is more than "
                          f"{MAX_SOURCES:,}: give a folder or a glob as one source (a folder source reads every file under it)")
    for section, values in (overrides or {}).items():
        if isinstance(data.get(section), (dict, type(None))):  # anything else is the config's error, reported below
            data[section] = {**(data.get(section) or {}), **values}
    try:
        cfg = MixforgeConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_describe_validation_error(path, root, e)) from None
    cfg._base_dir = path.resolve().parent
    checked: dict[str, None] = {}  # per distinct kind and overrides: 10,000 sources share a few
    for i, source in enumerate(cfg.sources):
        key = json.dumps([source.kind, source.filters], sort_keys=True, default=str)
        if key in checked:
            continue
        try:
            cfg.source_filters(source)
        except ConfigError as e:
            raise ConfigError(f"{path}: sources.{i}.filters: {e}") from None
        checked[key] = None
    if workspace is not None:
        cfg.workspace = workspace
    where = (lambda field: f"{path}: line {line_of(root, field.split('.'))}, field `{field}`")
    workspace_where = "--workspace" if workspace is not None else where("workspace")
    check_paths(cfg, where, workspace_where)
    if cfg.workspace_dir.exists() and not cfg.workspace_dir.is_dir():  # else every stage fails on its first write
        raise ConfigError(f"{workspace_where}: {cfg.workspace_dir} is a file, not a folder; point it at a folder (made if missing)")
    return cfg


def read_utf8(path: Path) -> str:
    """A text file's content (UTF-8, or UTF-16/32 with a byte order mark); other bytes are a
    ConfigError naming the offset, line and column of the first bad one."""
    return read_text(path)


def _describe_validation_error(path: Path, root: yaml.Node | None, error: ValidationError) -> str:
    header = f"{path}: invalid config ({error.error_count()} problem(s))"
    lines = error_lines(error, root)
    more = [f"  ... and {len(lines) - MAX_PROBLEMS:,} more"] if len(lines) > MAX_PROBLEMS else []
    return "\n".join([header] + [f"  {line}" for line in lines[:MAX_PROBLEMS]] + more)
