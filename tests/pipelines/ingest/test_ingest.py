import gzip
import json
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from conftest import SLICE, write_config
from mixforge.config import load_config
from mixforge.errors import ConfigError
from mixforge.pipelines.ingest.stage import WorkItem, pack_tasks, run_ingest


def _records(label: str, n: int | None = None) -> list[dict]:
    rows = [json.loads(line) for line in (SLICE / f"{label}.jsonl").read_text().splitlines()]
    return rows[:n] if n else rows


def _docs(ws: Path, stage: str = "ingest") -> pl.DataFrame:
    return pl.read_parquet(sorted((ws / stage / "docs").glob("*.parquet")))


def test_every_format_reads_with_labels_and_stable_ids(tmp_path):
    bible, quotes, code, legal, man = (_records(k, 5) for k in ("bible", "quotes", "code", "legal", "man_pages"))
    lines = "".join(json.dumps(r) + "\n" for r in bible)
    (tmp_path / "bible.jsonl").write_text(lines)
    (tmp_path / "quotes.jsonl.gz").write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in quotes).encode()))
    (tmp_path / "code.jsonl.zst").write_bytes(zstandard.compress("".join(json.dumps(r) + "\n" for r in code).encode()))
    pq.write_table(pa.Table.from_pylist(legal), tmp_path / "legal.parquet")
    txt = tmp_path / "man"
    (txt / "sub").mkdir(parents=True)
    for i, r in enumerate(man):
        (txt / ("sub" if i % 2 else "") / f"page{i}.txt").write_text(r["text"])
    from datasets import Dataset

    Dataset.from_list(_records("dictionary", 5)).save_to_disk(str(tmp_path / "dict_hf"))
    cfg = load_config(
        write_config(
            tmp_path,
            [
                {"path": "bible.jsonl"},
                {"path": "quotes.jsonl.gz", "label": "fortunes"},
                {"path": "code.jsonl.zst"},
                {"path": "legal.parquet"},
                {"path": "man", "format": "txt"},
                {"path": "dict_hf"},
            ],
        )
    )
    result = run_ingest(cfg)
    docs = _docs(tmp_path / "ws")
    assert result.counts["docs_in"] == 30 and result.counts["docs_out"] == 30
    assert docs["id"].n_unique() == 30
    by_label = dict(docs.group_by("source").len().iter_rows())
    assert by_label == {"bible": 5, "fortunes": 5, "code": 5, "legal": 5, "man": 5, "dict_hf": 5}
    # text is carried unchanged; source ids kept; ids name source, file and record
    original = {r["text"] for r in bible + quotes + code + legal + man}
    assert original <= set(docs["text"].to_list())
    assert set(docs.filter(pl.col("source") == "bible")["source_id"]) == {r["id"] for r in bible}
    assert "bible/bible.jsonl:3" in docs["id"].to_list()
    assert "man/sub/page1.txt:1" in docs["id"].to_list()
    assert "dict_hf/dict_hf:5" in docs["id"].to_list()
    assert (docs["chars"] == docs["text"].str.len_chars()).all()

    # a second ingest into a fresh workspace gives the same ids in the same shards
    cfg2 = load_config(tmp_path / "mixforge.yaml", workspace=str(tmp_path / "ws2"))
    run_ingest(cfg2)
    assert _docs(tmp_path / "ws2").equals(docs)


def test_label_field_takes_labels_from_records(tmp_path):
    rows = [{"text": r["text"], "domain": label} for label in ("bible", "quotes") for r in _records(label, 3)]
    rows.append({"text": _records("code", 1)[0]["text"]})  # no label: counted, not guessed
    (tmp_path / "mixed.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = load_config(write_config(tmp_path, [{"path": "mixed.jsonl", "label_field": "domain"}]))
    result = run_ingest(cfg)
    assert dict(_docs(tmp_path / "ws").group_by("source").len().iter_rows()) == {"bible": 3, "quotes": 3}
    assert list(result.counts["removed"]) == ["malformed/missing_label_field"]
    assert result.counts["removed"]["malformed/missing_label_field"]["docs"] == 1


def test_missing_source_is_a_config_error(tmp_path):
    cfg = load_config(write_config(tmp_path, [{"path": "nowhere.jsonl"}]))
    with pytest.raises(ConfigError, match="nowhere.jsonl"):
        run_ingest(cfg)


def test_pack_tasks_balances_and_is_deterministic():
    items = [WorkItem(0, "jsonl", f"/f{i}", f"f{i}", size) for i, size in enumerate([50, 40, 30, 20, 10, 5, 5, 5, 1, 1])]
    tasks = pack_tasks(items, shard_mb=64)
    assert len(tasks) == 8 and sum(len(t) for t in tasks) == 10
    assert tasks == pack_tasks(list(reversed(items)), shard_mb=64)
    big = [WorkItem(0, "jsonl", f"/g{i}", f"g{i}", 30 * 2**20) for i in range(40)]
    assert len(pack_tasks(big, shard_mb=64)) == 19  # ~64 MB of input per shard
