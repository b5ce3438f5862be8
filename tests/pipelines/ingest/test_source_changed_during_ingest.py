"""Provenance of what was read: a source file appended to while ingest reads it is not recorded
with its size and hash from before. The build stops with an error naming the file, nothing is
published, and a rerun once the file is complete records what it then holds."""

from __future__ import annotations

import json
import threading
import time

import pytest

from conftest import SLICE, write_config
from mixforge.config import load_config
from mixforge.errors import InputError
from mixforge.pipelines.ingest.stage import run_ingest


def append_when_reading_starts(partial, path, extra: bytes, done: threading.Event) -> None:
    """A real writer: appends to `path` as soon as ingest has recorded its source manifest
    (`<ws>/ingest.partial/extra/sources.json`, written just before the readers start)."""
    deadline = time.monotonic() + 120
    while not (partial / "extra" / "sources.json").exists() and time.monotonic() < deadline:
        time.sleep(0.002)
    with open(path, "ab") as f:
        f.write(extra)
    done.set()


@pytest.mark.timeout(300)
def test_a_file_appended_to_during_ingest_stops_the_build_naming_it(tmp_path):
    records = [json.loads(line) for line in (SLICE / "bible.jsonl").read_text().splitlines()]
    growing = tmp_path / "growing.jsonl"
    growing.write_text("".join(json.dumps({"text": r["text"]}) + "\n" for r in records * 40))
    (tmp_path / "steady.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records[:5]))
    size_before = growing.stat().st_size
    cfg = load_config(write_config(tmp_path, [{"path": "growing.jsonl"}, {"path": "steady.jsonl"}], workers=1))
    appended = threading.Event()
    writer = threading.Thread(target=append_when_reading_starts,
                              args=(tmp_path / "ws" / "ingest.partial", growing, b'{"text": "added late"}\n', appended))
    writer.start()
    try:
        with pytest.raises(InputError, match=rf"{growing}.*{size_before:,} bytes.*{size_before + 23:,}"):
            run_ingest(cfg)
    finally:
        writer.join()
    assert appended.is_set()
    assert not (tmp_path / "ws" / "ingest" / "_stage.json").exists()  # nothing published from a moving file
    result = run_ingest(cfg)  # the file complete: read and recorded as it now is
    manifest = json.loads((tmp_path / "ws" / "ingest" / "extra" / "sources.json").read_text())
    assert {e["path"]: e["size"] for e in manifest}[str(growing)] == size_before + 23
    assert result.counts["docs_in"] == len(records) * 40 + 1 + 5
