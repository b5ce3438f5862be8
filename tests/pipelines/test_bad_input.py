"""Planted bad records: each is reported with file and line, counted in the ledger, kept under
removed/, and the build goes on; --strict fails with the same messages instead."""

import gzip
import json
import subprocess
from pathlib import Path

import polars as pl
import pytest

from conftest import FIXTURES, SLICE, mixforge_cmd, write_config
from mixforge.config import load_config
from mixforge.errors import InputError
from mixforge.pipelines.build import build

EXPECTED = {  # line -> reason
    2: "malformed/invalid_json",
    3: "malformed/empty_text",
    4: "malformed/empty_text",
    5: "malformed/missing_text_field",
    6: "malformed/text_not_string",
    7: "malformed/invalid_utf8",
    8: "malformed/not_an_object",
    9: "malformed/duplicate_id",
}


def _bad_config(tmp_path: Path, **top) -> Path:
    (tmp_path / "records.jsonl").write_bytes((FIXTURES / "bad" / "records.jsonl").read_bytes())
    # a damaged file: gzip cut off half-way, after its first complete record
    good = "".join(json.dumps({"text": r}) + "\n" for r in [json.loads(l)["text"] for l in (SLICE / "bible.jsonl").read_text().splitlines()[:4]])
    blob = gzip.compress(good.encode())
    (tmp_path / "cut.jsonl.gz").write_bytes(blob[: len(blob) // 2])
    # one multi-megabyte document of real text (the slice's Bible chapters, repeated)
    bible = "\n\n".join(json.loads(l)["text"] for l in (SLICE / "bible.jsonl").read_text().splitlines())
    huge = (bible + "\n\n") * (3_000_000 // len(bible) + 1)
    (tmp_path / "huge.jsonl").write_text(json.dumps({"id": "huge", "text": huge}) + "\n")
    filters = {"gopher_quality": {"enabled": False}, "c4_quality": {"enabled": False}, "fineweb_quality": {"enabled": False},
               "gopher_repetition": {"enabled": False}, "language": {"enabled": False}, "length": {"min_chars": 10}}
    sources = [{"path": "records.jsonl", "filters": filters}, {"path": "cut.jsonl.gz"}, {"path": "huge.jsonl"}]
    return write_config(tmp_path, sources, **top)


def _removed(ws: Path) -> pl.DataFrame:
    return pl.read_parquet(sorted((ws / "removed").rglob("*.parquet")))


def test_each_planted_record_is_reported_counted_and_kept(tmp_path):
    cfg = load_config(_bad_config(tmp_path))
    ingest, filtered, deduped = build(cfg, until="dedup")
    removed = _removed(tmp_path / "ws")
    src = str(tmp_path / "records.jsonl")
    for line, reason in EXPECTED.items():
        row = removed.filter(pl.col("detail").str.starts_with(f"{src}:{line}:"))
        assert row.height == 1, f"line {line} not reported: {removed.select('reason', 'detail')}"
        assert row["reason"][0] == reason
    # the duplicate id message points at the first occurrence
    dup = removed.filter(pl.col("reason") == "malformed/duplicate_id")["detail"][0]
    assert "'g1'" in dup and f"{src}:1" in dup
    # invalid bytes survive (replaced) in the kept record; nothing is thrown away silently
    assert "caf" in removed.filter(pl.col("reason") == "malformed/invalid_utf8")["text"][0]
    cut = removed.filter(pl.col("reason") == "malformed/truncated_file")
    assert cut.height == 1 and "cut.jsonl.gz" in cut["detail"][0]
    assert removed.filter(pl.col("reason") == "length/too_long")["id"].to_list() == ["huge/huge.jsonl:1"]
    # the ledger adds up and names every reason
    assert ingest.counts["removed"]["malformed/empty_text"]["docs"] == 2
    assert filtered.counts["removed"]["malformed/duplicate_id"]["docs"] == 1
    for stage in (ingest, filtered, deduped):
        c = stage.counts
        assert c["docs_in"] == c["docs_out"] + c["docs_removed"]
    kept = pl.read_parquet(sorted((tmp_path / "ws" / "dedup" / "docs").glob("*.parquet")))
    assert {"records/records.jsonl:1", "records/records.jsonl:10"} <= set(kept["id"])
    assert kept.height + removed.height == ingest.counts["docs_in"]


def test_strict_fails_naming_file_and_line(tmp_path):
    cfg = load_config(_bad_config(tmp_path))
    with pytest.raises(InputError) as e:
        build(cfg, strict=True, until="dedup")
    assert f"{tmp_path / 'records.jsonl'}:2: invalid JSON" in str(e.value)
    assert not (tmp_path / "ws" / "ingest" / "_stage.json").exists()


@pytest.mark.timeout(240)
def test_cli_reports_user_mistakes_without_traceback(tmp_path):
    bad_key = tmp_path / "bad.yaml"
    bad_key.write_text("sources:\n  - path: x.jsonl\ndedupe: {}\n")
    run = subprocess.run(mixforge_cmd() + ["build", str(bad_key)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert "line 3" in run.stderr and "`dedupe`" in run.stderr and "unknown key" in run.stderr

    missing = write_config(tmp_path, [{"path": "absent.jsonl"}])
    run = subprocess.run(mixforge_cmd() + ["build", str(missing)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "Traceback" not in run.stderr and "absent.jsonl" in run.stderr

    (tmp_path / "strict").mkdir()
    strict = _bad_config(tmp_path / "strict")
    run = subprocess.run(mixforge_cmd() + ["build", str(strict), "--strict"], capture_output=True, text=True, timeout=200)
    assert run.returncode == 2, run.stderr[-2000:]
    assert "Traceback" not in run.stderr
    assert "records.jsonl:7: invalid UTF-8" in run.stderr
