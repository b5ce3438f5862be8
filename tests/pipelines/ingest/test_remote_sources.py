"""Sources in object storage: a build reads s3:// URLs from a real S3-compatible server on
127.0.0.1 (moto's), with the same documents, ledger and tokens as the same build from local files;
a changed object (a new ETag) is caught by the incremental build like a changed file; credentials
never reach the workspace."""

import json
import subprocess

import polars as pl
import pytest

from conftest import SLICE, SLICE_KINDS, mixforge_cmd, write_config
from s3_server import SECRET, upload


def _cli(*args, expect: int = 0, timeout: int = 300) -> subprocess.CompletedProcess:
    run = subprocess.run(mixforge_cmd() + list(args), capture_output=True, text=True, timeout=timeout)
    assert run.returncode == expect, run.stdout[-2000:] + run.stderr[-3000:]
    return run


def _documents(ws, stage: str) -> pl.DataFrame:
    """A stage's documents, sorted by id, without `origin` (the file or object each came from)."""
    frame = pl.read_parquet(sorted((ws / stage / "docs").rglob("*.parquet")))
    return frame.drop([c for c in frame.columns if c == "origin"]).sort("id")


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_build_from_s3_equals_the_same_build_from_local_files(s3_store, slice_built, tmp_path):
    data, local_ws = slice_built
    upload(SLICE, "s3://corpus/slice")
    sources = [{"path": f"s3://corpus/slice/{label}.jsonl", "label": label, "kind": kind} for label, kind in SLICE_KINDS.items()]
    _cli("build", str(write_config(tmp_path, sources)))
    ws = tmp_path / "ws"

    for stage in ("ingest", "prune"):
        assert _documents(ws, stage).equals(_documents(local_ws, stage)), stage
    assert _documents(ws, "ingest")["id"].to_list()[0].startswith("bible/bible.jsonl:")
    origins = pl.read_parquet(sorted((ws / "ingest" / "docs").rglob("*.parquet")), columns=["origin"])["origin"]
    assert origins.str.starts_with("s3://corpus/slice/").all()
    ledger, local_ledger = (json.loads((w / "ledger.json").read_text()) for w in (ws, local_ws))
    assert {s: (r["docs_in"], r["docs_out"]) for s, r in ledger.items() if isinstance(r, dict) and "docs_in" in r} == \
        {s: (r["docs_in"], r["docs_out"]) for s, r in local_ledger.items() if isinstance(r, dict) and "docs_in" in r}
    bins = sorted(p.relative_to(ws) for p in (ws / "tokens").rglob("*.bin"))
    assert bins and bins == sorted(p.relative_to(local_ws) for p in (local_ws / "tokens").rglob("*.bin"))
    assert all((ws / b).read_bytes() == (local_ws / b).read_bytes() for b in bins)

    manifest = json.loads(next((ws / "builds").glob("*-sources.json")).read_text())
    assert all(e["version"].startswith("ETag:") for e in manifest)  # the store's version of each object
    leaked = [p for p in ws.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]
    assert not leaked


def test_a_changed_object_is_caught_by_the_incremental_build_and_an_added_one_is_read_alone(s3_store, tmp_path):
    import s3fs

    for label in ("bible", "code"):
        upload(SLICE / f"{label}.jsonl", f"s3://incremental/data/{label}.jsonl")
    config = write_config(tmp_path, [{"path": "s3://incremental/data/", "label": "mixed", "kind": "prose"}])
    _cli("build", str(config), "--until", "ingest")
    assert json.loads((tmp_path / "ws" / "ledger.json").read_text())["ingest"]["docs_in"] == 32

    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    fs.pipe("incremental/data/code.jsonl", (SLICE / "code.jsonl").read_bytes())  # the same bytes again: the same ETag
    assert "unchanged" in _cli("build", str(config), "--until", "ingest").stdout

    upload(SLICE / "legal.jsonl", "s3://incremental/data/legal.jsonl")
    _cli("build", str(config), "--until", "ingest")
    record = json.loads((tmp_path / "ws" / "ingest" / "_stage.json").read_text())
    assert len(record["layers"]) == 2  # the added object was read into a layer of its own

    lines = (SLICE / "code.jsonl").read_text().splitlines()
    fs.pipe("incremental/data/code.jsonl", "\n".join(lines[:-1]).encode() + b"\n")
    refused = _cli("build", str(config), "--until", "ingest", expect=2)
    assert "changed: s3://incremental/data/code.jsonl" in refused.stderr and "Traceback" not in refused.stderr
    _cli("build", str(config), "--until", "ingest", "--allow-changed")
    ids = pl.read_parquet(sorted((tmp_path / "ws" / "ingest" / "docs").rglob("*.parquet")), columns=["id"])["id"]
    assert ids.str.starts_with("mixed/code.jsonl:").sum() == len(lines) - 1
