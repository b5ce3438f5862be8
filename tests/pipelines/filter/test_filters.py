import json
from pathlib import Path

import polars as pl

from conftest import FIXTURES, SLICE, write_config
from mixforge.config import FiltersConfig, load_config
from mixforge.pipelines.build import build
from mixforge.pipelines.filter.stage import LengthFilter, build_filters
from datatrove.data import Document


def _copy(tmp_path: Path, label: str) -> str:
    (tmp_path / f"{label}.jsonl").write_text((SLICE / f"{label}.jsonl").read_text())
    return f"{label}.jsonl"


def _frame(ws: Path, where: str) -> pl.DataFrame:
    files = sorted((ws / where).rglob("*.parquet"))
    return pl.read_parquet(files) if files else pl.DataFrame()


def test_length_filter_bounds():
    f = LengthFilter(min_chars=5, max_chars=10)
    assert f.filter(Document(text="abc", id="a")) == (False, "too_short")
    assert f.filter(Document(text="abcdefghijk", id="b")) == (False, "too_long")
    assert f.filter(Document(text="abcdefg", id="c")) is True


def test_language_filter_runs_offline_and_names_the_language(tmp_path):
    rows = [{"text": (FIXTURES / "lang" / f"{lang}_apropos.txt").read_text()} for lang in ("fr", "de")]
    rows += [json.loads(l) for l in (SLICE / "bible.jsonl").read_text().splitlines()[:3]]
    (tmp_path / "mixed.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    only_language = {k: {"enabled": False} for k in ("gopher_quality", "gopher_repetition", "c4_quality", "fineweb_quality")}
    cfg = load_config(write_config(tmp_path, [{"path": "mixed.jsonl", "filters": only_language}]))
    build(cfg, until="dedup")
    removed = _frame(tmp_path / "ws", "removed")
    assert removed["reason"].to_list() == ["language/other_language"] * 2
    assert sorted(d.rsplit("predicted ", 1)[1][:2] for d in removed["detail"]) == ["de", "fr"]
    assert _frame(tmp_path / "ws", "dedup/docs").height == 3


def test_code_source_skips_prose_filters(tmp_path):
    name = _copy(tmp_path, "code")
    (tmp_path / "p").mkdir()
    build(load_config(write_config(tmp_path / "p", [{"path": str(tmp_path / name)}])), until="dedup")
    as_prose = _frame(tmp_path / "p" / "ws", "removed")
    assert as_prose["reason"].str.contains("gopher|c4|fineweb|language").sum() >= 8  # prose rules reject code
    code = load_config(write_config(tmp_path, [{"path": name, "kind": "code"}]))
    build(code, until="dedup")
    as_code = _frame(tmp_path / "ws", "removed")
    assert as_code.is_empty() or as_code["reason"].str.starts_with("length/").all()


def test_removed_documents_are_kept_whole_and_trimming_is_counted(tmp_path):
    name = _copy(tmp_path, "bible")
    cfg = load_config(write_config(tmp_path, [{"path": name, "filters": {"c4_quality": {"min_num_sentences": 20}}}]))
    _, filtered, _ = build(cfg, until="dedup")
    removed = _frame(tmp_path / "ws", "removed")
    c4 = removed.filter(pl.col("reason") == "c4_quality/too_few_sentences")
    assert c4.height > 0
    original = {json.loads(l)["id"]: json.loads(l)["text"] for l in (SLICE / "bible.jsonl").read_text().splitlines()}
    for row in c4.iter_rows(named=True):
        assert row["text"] == original[row["source_id"]]  # C4 trims in place; the removed copy is whole
    assert filtered.counts["chars_trimmed"] > 0  # kept chapters lost their verse-number-only lines
    assert filtered.counts["docs_in"] == filtered.counts["docs_out"] + filtered.counts["docs_removed"]


def test_thresholds_are_configurable(tmp_path):
    name = _copy(tmp_path, "bible")
    cfg = load_config(write_config(tmp_path, [{"path": name}], filters={"gopher_quality": {"min_doc_words": 1_000_000}}))
    _, filtered, _ = build(cfg, until="dedup")
    assert filtered.counts["docs_out"] == 0
    assert "gopher_quality/gopher_short_doc" in filtered.counts["removed"]


def test_build_filters_respects_enabled_flags():
    settings = FiltersConfig()
    assert [n for n, _ in build_filters(settings)] == [
        "length", "language", "gopher_repetition", "gopher_quality", "c4_quality", "fineweb_quality"
    ]
    settings.language.enabled = False
    settings.c4_quality.enabled = False
    assert [n for n, _ in build_filters(settings)] == ["length", "gopher_repetition", "gopher_quality", "fineweb_quality"]
