"""Locations at URLs in the config: refused with the field named when they hold credentials, name
a protocol fsspec cannot open, or make the workspace a URL; URL sources listed twice are refused."""

import pytest

from mixforge.config import load_config
from mixforge.errors import ConfigError
from mixforge.urls import is_url


def _load(tmp_path, sources: list[str], workspace: str = "ws"):
    path = tmp_path / "cfg.yaml"
    path.write_text(f"workspace: {workspace}\nsources:\n" + "".join(f"  - path: {s}\n" for s in sources))
    return load_config(path)


def test_urls_are_told_from_paths():
    assert is_url("s3://bucket/a.jsonl") and is_url("hf://datasets/org/name/data/*.parquet") and is_url("GS://b/x")
    assert not is_url("data/a.jsonl") and not is_url("/abs/path") and not is_url("file:///abs/path") and not is_url("c:/x")


@pytest.mark.parametrize("url, said", [
    ("s3://AKIAEXAMPLE:hunter2@bucket/a.jsonl", "holds credentials"),
    ("nosuchproto://bucket/a.jsonl", "fsspec knows no protocol 'nosuchproto'"),
])
def test_a_source_url_that_cannot_be_used_is_refused_naming_the_field(tmp_path, url, said):
    with pytest.raises(ConfigError) as e:
        _load(tmp_path, ["a.jsonl", url])
    assert "sources.1.path" in str(e.value) and said in str(e.value)
    assert "hunter2" not in str(e.value)


def test_the_workspace_is_never_a_url(tmp_path):
    with pytest.raises(ConfigError) as e:
        _load(tmp_path, ["s3://bucket/a.jsonl"], workspace="s3://bucket/ws")
    assert "workspace" in str(e.value) and "is a URL" in str(e.value)


@pytest.mark.parametrize("first, second", [
    ("s3://bucket/data", "s3://bucket/data/"),
    ("s3://bucket/data/", "s3://bucket/data/web/a.jsonl"),
    ("s3://bucket/data/web/*.jsonl", "s3://bucket/data"),
])
def test_a_url_source_listed_twice_is_refused(tmp_path, first, second):
    with pytest.raises(ConfigError) as e:
        _load(tmp_path, [first, second])
    assert "sources.1" in str(e.value) and "read twice" in str(e.value)


def test_url_sources_that_do_not_overlap_load(tmp_path):
    cfg = _load(tmp_path, ["s3://bucket/data/web/", "s3://bucket/data/webtext/", "s3://bucket/data/code/*.jsonl"])
    assert [s.path for s in cfg.sources][0] == "s3://bucket/data/web/"
