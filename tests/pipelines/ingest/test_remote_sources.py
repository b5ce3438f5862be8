"""Sources in object storage: a build reads s3:// URLs from a real S3-compatible server on
127.0.0.1 (moto's), with the same documents and ledger as the same build from local files; a
changed object (a new ETag) is caught by the incremental build like a changed file; credentials
never reach the workspace; a missing bucket or object is named."""

import json
import subprocess

import polars as pl
import pytest

from conftest import SLICE, SLICE_KINDS, mixforge_cmd, write_config
from mixforge.config import load_config
from mixforge.errors import InputError
from mixforge.pipelines.build import build
from s3_server import SECRET, upload


def _cli(*args, expect: int = 0, timeout: int = 300) -> subprocess.CompletedProcess:
    run = subprocess.run(mixforge_cmd() + list(args), capture_output=True, text=True, timeout=timeout)
    assert run.returncode == expect, run.stdout[-2000:] + run.stderr[-3000:]
    return run


def _documents(ws, stage: str) -> pl.DataFrame:
    """A stage's documents, sorted by id, without `origin` (the file or object each came from)."""
    frame = pl.read_parquet(sorted((ws / stage / "docs").rglob("*.parquet")))
    return frame.drop([c for c in frame.columns if c == "origin"]).sort("id")


@pytest.mark.timeout(600)
def test_ingest_from_s3_equals_ingest_of_the_same_files_on_disk(s3_store, slice_built, tmp_path):
    """Ingest is the one stage that reads sources: what it publishes from s3:// equals what the
    session's local build published (every later stage reads only that)."""
    data, local_ws = slice_built
    upload(SLICE, "s3://corpus/slice")
    sources = [{"path": f"s3://corpus/slice/{label}.jsonl", "label": label, "kind": kind} for label, kind in SLICE_KINDS.items()]
    build(load_config(write_config(tmp_path, sources)), until="ingest")
    ws = tmp_path / "ws"

    assert _documents(ws, "ingest").equals(_documents(local_ws, "ingest"))
    assert _documents(ws, "ingest")["id"].to_list()[0].startswith("bible/bible.jsonl:")
    origins = pl.read_parquet(sorted((ws / "ingest" / "docs").rglob("*.parquet")), columns=["origin"])["origin"]
    assert origins.str.starts_with("s3://corpus/slice/").all()
    ledger, local_ledger = (json.loads((w / "ledger.json").read_text())["ingest"] for w in (ws, local_ws))
    assert ledger == local_ledger and ledger["docs_in"] == 128

    manifest = json.loads(next((ws / "builds").glob("*-sources.json")).read_text())
    assert len(manifest) == len(SLICE_KINDS) and all(e["version"].startswith("ETag:") for e in manifest)
    leaked = [p for p in ws.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]
    assert not leaked


def test_a_changed_object_is_caught_by_the_incremental_build_and_an_added_one_is_read_alone(s3_store, tmp_path):
    import s3fs

    for label in ("bible", "code"):
        upload(SLICE / f"{label}.jsonl", f"s3://incremental/data/{label}.jsonl")
    config = write_config(tmp_path, [{"path": "s3://incremental/data/", "label": "mixed", "kind": "prose"}])

    def ingest(allow_changed: bool = False) -> str:
        return build(load_config(config), until="ingest", allow_changed=allow_changed)[0].status

    assert ingest() == "ran"
    assert json.loads((tmp_path / "ws" / "ledger.json").read_text())["ingest"]["docs_in"] == 32
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    fs.pipe("incremental/data/code.jsonl", (SLICE / "code.jsonl").read_bytes())  # the same bytes again: the same ETag
    assert ingest() == "skipped"

    upload(SLICE / "legal.jsonl", "s3://incremental/data/legal.jsonl")
    assert ingest() == "ran"
    record = json.loads((tmp_path / "ws" / "ingest" / "_stage.json").read_text())
    assert len(record["layers"]) == 2  # the added object was read into a layer of its own

    lines = (SLICE / "code.jsonl").read_text().splitlines()
    fs.pipe("incremental/data/code.jsonl", "\n".join(lines[:-1]).encode() + b"\n")
    with pytest.raises(InputError) as refused:
        ingest()
    assert "changed: s3://incremental/data/code.jsonl" in str(refused.value)
    assert ingest(allow_changed=True) == "ran"
    ids = pl.read_parquet(sorted((tmp_path / "ws" / "ingest" / "docs").rglob("*.parquet")), columns=["id"])["id"]
    assert ids.str.starts_with("mixed/code.jsonl:").sum() == len(lines) - 1


def test_credentials_set_after_a_first_build_reach_the_workers_of_the_next(s3_store, tmp_path, monkeypatch):
    """Worker processes fork from one server process that keeps the environment it started with:
    a notebook that sets its credentials after a first build must still reach the store."""
    from multiprocess import forkserver

    upload(SLICE / "bible.jsonl", "s3://late/bible.jsonl")
    forkserver._forkserver._stop()  # so that the first build below starts it, without credentials
    for name in s3_store:
        monkeypatch.delenv(name)
    (tmp_path / "local").mkdir()
    for label in ("code", "legal"):  # two files: two tasks, so a pool of 2 workers (forked from the server)
        (tmp_path / "local" / f"{label}.jsonl").write_text((SLICE / f"{label}.jsonl").read_text())
    build(load_config(write_config(tmp_path / "local", [{"path": f"{label}.jsonl"} for label in ("code", "legal")])), until="ingest")
    for name, value in s3_store.items():
        monkeypatch.setenv(name, value)
    (tmp_path / "remote").mkdir()
    config = write_config(tmp_path / "remote", [{"path": "s3://late/", "label": "bible"}, {"path": str(SLICE / "quotes.jsonl")}])
    build(load_config(config), until="ingest")  # 2 workers: the pool's
    assert json.loads((tmp_path / "remote" / "ws" / "ledger.json").read_text())["ingest"]["docs_in"] == 32


def test_a_missing_bucket_or_object_is_a_clear_error(s3_store, tmp_path):
    upload(SLICE / "bible.jsonl", "s3://present/bible.jsonl")
    for path in ("s3://no-such-bucket-here/data/", "s3://present/none.jsonl", "s3://present/none/*.jsonl"):
        config = write_config(tmp_path, [{"path": path, "label": "x"}])
        run = _cli("build", str(config), "--until", "ingest", expect=2)
        assert "Traceback" not in run.stderr and "sources[0].path" in run.stderr and path in run.stderr, run.stderr
        assert "no object found" in run.stderr or "bucket does not exist" in run.stderr, run.stderr
