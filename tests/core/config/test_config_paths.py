"""Config loading that cannot be made to explode, and paths that cannot point at each other
(issue 22, item 6): YAML aliases, duplicate keys, the workspace against the sources, a source
listed twice, and configs far too large to be a config."""

import subprocess
import time
from pathlib import Path

import pytest

from conftest import mixforge_cmd
from mixforge.config import MAX_CONFIG_BYTES, MAX_SOURCES, load_config
from mixforge.errors import ConfigError, MixforgeError


def _write(tmp_path: Path, text: str, name: str = "cfg.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _bomb(levels: int = 9) -> str:
    """Billion laughs: 9 levels of 9 aliases each are 9**9 (387 million) strings once expanded."""
    lines = ['lol0: &lol0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"lol{i}: &lol{i} [" + ", ".join([f"*lol{i - 1}"] * 9) + "]" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


@pytest.mark.timeout(60)
def test_an_alias_bomb_in_a_config_is_refused_at_once(tmp_path):
    path = _write(tmp_path, "sources:\n  - path: a.jsonl\n" + _bomb())
    start = time.monotonic()
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert time.monotonic() - start < 5
    msg = str(e.value)
    assert str(path) in msg and "line 4" in msg and "alias" in msg and len(msg) < 1000


@pytest.mark.timeout(60)
def test_an_alias_in_a_mixture_file_is_refused(tmp_path):
    from mixforge.mixers.mixture_file import read_mixture

    path = _write(tmp_path, "a: &w 1.0\nb: *w\n", "mix.yaml")
    with pytest.raises(MixforgeError, match=r"line 2.*alias"):
        read_mixture(path)
    bomb = _write(tmp_path, _bomb() + "a: 1\n", "bomb.yaml")
    start = time.monotonic()
    with pytest.raises(MixforgeError, match="alias"):
        read_mixture(bomb)
    assert time.monotonic() - start < 5


@pytest.mark.timeout(30)
def test_a_key_given_twice_names_the_key_and_both_lines(tmp_path):
    path = _write(tmp_path, "seed: 1\nsources:\n  - path: a.jsonl\nseed: 2\n")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    msg = str(e.value)
    assert str(path) in msg and "'seed'" in msg and "line 4" in msg and "line 1" in msg
    nested = _write(tmp_path, "sources:\n  - {path: a.jsonl, kind: code, kind: prose}\n")
    with pytest.raises(ConfigError, match=r"line 2.*'kind'"):
        load_config(nested)


@pytest.mark.timeout(30)
def test_a_key_given_twice_in_a_mixture_file_is_an_error(tmp_path):
    from mixforge.mixers.mixture_file import read_mixture

    with pytest.raises(MixforgeError, match=r"'code'.*twice"):
        read_mixture(_write(tmp_path, "code: 0.5\nprose: 0.5\ncode: 0.1\n", "mix.yaml"))


@pytest.mark.timeout(30)
def test_values_quoted_in_errors_are_truncated(tmp_path):
    path = _write(tmp_path, f"sources:\n  - path: a.jsonl\nseed: '{'9' * 100_000}'\nworkspace: [{', '.join(['x'] * 50_000)}]\n")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    msg = str(e.value)
    assert "`seed`" in msg and "`workspace`" in msg and len(msg) < 2000


def _sources_config(tmp_path: Path, workspace: str, sources: list[str]) -> Path:
    listed = "".join(f"  - path: {s!r}\n" for s in sources)
    return _write(tmp_path, f"workspace: {workspace!r}\nsources:\n{listed}")


@pytest.fixture
def data(tmp_path: Path) -> Path:
    folder = tmp_path / "data"
    (folder / "sub").mkdir(parents=True)
    for name in ("a.jsonl", "b.jsonl", "sub/c.jsonl"):
        (folder / name).write_text('{"text": "hello"}\n')
    return folder


@pytest.mark.timeout(30)
@pytest.mark.parametrize("workspace, why", [
    ("/", "the filesystem root"),
    ("", "empty"),
    ("data", "is the source folder"),
    ("data/sub/ws", "inside the source folder"),
    (".", "holds the source"),
])
def test_a_workspace_that_is_root_empty_or_overlaps_a_source_is_refused(tmp_path, data, workspace, why):
    path = _sources_config(tmp_path, workspace, ["data"] if why != "holds the source" else ["data/a.jsonl"])
    with pytest.raises(ConfigError) as e:
        load_config(path)
    msg = str(e.value)
    assert str(path) in msg and "`workspace`" in msg and why in msg
    if workspace not in ("/", ""):
        assert str((tmp_path / workspace).resolve()) in msg and str(data.resolve()) in msg


@pytest.mark.timeout(30)
def test_a_workspace_override_that_overlaps_a_source_is_refused(tmp_path, data):
    path = _sources_config(tmp_path, "ws", ["data"])
    assert load_config(path).workspace_dir == tmp_path / "ws"
    with pytest.raises(ConfigError, match=r"--workspace.*inside the source folder"):
        load_config(path, workspace=str(data / "out"))
    with pytest.raises(ConfigError, match=r"--workspace.*filesystem root"):
        load_config(path, workspace="/")


@pytest.mark.timeout(30)
def test_a_workspace_holding_a_glob_source_is_refused(tmp_path, data):
    with pytest.raises(ConfigError, match="holds the source"):
        load_config(_sources_config(tmp_path, "data", ["data/sub/*.jsonl"]))


@pytest.mark.timeout(30)
@pytest.mark.parametrize("first, second", [
    ("data/a.jsonl", "data/a.jsonl"),  # listed twice
    ("data/a.jsonl", "./data//sub/../a.jsonl"),  # another spelling
    ("data/a.jsonl", "link.jsonl"),  # a symlink to it
    ("data", "data/sub/c.jsonl"),  # a file inside a listed folder
    ("data/sub/c.jsonl", "data"),  # the same, the other way round
    ("data", "data/sub"),  # a folder inside a listed folder
    ("data/*.jsonl", "data/b.jsonl"),  # a file a listed glob matches
    ("lnk", "data/sub"),  # a symlinked folder
])
def test_a_source_listed_twice_names_both_entries(tmp_path, data, first, second):
    (tmp_path / "link.jsonl").symlink_to(data / "a.jsonl")
    (tmp_path / "lnk").symlink_to(data)
    (tmp_path / "other.jsonl").write_text('{"text": "other"}\n')
    path = _sources_config(tmp_path, "ws", ["other.jsonl", first, second])
    with pytest.raises(ConfigError) as e:
        load_config(path)
    msg = str(e.value)
    assert str(path) in msg and "sources.1" in msg and "sources.2" in msg and repr(first) in msg and repr(second) in msg


@pytest.mark.timeout(30)
def test_sources_that_do_not_overlap_load(tmp_path, data):
    (data / "sub2").mkdir()
    cfg = load_config(_sources_config(tmp_path, "ws", ["data/a.jsonl", "data/b.jsonl", "data/sub", "data/sub2/*.jsonl",
                                                       "missing/x.jsonl"]))
    assert len(cfg.sources) == 5
    two_splits = _write(tmp_path, "sources:\n  - {path: hf, format: hf_disk, split: train}\n"
                        "  - {path: hf, format: hf_disk, split: test}\n")
    assert len(load_config(two_splits).sources) == 2


def _many_sources(tmp_path: Path, n: int) -> Path:
    path = tmp_path / "many.yaml"
    with path.open("w") as f:
        f.write("workspace: ws\nsources:\n")
        f.writelines(f"  - path: data/f{i}.jsonl\n" for i in range(n))
    return path


@pytest.mark.timeout(120)
def test_a_config_of_400000_sources_is_refused_in_seconds(tmp_path):
    path = _many_sources(tmp_path, 400_000)
    start = time.monotonic()
    with pytest.raises(ConfigError, match=r"folders or globs") as e:
        load_config(path)
    assert time.monotonic() - start < 5
    assert str(path) in str(e.value)
    status = subprocess.run(mixforge_cmd() + ["status", str(path)], capture_output=True, text=True, timeout=60)
    assert status.returncode == 2 and "Traceback" not in status.stderr and "folders or globs" in status.stderr


@pytest.mark.timeout(120)
def test_status_answers_in_seconds_at_the_most_sources(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    for i in range(MAX_SOURCES):
        (folder / f"f{i}.jsonl").write_text('{"text": "x"}\n')
    path = _many_sources(tmp_path, MAX_SOURCES)
    assert path.stat().st_size < MAX_CONFIG_BYTES
    start = time.monotonic()
    status = subprocess.run(mixforge_cmd() + ["status", str(path)], capture_output=True, text=True, timeout=100)
    took = time.monotonic() - start
    assert status.returncode == 0, status.stderr[-2000:]
    assert took < 30, f"status took {took:.1f} s"
    too_many = _many_sources(tmp_path, MAX_SOURCES + 1)
    with pytest.raises(ConfigError, match=f"{MAX_SOURCES + 1:,} sources"):
        load_config(too_many)
