"""Bad input through the real CLI (`mixforge build CONFIG --until filter`: ingest and filter are
where bad input is found; tests/pipelines/test_bad_input.py runs dedup on it too): every case either ends
with exit 0, its bad records counted under a named reason and the ledger adding up, or with exit
2 and a message naming the file (and line or field); never a traceback.

One build reads all the counted cases at once (one source each), so the file stays fast; the
cases that must stop the build run one by one (they stop before Prefect starts)."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import zlib
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
import zstandard

from conftest import FIXTURES, SLICE, mixforge_cmd, write_config

BAD = FIXTURES / "bad" / "build"
LOOSE = {  # only the length rule runs, so the bad records are all that is removed before dedup
    "gopher_quality": {"enabled": False}, "c4_quality": {"enabled": False}, "fineweb_quality": {"enabled": False},
    "gopher_repetition": {"enabled": False}, "language": {"enabled": False}, "length": {"min_chars": 10},
}
CUTS = {"cut_gz90": ("gz", 0.9), "cut_gz50": ("gz", 0.5), "cut_zst90": ("zst", 0.9), "cut_zst50": ("zst", 0.5)}


def _paragraphs() -> list[str]:
    out = []
    for line in (SLICE / "bible.jsonl").read_text().splitlines():
        out += [p.strip() for p in json.loads(line)["text"].split("\n\n") if len(p.strip()) > 200]
    return out


def _jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def _slice_paragraphs() -> list[str]:
    """Every distinct paragraph of the slice (~700, ~370 KB): varied text, so compressed files
    have several zstd blocks (128 KB each) and records survive a cut."""
    out: dict[str, None] = {}
    for f in sorted(SLICE.glob("*.jsonl")):
        for line in f.read_text().splitlines():
            out.update((p.strip(), None) for p in json.loads(line)["text"].split("\n\n") if len(p.strip()) > 100)
    return list(out)


def _cut_file(folder: Path, name: str, codec: str, share: float) -> tuple[Path, int, int]:
    """A compressed JSONL file of real text cut at `share` of its bytes: (path, complete lines
    before the cut, bytes decompressed), the figures worked out here with the codec directly."""
    paras = _slice_paragraphs()[: None if codec == "zst" else 40]
    data = _jsonl([{"text": p} for p in paras])
    blob = gzip.compress(data) if codec == "gz" else zstandard.ZstdCompressor().compress(data)
    cut = blob[: int(len(blob) * share)]
    path = folder / f"{name}.jsonl.{codec}"
    path.write_bytes(cut)
    d = zlib.decompressobj(wbits=31) if codec == "gz" else zstandard.ZstdDecompressor().decompressobj()
    prefix = d.decompress(cut)
    return path, prefix.count(b"\n"), len(prefix)


def _run(config: Path, *args: str, until: str = "filter", timeout: int = 200) -> subprocess.CompletedProcess:
    cmd = mixforge_cmd() + ["build", str(config), "--until", until, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def _ingest_removed(ws: Path) -> pl.DataFrame:
    return pl.read_parquet(sorted((ws / "removed").rglob("ingest-*.parquet")))


def _kept_ingest(ws: Path) -> pl.DataFrame:
    return pl.read_parquet(sorted((ws / "ingest" / "docs").glob("*.parquet")))


def _source(frame: pl.DataFrame, key: str) -> pl.DataFrame:
    return frame.filter(pl.col("id").str.starts_with(f"{key}/"))


pytestmark = pytest.mark.xdist_group("bad-input-build")  # its tests share one module fixture: built once, on one worker


@pytest.fixture(scope="module")
def counted(tmp_path_factory):
    """One CLI build over every case whose bad records are counted: (workspace, run, cut figures)."""
    root = tmp_path_factory.mktemp("counted")
    (root / "records.jsonl").write_bytes((FIXTURES / "bad" / "records.jsonl").read_bytes())
    shutil.copy(BAD / "text_fields.jsonl", root)
    shutil.copytree(BAD / "shards", root / "shards")
    shutil.copytree(BAD / "shards", root / "shards_again")  # the same files under another id scope (one file, one source)
    cuts = {key: _cut_file(root, key, codec, share) for key, (codec, share) in CUTS.items()}
    paras = _paragraphs()
    (root / "gzip_named.jsonl").write_bytes(gzip.compress(_jsonl([{"text": p} for p in paras[:5]])))
    mixed = root / "mixed"
    shutil.copytree(BAD / "mixed", mixed)  # a.jsonl (3), d.txt (1), notes.csv (not a format)
    (mixed / "b.json.gz").write_bytes(gzip.compress(_jsonl([{"text": p} for p in paras[5:7]])))
    pq.write_table(pa.table({"text": paras[7:10]}), mixed / "c.parquet")
    (mixed / "sub").mkdir()
    (mixed / "sub" / "e.jsonl.zst").write_bytes(zstandard.compress(_jsonl([{"text": p} for p in paras[10:14]])))
    pq.write_table(pa.table({"body": paras[:3]}), root / "nottext.parquet")
    from datasets import Dataset, DatasetDict

    DatasetDict({"train": Dataset.from_list([{"text": p} for p in paras[:4]]),
                 "test": Dataset.from_list([{"text": p} for p in paras[4:6]])}).save_to_disk(str(root / "dd"))
    sources = [
        {"path": "records.jsonl", "label": "records"},
        {"path": "text_fields.jsonl", "label": "fields"},
        {"path": "shards", "label": "shards_file"},  # id_scope: file, the default
        {"path": "shards_again/*.jsonl", "label": "shards_source", "id_scope": "source"},
        *({"path": cuts[key][0].name, "label": key} for key in CUTS),
        {"path": "gzip_named.jsonl", "label": "gzip_named"},
        {"path": "mixed", "label": "mixed"},
        {"path": "nottext.parquet", "label": "nottext"},
        {"path": "dd", "label": "dd", "split": "train"},
    ]
    config = write_config(root, sources, filters=LOOSE)
    run = _run(config)
    assert run.returncode == 0, run.stderr[-3000:]
    return root / "ws", run, {key: (str(path), lines, size) for key, (path, lines, size) in cuts.items()}


def test_counted_build_never_tracebacks_and_every_ledger_adds_up(counted):
    ws, run, _ = counted
    assert "Traceback" not in run.stderr
    ledger = json.loads((ws / "ledger.json").read_text())
    assert "dedup" not in ledger
    for stage in ("ingest", "filter"):
        c = ledger[stage]
        assert c["docs_in"] == c["docs_out"] + sum(r["docs"] for r in c["removed"].values()), stage
    # nothing read goes unaccounted: every record read is a kept document or a removed row
    assert ledger["ingest"]["docs_in"] == _kept_ingest(ws).height + _ingest_removed(ws).height


def test_malformed_lines_and_bad_text_fields_are_counted_by_reason(counted):
    ws, _, _ = counted
    removed = _ingest_removed(ws)
    records = dict(_source(removed, "records").select("id", "reason").iter_rows())
    assert records["records/records.jsonl:2"] == "malformed/invalid_json"
    assert records["records/records.jsonl:7"] == "malformed/invalid_utf8"
    fields = _source(removed, "fields")
    assert dict(fields.select("id", "reason").iter_rows()) == {
        "fields/text_fields.jsonl:2": "malformed/missing_text_field",
        "fields/text_fields.jsonl:3": "malformed/text_not_string",  # null
        "fields/text_fields.jsonl:4": "malformed/text_not_string",  # 42
    }
    assert all("text_fields.jsonl:" in d for d in fields["detail"])
    assert set(_source(_kept_ingest(ws), "fields")["id"]) == {"fields/text_fields.jsonl:1", "fields/text_fields.jsonl:5"}


def test_shard_ids_restart_per_file_unless_id_scope_is_source(counted):
    ws, _, _ = counted
    dups = pl.read_parquet(sorted((ws / "removed" / "malformed" / "duplicate_id").glob("*.parquet")))
    # id_scope file: only the repeat inside part-001.jsonl (ids 0, 1, 1) is a duplicate
    per_file = _source(dups, "shards_file")
    assert per_file["id"].to_list() == ["shards_file/part-001.jsonl:3"]
    assert "sources[2].id_scope: file" in per_file["detail"][0]
    # id_scope source: ids 0 and 1 of part-001 repeat part-000's too
    per_source = _source(dups, "shards_source").sort("id")
    assert per_source["id"].to_list() == [f"shards_source/part-001.jsonl:{n}" for n in (1, 2, 3)]
    assert all("sources[3].id_scope: source" in d for d in per_source["detail"])
    assert "part-000.jsonl:1" in per_source["detail"][0]  # names the first occurrence
    # the records.jsonl planted duplicate (same file) is still found with the default scope
    assert _source(dups, "records")["id"].to_list() == ["records/records.jsonl:9"]


def test_truncated_compressed_files_keep_complete_records_and_report_the_loss(counted):
    ws, _, cuts = counted
    removed, kept = _ingest_removed(ws), _kept_ingest(ws)
    for key, (path, lines, size) in cuts.items():
        cut = _source(removed, key)
        assert cut["reason"].to_list() == ["malformed/truncated_file"], key
        detail = cut["detail"][0]
        compressed = Path(path).stat().st_size
        assert detail.startswith(f"{path}:{lines + 1}: truncated"), detail
        assert f"all {compressed} compressed bytes read" in detail and f"stopped at {size} bytes" in detail, detail
        assert f"{lines} complete record(s) before the cut kept" in detail, detail
        assert _source(kept, key).height == lines, key
    assert min(lines for _, lines, _ in cuts.values()) > 0  # every cut leaves complete records to recover
    ledger = json.loads((ws / "ledger.json").read_text())
    assert ledger["ingest"]["removed"]["malformed/truncated_file"]["docs"] == 4


def test_gzip_named_jsonl_is_read_as_gzip(counted):
    ws, _, _ = counted
    assert _source(_kept_ingest(ws), "gzip_named").height == 5
    assert _source(_ingest_removed(ws), "gzip_named").height == 0


def test_mixed_format_folder_reads_every_file_and_reports_the_rest(counted):
    ws, _, _ = counted
    kept = _source(_kept_ingest(ws), "mixed")
    files = {i.split("/", 1)[1].rsplit(":", 1)[0] for i in kept["id"]}
    assert files == {"a.jsonl", "b.json.gz", "c.parquet", "d.txt", "sub/e.jsonl.zst"}
    assert kept.height == 3 + 2 + 3 + 1 + 4
    stray = _source(_ingest_removed(ws), "mixed")
    assert stray["reason"].to_list() == ["malformed/unsupported_file"]
    assert "notes.csv" in stray["detail"][0] and "supported:" in stray["detail"][0]


def test_source_without_the_text_column_is_counted_and_named(counted):
    ws, run, _ = counted
    rows = _source(_ingest_removed(ws), "nottext")
    assert rows.height == 3 and set(rows["reason"]) == {"malformed/missing_text_field"}
    assert "no field 'text'" in rows["detail"][0] and "nottext.parquet" in rows["detail"][0]
    # the other sources have data: a warning names the source that has none, the build goes on
    assert "warning:" in run.stderr and "sources[10] (nottext.parquet)" in run.stderr


def test_hf_datasetdict_split_is_read(counted):
    ws, _, _ = counted
    assert sorted(_source(_kept_ingest(ws), "dd")["id"]) == [f"dd/dd/train:{n}" for n in (1, 2, 3, 4)]


# ---------------------------------------------------------------- cases that stop the build


def _stops(config: Path, *names: str, args: tuple[str, ...] = ()) -> str:
    run = _run(config, *args)
    assert run.returncode == 2, (run.returncode, run.stderr[-3000:])
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
    text = " ".join(run.stderr.split())  # rich wraps long lines
    for name in names:
        assert name in text, (name, text)
    return text


@pytest.mark.parametrize("fixture", ["empty.jsonl", "whitespace.jsonl"])
def test_empty_or_blank_source_stops_before_any_work(tmp_path, fixture):
    shutil.copy(BAD / fixture, tmp_path)
    (tmp_path / "good.jsonl").write_bytes(_jsonl([{"text": p} for p in _paragraphs()[:3]]))
    config = write_config(tmp_path, [{"path": "good.jsonl"}, {"path": fixture}], filters=LOOSE)
    _stops(config, "sources[1].path", fixture, "holds no data")
    assert not (tmp_path / "ws" / "ingest").exists()


def test_nonexistent_path_or_no_supported_file_names_it(tmp_path):
    _stops(write_config(tmp_path, [{"path": "absent/*.jsonl"}]), "sources[0].path", "absent")
    (tmp_path / "csv").mkdir()
    shutil.copy(BAD / "mixed" / "notes.csv", tmp_path / "csv")
    _stops(write_config(tmp_path, [{"path": "csv"}]), "sources[0].path", "no file of a supported format", "notes.csv")


def test_hf_datasetdict_without_split_lists_the_splits(tmp_path):
    from datasets import Dataset, DatasetDict

    texts = _paragraphs()
    DatasetDict({"train": Dataset.from_list([{"text": t} for t in texts[:2]]),
                 "validation": Dataset.from_list([{"text": t} for t in texts[2:3]])}).save_to_disk(str(tmp_path / "dd"))
    _stops(write_config(tmp_path, [{"path": "dd"}]), "sources[0].split", "train, validation")
    _stops(write_config(tmp_path, [{"path": "dd", "split": "test"}]), "'test' is not a split", "train, validation")


def test_min_chars_above_max_chars_is_a_config_error(tmp_path):
    (tmp_path / "good.jsonl").write_bytes(_jsonl([{"text": p} for p in _paragraphs()[:3]]))
    config = write_config(tmp_path, [{"path": "good.jsonl"}], filters={"length": {"min_chars": 500, "max_chars": 100}})
    _stops(config, "mixforge.yaml", "`filters.length`", "min_chars (500) is greater than max_chars (100)")
    # the same mistake in a source's own filters block
    config = write_config(tmp_path, [{"path": "good.jsonl", "filters": {"length": {"min_chars": 500, "max_chars": 100}}}])
    _stops(config, "sources.0.filters", "min_chars (500) is greater than max_chars (100)")


def test_language_name_instead_of_code_is_a_config_error(tmp_path):
    (tmp_path / "good.jsonl").write_bytes(_jsonl([{"text": p} for p in _paragraphs()[:3]]))
    config = write_config(tmp_path, [{"path": "good.jsonl"}], filters={"language": {"languages": ["english"]}})
    text = _stops(config, "mixforge.yaml", "`filters.language.languages`", "'english'", "'en'")
    assert "line " in text


def test_strict_fails_on_a_truncated_file(tmp_path):
    path, lines, _ = _cut_file(tmp_path, "cut", "gz", 0.5)
    (tmp_path / "good.jsonl").write_bytes(_jsonl([{"text": p} for p in _paragraphs()[:3]]))
    config = write_config(tmp_path, [{"path": "good.jsonl"}, {"path": path.name}], filters=LOOSE)
    _stops(config, "--strict", f"{path}:{lines + 1}: truncated gzip file", args=("--strict",))
    assert not (tmp_path / "ws" / "ingest" / "_stage.json").exists()


def test_lid176_codes_match_the_model():
    from fasttext.FastText import _FastText

    from mixforge.config import LID176_CODES
    from mixforge.pipelines.language_id import lid176_path

    labels = {label.removeprefix("__label__") for label in _FastText(str(lid176_path())).get_labels()}
    assert LID176_CODES == labels


def test_exact_dedup_compares_texts_not_only_hashes(tmp_path):
    from mixforge.pipelines.dedup.stage import find_exact_duplicates

    paras = _paragraphs()
    same_length = [paras[0], paras[0][::-1], paras[0].upper()]  # equal lengths; the last equals the first
    pq.write_table(pa.table({"id": ["a", "b", "c"], "text": same_length}), tmp_path / "0.parquet")
    # a key that collides on purpose (the length) stands for a 64-bit hash collision
    assert find_exact_duplicates([tmp_path / "0.parquet"], key=lambda text: text.str.len_chars()) == {"c": "a"}
    assert find_exact_duplicates([tmp_path / "0.parquet"]) == {"c": "a"}


def test_init_states_id_scope(tmp_path):
    (tmp_path / "shards").mkdir()
    (tmp_path / "shards" / "a.jsonl").write_bytes(_jsonl([{"text": "x"}]))
    out = tmp_path / "mixforge.yaml"
    run = subprocess.run(mixforge_cmd() + ["init", "--source", str(tmp_path / "shards"), "--out", str(out)],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    text = out.read_text()
    assert "id_scope: file" in text and "sharded datasets restart ids" in text
    assert yaml.safe_load(text)["sources"][0]["id_scope"] == "file"
