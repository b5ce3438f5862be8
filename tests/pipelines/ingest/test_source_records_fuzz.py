"""Source records of every awkward kind, generated with hypothesis and read by the real ingest
stage: JSONL, text and Parquet files with UTF-8 or UTF-16 byte order marks, NUL bytes, CRLF line
ends, nested or non-string `text`, huge and empty lines, invalid UTF-8. The property: every
record is either kept with its exact text or removed as `malformed/<kind>` naming its file and
line; the ledger balances; nothing is lost; never a traceback."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import write_config
from mixforge.config import load_config
from mixforge.pipelines.ingest.stage import run_ingest

EXAMPLES = int(os.environ.get("MIXFORGE_FUZZ_EXAMPLES", "6"))
BOMS = {"none": b"", "utf-8": b"\xef\xbb\xbf", "utf-16-le": b"\xff\xfe", "utf-16-be": b"\xfe\xff"}

# a text worth keeping: anything with a non-space character, NULs and astral characters included
texts = st.text(st.characters(codec="utf-8"), min_size=1, max_size=40).filter(str.strip)
huge = st.integers(100_000, 300_000).map(lambda n: "word " * (n // 5) + "end")
not_strings = st.one_of(st.none(), st.integers(), st.booleans(), st.lists(st.integers(), max_size=3),
                        st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


@st.composite
def jsonl_line(draw, utf16: bool):
    """(line without its newline as str or bytes, expected outcome: ('kept', text) or ('removed', kind) or None for blank)."""
    kinds = ["good", "huge", "nested", "empty", "missing", "bad_json", "blank", "not_object"]
    kinds += ["bad_utf16"] if utf16 else ["bad_utf8", "nul_byte"]
    kind = draw(st.sampled_from(kinds))
    if kind == "good":
        text = draw(texts)
        return json.dumps({"text": text}, ensure_ascii=draw(st.booleans())), ("kept", text)
    if kind == "huge":
        text = draw(huge)
        return json.dumps({"text": text}), ("kept", text)
    if kind == "nested":
        return json.dumps({"text": draw(not_strings)}), ("removed", "text_not_string")
    if kind == "empty":
        return json.dumps({"text": draw(st.sampled_from(["", " ", "\t\n"]))}), ("removed", "empty_text")
    if kind == "missing":
        return json.dumps({"body": draw(texts)}), ("removed", "missing_text_field")
    if kind == "bad_json":
        return "#" + draw(st.text(max_size=20)).replace("\n", " "), ("removed", "invalid_json")
    if kind == "not_object":
        return json.dumps(draw(st.lists(st.integers(), max_size=3))), ("removed", "not_an_object")
    if kind == "blank":
        return draw(st.sampled_from(["", " ", "\t "])), None
    if kind == "bad_utf16":  # a lone surrogate: a code unit that is no character
        return '{"text": "a\ud800b"}', ("removed", "invalid_utf8")
    if kind == "bad_utf8":
        return b'{"text": "caf\xe9 ' + draw(st.binary(max_size=5)).replace(b"\n", b"") + b'"}', ("removed", "invalid_utf8")
    return b'{"text": "a\x00b"}', ("removed", "invalid_json")  # a raw NUL byte: JSON forbids control characters


def encode_lines(lines: list, bom: str, crlf: bool) -> bytes:
    end = "\r\n" if crlf else "\n"
    if bom.startswith("utf-16"):
        return BOMS[bom] + "".join(line + end for line in lines).encode(bom, "surrogatepass")
    return BOMS[bom] + b"".join((line.encode() if isinstance(line, str) else line) + end.encode() for line in lines)


@st.composite
def jsonl_file(draw):
    bom = draw(st.sampled_from(list(BOMS)))
    drawn = draw(st.lists(jsonl_line(bom.startswith("utf-16")), min_size=1, max_size=8))
    data = encode_lines([line for line, _ in drawn], bom, draw(st.booleans()))
    expected = {n: outcome for n, (_, outcome) in enumerate(drawn, 1) if outcome is not None}
    return data, expected


@st.composite
def text_file(draw):
    bom = draw(st.sampled_from(list(BOMS)))
    text = draw(st.one_of(texts, huge, st.just("  \n ")))
    if draw(st.booleans()):
        text = text.replace("\n", "\r\n")
    if bom.startswith("utf-16"):
        return BOMS[bom] + text.encode(bom), {1: ("kept", text) if text.strip() else ("removed", "empty_text")}
    if draw(st.booleans()):  # invalid UTF-8 somewhere in the file
        return BOMS[bom] + text.encode() + b"\xc3(", {1: ("removed", "invalid_utf8")}
    return BOMS[bom] + text.encode(), {1: ("kept", text) if text.strip() else ("removed", "empty_text")}


@st.composite
def parquet_file(draw):
    """A Parquet file's rows: string texts (nulls, blanks, NULs) or a column of another type."""
    if draw(st.booleans()):
        values = draw(st.lists(st.one_of(texts, st.none(), st.just(""), st.just("a\x00b")), min_size=1, max_size=6))
        column = pa.array(values, pa.string())
    else:
        values = draw(st.lists(st.one_of(st.integers(-5, 5), st.none()), min_size=1, max_size=6))
        column = pa.array([None if v is None else {"inner": v} for v in values])
    expected = {}
    for n, v in enumerate(values, 1):
        if isinstance(v, str) and v.strip():
            expected[n] = ("kept", v)
        else:
            expected[n] = ("removed", "empty_text" if isinstance(v, str) else "text_not_string")
    return pa.table({"text": column}), expected


def ingest_folder(files: dict) -> tuple[pl.DataFrame, pl.DataFrame, dict]:
    """Write `files` (name -> bytes or pyarrow table) into one source folder beside a control file,
    run the real ingest stage: (kept, removed, ledger counts)."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "data").mkdir()
        (root / "data" / "control.jsonl").write_text(json.dumps({"text": "a control record"}) + "\n")
        for name, content in files.items():
            if isinstance(content, pa.Table):
                pq.write_table(content, root / "data" / name)
            else:
                (root / "data" / name).write_bytes(content)
        cfg = load_config(write_config(root, [{"path": "data", "label": "f"}], workers=1))
        result = run_ingest(cfg)
        ws = root / "ws"
        kept = pl.read_parquet(sorted((ws / "ingest" / "docs").glob("*.parquet")))
        removed_files = sorted((ws / "removed").rglob("ingest-*.parquet"))
        removed = pl.read_parquet(removed_files) if removed_files else pl.DataFrame(schema=dict(id=pl.String, reason=pl.String, detail=pl.String))
        return kept, removed, result.counts


def check(files: dict, expected: dict) -> None:
    """Every expected record accounted for once, as expected; the counts balance."""
    kept, removed, counts = ingest_folder(files)
    assert counts["docs_in"] == counts["docs_out"] + counts["docs_removed"] == kept.height + removed.height
    texts_by_id = dict(zip(kept["id"], kept["text"]))
    removed_by_id = {r["id"]: r for r in removed.iter_rows(named=True)}
    assert len(texts_by_id) == kept.height and len(removed_by_id) == removed.height  # ids are unique
    want = {f"f/{name}:{n}": outcome for name, lines in expected.items() for n, outcome in lines.items()}
    want["f/control.jsonl:1"] = ("kept", "a control record")
    assert set(texts_by_id) | set(removed_by_id) == set(want), "a record was lost or invented"
    for doc_id, (outcome, value) in want.items():
        if outcome == "kept":
            assert texts_by_id.get(doc_id) == value, (doc_id, removed_by_id.get(doc_id))
        else:
            row = removed_by_id.get(doc_id)
            assert row is not None, (doc_id, "kept", texts_by_id[doc_id][:80])
            assert row["reason"] == f"malformed/{value}", (doc_id, row["reason"], row["detail"])
            file, line = doc_id[2:].rsplit(":", 1)
            assert f"{file}:{line}:" in row["detail"], row["detail"]  # names the file and the line


@pytest.mark.timeout(120)
def test_a_utf8_bom_keeps_the_first_jsonl_record():
    lines = [json.dumps({"text": t}) for t in ("first record", "second", "third")]
    check({"bom.jsonl": b"\xef\xbb\xbf" + "\n".join(lines).encode() + b"\n"},
          {"bom.jsonl": {1: ("kept", "first record"), 2: ("kept", "second"), 3: ("kept", "third")}})


@pytest.mark.timeout(60 + 60 * EXAMPLES)
@settings(derandomize=True, max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(jsonl_file(), min_size=1, max_size=3), st.lists(text_file(), max_size=2), st.lists(parquet_file(), max_size=2))
def test_every_source_record_is_kept_or_counted_with_its_file_and_line(jsonls, txts, parquets):
    files, expected = {}, {}
    for kind, suffix, drawn in (("j", "jsonl", jsonls), ("t", "txt", txts), ("p", "parquet", parquets)):
        for i, (content, outcome) in enumerate(drawn):
            files[f"{kind}{i}.{suffix}"] = content
            expected[f"{kind}{i}.{suffix}"] = outcome
    check(files, expected)
