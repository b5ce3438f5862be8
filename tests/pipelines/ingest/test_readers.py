"""pipelines/ingest/readers.py on small real files written from the slice's documents: every
format ingest reads (JSONL plain, gzip and zstd, Parquet, text files, a Hugging Face dataset saved
to disk), each record's id, text and metadata, bad records named by file and line, byte order
marks, files cut short, empty files, formats told by name and magic bytes, and arbitrary Unicode
text round-tripping through each format (hypothesis).

The readers are composed as the ingest stage composes them (pipelines/ingest/stage.py `_read`):
the module's RecordAdapter on datatrove's Parquet and Hugging Face readers, its own JSONL and
text readers."""

from __future__ import annotations

import gzip
import io
import itertools
import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from datatrove.pipeline.readers import HuggingFaceDatasetReader
from hypothesis import HealthCheck, assume, given, settings, strategies as st

from conftest import SLICE
from mixforge.pipelines.ingest.readers import (
    CHUNK,
    LenientJsonlReader,
    WholeFileParquetReader,
    RecordAdapter,
    TextFileReader,
    complete_lines,
    decompressed_chunks,
    format_of,
    is_hf_disk,
    malformed_record,
    source_files,
    sniff_path,
)

EXAMPLES = int(os.environ.get("MIXFORGE_FUZZ_EXAMPLES", "25"))


def slice_docs(label: str) -> list[dict]:
    return [json.loads(line) for line in (SLICE / f"{label}.jsonl").read_text().splitlines()]


def jsonl(records: list) -> bytes:
    return b"".join((r if isinstance(r, bytes) else json.dumps(r, ensure_ascii=False).encode()) + b"\n" for r in records)


def zstd(data: bytes) -> bytes:
    return zstandard.ZstdCompressor().compress(data)


def read(path: Path, fmt: str, label: str | None = "slice", **fields) -> list:
    """Every document the reader of `fmt` makes of `path`, as ingest reads a source's file."""
    adapter = RecordAdapter(source_key=f"src/{path.name}", label=label, label_field=fields.get("label_field"),
                            text_field=fields.get("text_field", "text"), id_field=fields.get("id_field", "id"),
                            display_path=str(path))
    common = dict(adapter=adapter, text_key=adapter.text_field, id_key=adapter.id_field or "id")
    if fmt == "hf_disk":
        return list(HuggingFaceDatasetReader(str(path), load_from_disk=True, **common).run(None, 0, 1))
    if fmt == "jsonl":
        reader = LenientJsonlReader(str(path.parent), add_file_path=False, **common)
    elif fmt == "parquet":
        reader = WholeFileParquetReader(str(path.parent), read_metadata=True, **common)
    else:
        reader = TextFileReader(str(path.parent), add_file_path=False, **common)
    return list(reader.read_file(path.name))


def kept(docs) -> list:
    return [d for d in docs if "reason" not in d.metadata]


def removed(docs) -> dict[str, str]:
    """{document id: reason} of the malformed records."""
    return {d.id: d.metadata["reason"] for d in docs if "reason" in d.metadata}


def assert_slice_read(docs, path: Path, expected: list[dict]):
    """Every record kept with its text, its position as id and origin, its own id as source_id."""
    assert [d.text for d in docs] == [r["text"] for r in expected]
    assert [d.id for d in docs] == [f"src/{path.name}:{n}" for n in range(1, len(expected) + 1)]
    assert [d.metadata["origin"] for d in docs] == [f"{path}:{n}" for n in range(1, len(expected) + 1)]
    assert [d.metadata["source_id"] for d in docs] == [r["id"] for r in expected]
    assert {d.metadata["source"] for d in docs} == {"slice"} and not removed(docs)


# --- JSONL -----------------------------------------------------------------------------------------

COMPRESSIONS = {
    "plain": ("bible.jsonl", lambda b: b),
    "gzip": ("bible.jsonl.gz", gzip.compress),
    "zstd": ("bible.jsonl.zst", zstd),
    "gzip named .jsonl": ("bible.jsonl", gzip.compress),  # compression is told by the content, not the name
    "gzip members": ("bible.jsonl.gz", lambda b: gzip.compress(b[: len(b) // 3]) + gzip.compress(b[len(b) // 3:])),
    "zstd frames": ("bible.jsonl.zst", lambda b: zstd(b[:1000]) + zstd(b[1000:])),
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", list(COMPRESSIONS))
def test_jsonl_plain_and_compressed_keeps_every_record(tmp_path, kind):
    name, compress = COMPRESSIONS[kind]
    docs = slice_docs("bible")
    path = tmp_path / name
    path.write_bytes(compress(jsonl(docs)))
    assert format_of(path) == "jsonl"
    assert_slice_read(read(path, "jsonl"), path, docs)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("compress", ["plain", "gzip"])
def test_jsonl_bad_records_are_named_by_file_and_line_across_chunks(tmp_path, compress):
    """Bad lines among the whole slice (~370 KB: several CHUNKs), with CRLF ends and blank lines."""
    good = [d for label in sorted(os.listdir(SLICE)) if label.endswith(".jsonl") for d in slice_docs(label[:-6])]
    bad = {
        "invalid_utf8": b'{"text": "caf\xe9"}',
        "invalid_json": b'{"text": "unterminated',
        "not_an_object": b'["a", "list"]',
        "missing_text_field": b'{"body": "no text field"}',
        "text_not_string": b'{"text": ["a", "list"]}',
        "empty_text": b'{"text": "  \\n "}',
    }
    lines, expect_bad, expect_good = [], {}, []
    for i, doc in enumerate(good):
        if i % 20 == 7:
            kind = list(bad)[(i // 20) % len(bad)]
            lines.append(bad[kind])
            expect_bad[len(lines)] = kind
        if i % 30 == 11:
            lines.append(b"   ")  # blank: no record, but a line
        lines.append(json.dumps(doc).encode() + (b"\r" if i % 2 else b""))
        expect_good.append((len(lines), doc))
    data = b"\n".join(lines) + b"\n"
    assert len(data) > 4 * CHUNK and set(expect_bad.values()) == set(bad)
    path = tmp_path / "all.jsonl"
    path.write_bytes(gzip.compress(data) if compress == "gzip" else data)

    docs = read(path, "jsonl")
    assert [(d.id, d.text) for d in kept(docs)] == [(f"src/all.jsonl:{n}", doc["text"]) for n, doc in expect_good]
    assert removed(docs) == {f"src/all.jsonl:{n}": f"malformed/{kind}" for n, kind in expect_bad.items()}
    for d in docs:
        if "reason" in d.metadata:
            n = d.id.rsplit(":", 1)[1]
            assert d.metadata["origin"] == f"{path}:{n}" and d.metadata["detail"].startswith(f"{path}:{n}: ")
            assert d.text  # the raw record is kept, so nothing is lost
    utf8 = next(d for d in docs if d.metadata.get("reason") == "malformed/invalid_utf8")
    assert "invalid UTF-8 at byte 13" in utf8.metadata["detail"]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("bom", ["utf-8-sig", "utf-16-le", "utf-16-be"])
def test_byte_order_marks_are_no_part_of_the_first_record(tmp_path, bom):
    docs = slice_docs("quotes")[:5]
    text = jsonl(docs).decode()
    marks = {"utf-8-sig": b"\xef\xbb\xbf", "utf-16-le": b"\xff\xfe", "utf-16-be": b"\xfe\xff"}
    encoded = marks[bom] + text.encode(bom.removesuffix("-sig"))
    path = tmp_path / "quotes.jsonl.gz"
    path.write_bytes(gzip.compress(encoded))
    assert_slice_read(read(path, "jsonl"), path, docs)
    txt = tmp_path / "one.txt"
    txt.write_bytes(marks[bom] + docs[0]["text"].encode(bom.removesuffix("-sig")))
    assert [d.text for d in read(txt, "txt")] == [docs[0]["text"]]


@pytest.mark.timeout(60)
def test_utf16_bytes_that_are_no_character_are_counted_not_replaced(tmp_path):
    lines = '{"text": "fine"}\n{"text": "a\ud800b"}\n{"text": "also fine"}\n'
    path = tmp_path / "u16.jsonl"
    path.write_bytes(b"\xff\xfe" + lines.encode("utf-16-le", "surrogatepass"))
    docs = read(path, "jsonl")
    assert [d.text for d in kept(docs)] == ["fine", "also fine"]
    assert removed(docs) == {"src/u16.jsonl:2": "malformed/invalid_utf8"}
    assert "invalid UTF-16-LE" in docs[1].metadata["detail"] and "\ufffd" not in "".join(d.text for d in kept(docs))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("codec", ["gzip", "zstd"])
def test_a_compressed_file_cut_short_keeps_what_came_before_and_counts_the_loss(tmp_path, codec):
    docs = slice_docs("legal")
    # zstd writes whole blocks: frames of 4 records, as a streaming writer flushing, leave some to recover
    whole = gzip.compress(jsonl(docs)) if codec == "gzip" else b"".join(zstd(jsonl(docs[i:i + 4])) for i in range(0, 16, 4))
    path = tmp_path / "legal.jsonl.gz"
    path.write_bytes(whole[: len(whole) * 2 // 3])
    out = read(path, "jsonl")
    *complete, cut = out
    assert [d.text for d in complete] == [d["text"] for d in docs[: len(complete)]] and 0 < len(complete) < len(docs)
    assert cut.id == "src/legal.jsonl.gz:truncated" and cut.metadata["reason"] == "malformed/truncated_file"
    detail = cut.metadata["detail"]
    assert detail.startswith(f"{path}:{len(complete) + 1}: truncated {codec} file: all {len(whole) * 2 // 3} compressed bytes read")
    assert f"{len(complete)} complete record(s) before the cut kept (lines 1-{len(complete)})" in detail
    tail = "" if cut.text == "<empty>" else cut.text  # the incomplete last line, when the cut frame gave any
    assert jsonl(docs).decode().startswith("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs[: len(complete)]) + tail)

    text = tmp_path / "legal.txt.gz"
    text.write_bytes(gzip.compress(docs[0]["text"].encode())[:-12])
    (cut_text,) = read(text, "txt")
    assert cut_text.metadata["reason"] == "malformed/truncated_file" and docs[0]["text"].startswith(cut_text.text)
    assert "the text before the cut is kept under removed/" in cut_text.metadata["detail"]


@pytest.mark.timeout(60)
def test_empty_files_hold_no_record(tmp_path):
    for name, data in {"empty.jsonl": b"", "blank.jsonl": b"\n \n\t\r\n", "empty.jsonl.gz": gzip.compress(b""),
                       "empty.jsonl.zst": zstd(b""), "bom.jsonl": b"\xef\xbb\xbf"}.items():
        path = tmp_path / name
        path.write_bytes(data)
        assert read(path, "jsonl") == [], name
    empty = tmp_path / "empty.parquet"
    pq.write_table(pa.table({"id": pa.array([], pa.string()), "text": pa.array([], pa.string())}), empty)
    assert read(empty, "parquet") == []
    # a text file is one document: an empty one is a record without text, counted
    blank = tmp_path / "blank.txt"
    blank.write_bytes(b"  \n")
    (doc,) = read(blank, "txt")
    assert doc.metadata["reason"] == "malformed/empty_text" and doc.id == "src/blank.txt:1"


# --- Parquet, text files, Hugging Face datasets ----------------------------------------------------

@pytest.mark.timeout(60)
def test_parquet_rows_are_numbered_across_row_groups_and_bad_rows_named(tmp_path):
    docs = slice_docs("manuals")
    texts = [d["text"] for d in docs]
    texts[4], texts[11] = None, " \n"
    path = tmp_path / "manuals.parquet"
    pq.write_table(pa.table({"id": [d["id"] for d in docs], "text": texts, "origin": [d["origin"] for d in docs]}),
                   path, row_group_size=5)
    assert pq.ParquetFile(path).num_row_groups == 4
    out = read(path, "parquet")
    assert [d.id for d in out] == [f"src/manuals.parquet:{n}" for n in range(1, 17)]
    assert removed(out) == {"src/manuals.parquet:5": "malformed/text_not_string", "src/manuals.parquet:12": "malformed/empty_text"}
    assert [d.text for d in kept(out)] == [t for t in texts if t and t.strip()]
    assert out[4].metadata["detail"] == f"{path}:5: field 'text' is NoneType, not a string"
    assert json.loads(out[4].text)["id"] == docs[4]["id"]  # the raw row is kept
    assert [d.metadata["source_id"] for d in out] == [d["id"] for d in docs]


@pytest.mark.timeout(60)
def test_parquet_named_otherwise_is_told_by_its_magic_bytes(tmp_path):
    path = tmp_path / "data.jsonl"
    pq.write_table(pa.table({"text": ["a parquet file named .jsonl"]}), path)
    assert sniff_path(path) == "parquet" and format_of(path) == "parquet"
    assert [d.text for d in read(path, "parquet")] == ["a parquet file named .jsonl"]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("suffix", [".gz", ".zst"])
def test_compressed_parquet_is_read_as_promised(tmp_path, suffix):
    buffer = io.BytesIO()
    pq.write_table(pa.table({"text": ["compressed parquet"]}), buffer)
    path = tmp_path / f"data.parquet{suffix}"
    path.write_bytes((gzip.compress if suffix == ".gz" else zstd)(buffer.getvalue()))
    assert format_of(path) == "parquet"
    assert [d.text for d in read(path, "parquet")] == ["compressed parquet"]
    path.write_bytes(path.read_bytes()[:-8])  # cut: Parquet without its end is unreadable, and counted as such
    (cut,) = read(path, "parquet")
    assert cut.id == f"src/{path.name}:truncated" and cut.metadata["reason"] == "malformed/truncated_file"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", ["doc.txt", "doc.md", "doc.rst", "doc.txt.gz", "doc.txt.zst"])
def test_text_files_are_one_document_each(tmp_path, name):
    text = slice_docs("man_pages")[3]["text"]
    path = tmp_path / name
    path.write_bytes({".gz": gzip.compress, ".zst": zstd}.get(path.suffix, lambda b: b)(text.encode()))
    assert format_of(path) == "txt"
    (doc,) = read(path, "txt", label="man")
    assert (doc.id, doc.text, doc.metadata["source"], doc.metadata["origin"]) == (f"src/{name}:1", text, "man", f"{path}:1")
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"ok so far \xff\xfe not UTF-8")
    (doc,) = read(bad, "txt")
    assert doc.metadata["reason"] == "malformed/invalid_utf8" and doc.metadata["detail"] == f"{bad}:1: invalid UTF-8 at byte 10"


@pytest.mark.timeout(120)
def test_a_hugging_face_dataset_saved_to_disk(tmp_path):
    import datasets

    docs = slice_docs("dictionary")
    texts = [d["text"] for d in docs]
    texts[2] = ""
    datasets.Dataset.from_dict({"id": [d["id"] for d in docs], "text": texts}).save_to_disk(str(tmp_path / "ds"))
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": ["x"]})}).save_to_disk(str(tmp_path / "dd"))
    assert is_hf_disk(tmp_path / "ds") and is_hf_disk(tmp_path / "dd")
    assert not is_hf_disk(SLICE) and not is_hf_disk(SLICE / "bible.jsonl")
    out = read(tmp_path / "ds", "hf_disk")
    assert [d.id for d in out] == [f"src/ds:{n}" for n in range(1, 17)]  # the reader's "<rank>/<row>" as a position
    assert removed(out) == {"src/ds:3": "malformed/empty_text"}
    assert [d.text for d in kept(out)] == [t for t in texts if t]
    assert [d.metadata["source_id"] for d in out] == [d["id"] for d in docs]


# --- the adapter -----------------------------------------------------------------------------------

@pytest.mark.timeout(60)
def test_labels_ids_and_text_fields_come_from_the_fields_named(tmp_path):
    records = [{"body": "first", "lang": "en", "key": 0}, {"body": "second", "lang": "", "key": 7},
               {"body": "third", "key": "k3"}, {"body": "fourth", "lang": 3}]
    path = tmp_path / "fields.jsonl"
    path.write_bytes(jsonl(records))
    out = read(path, "jsonl", label=None, label_field="lang", text_field="body", id_field="key")
    assert [(d.text, d.metadata["source"], d.metadata["source_id"]) for d in kept(out)] == [("first", "en", "0"), ("fourth", "3", None)]
    assert removed(out) == {"src/fields.jsonl:2": "malformed/missing_label_field", "src/fields.jsonl:3": "malformed/missing_label_field"}
    assert out[1].metadata["detail"] == f"{path}:2: no label in field 'lang'" and out[1].metadata["source_id"] == "7"
    no_ids = read(path, "jsonl", id_field=None, text_field="body")
    assert [d.metadata["source_id"] for d in no_ids] == [None] * 4 and {d.metadata["source"] for d in no_ids} == {"slice"}
    missing = read(path, "jsonl")
    assert set(removed(missing).values()) == {"malformed/missing_text_field"}
    assert "no field 'text' (fields: ['body', 'key', 'lang'])" in missing[0].metadata["detail"]


@pytest.mark.timeout(30)
def test_malformed_record_keeps_the_raw_content_and_a_placeholder_for_none():
    record = malformed_record("k:4", "f.jsonl:4", "invalid_json", "invalid JSON: x", "{raw")
    assert record == {"id": "k:4", "text": "{raw", "metadata": {"origin": "f.jsonl:4", "source": None, "source_id": None,
                                                                 "reason": "malformed/invalid_json",
                                                                 "detail": "f.jsonl:4: invalid JSON: x", "kept_id": None}}
    assert malformed_record("k:1", "f:1", "unreadable_file", "m", "")["text"] == "<empty>"  # datatrove drops empty texts


# --- formats, files, chunks ------------------------------------------------------------------------

@pytest.mark.timeout(30)
def test_format_of_reads_names_without_compression_suffixes(tmp_path):
    names = {"a.jsonl": "jsonl", "b.JSON": "jsonl", "c.ndjson.gz": "jsonl", "d.jsonl.zstd": "jsonl", "e.txt": "txt",
             "f.md.zst": "txt", "g.rst": "txt", "h.parquet": "parquet", "i.csv": None, "j.gz": None, "k": None,
             "l.jsonl.bz2": None}
    for name, fmt in names.items():
        (tmp_path / name).write_bytes(b'{"text": "x"}\n')
        assert format_of(tmp_path / name) == fmt, name


@pytest.mark.timeout(30)
def test_source_files_lists_a_folder_sorted_with_each_files_format(tmp_path):
    for name in ["b.jsonl", "a/c.txt", "a/d.csv", ".git/config", "a/.cache/x.jsonl", "e.parquet.zst", "f.jsonl.gz"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    found = [(str(f.relative_to(tmp_path)), fmt) for f, fmt in source_files(tmp_path, "auto")]
    assert found == [("a/c.txt", "txt"), ("a/d.csv", None), ("b.jsonl", "jsonl"), ("e.parquet.zst", "parquet"),
                     ("f.jsonl.gz", "jsonl")]  # hidden folders left out
    assert [fmt for _, fmt in source_files(tmp_path, "jsonl")] == [None, None, "jsonl", None, "jsonl"]
    assert source_files(tmp_path / "a" / "d.csv", "auto") == [(tmp_path / "a" / "d.csv", "jsonl")]  # named: read as asked
    assert source_files(tmp_path / "a" / "d.csv", "txt") == [(tmp_path / "a" / "d.csv", "txt")]
    assert [f.name for f, _ in source_files(tmp_path / "*.jsonl*", "auto")] == ["b.jsonl", "f.jsonl.gz"]
    assert source_files(tmp_path / "nothing*.jsonl", "auto") == []


@pytest.mark.timeout(30)
def test_lines_survive_any_chunking():
    data = b"".join(json.dumps(d).encode() + b"\n" for d in slice_docs("code"))
    for size in (1, 7, 4096):
        chunks = [data[i:i + size] for i in range(0, len(data), size)]
        assert list(complete_lines(chunks)) == data.split(b"\n")[:-1]
    assert list(complete_lines([b"a\nb"])) == [b"a", b"b"]  # a last line without its newline is a line
    assert b"".join(decompressed_chunks(io.BytesIO(gzip.compress(data) + gzip.compress(data)))) == data + data


# --- arbitrary text through every format -----------------------------------------------------------

texts = st.lists(st.text(st.characters(codec="utf-8"), min_size=1, max_size=60).filter(str.strip), min_size=1, max_size=5)
FORMATS = ["jsonl", "jsonl.gz", "jsonl.zst", "parquet", "txt", "txt.gz"]
EXAMPLE_IDS = itertools.count()  # hypothesis reuses the test's tmp_path: a fresh folder per example


@pytest.mark.timeout(180)
@settings(derandomize=True, max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(docs=texts, ascii_only=st.booleans(), bom=st.sampled_from(["none", "utf-8", "utf-16-le", "utf-16-be"]))
def test_any_unicode_text_round_trips_through_every_format(tmp_path, docs, ascii_only, bom):
    assume(not any(t.startswith("\ufeff") for t in docs))  # in a text file it reads as a byte order mark
    records = [{"id": f"r{i}", "text": t} for i, t in enumerate(docs)]
    marks = {"none": b"", "utf-8": b"\xef\xbb\xbf", "utf-16-le": b"\xff\xfe", "utf-16-be": b"\xfe\xff"}

    def encoded(text: str) -> bytes:  # with the byte order mark of `bom`, in its encoding
        return marks[bom] + text.encode("utf-8" if bom == "none" else bom)

    lines = encoded("".join(json.dumps(r, ensure_ascii=ascii_only) + "\n" for r in records))
    for fmt in FORMATS:
        folder = tmp_path / f"{fmt}-{next(EXAMPLE_IDS)}"
        folder.mkdir()
        compress = {"gz": gzip.compress, "zst": zstd}.get(fmt.rsplit(".", 1)[-1], lambda b: b)
        if fmt.startswith("jsonl"):
            path = folder / f"docs.{fmt}"
            path.write_bytes(compress(lines))
            out = read(path, "jsonl")
        elif fmt == "parquet":
            path = folder / "docs.parquet"
            pq.write_table(pa.table({"id": [r["id"] for r in records], "text": docs}), path)
            out = read(path, "parquet")
        else:
            out = []
            for i, t in enumerate(docs):
                path = folder / f"{i}.{fmt}"
                path.write_bytes(compress(encoded(t)))
                out += read(path, "txt")
        assert [d.text for d in out] == docs and not removed(out), fmt
        if not fmt.startswith("txt"):
            assert [d.metadata["source_id"] for d in out] == [r["id"] for r in records], fmt
