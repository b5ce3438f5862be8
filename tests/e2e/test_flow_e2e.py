"""`mixforge init`, `mixforge build` (Prefect, ephemeral and against a real server) and
`mixforge status` on the committed slice of the demo corpus."""

import json
import os
import subprocess
import urllib.request
from pathlib import Path

import polars as pl
import pytest
import yaml

from conftest import SLICE, ephemeral_env, mixforge_cmd
from prefect_server import start_server, stop_group


def _cli(*args, env=None, timeout=300) -> subprocess.CompletedProcess:
    run = subprocess.run(mixforge_cmd() + list(args), capture_output=True, text=True, timeout=timeout, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    return run


def _ids(folder: Path) -> list[str]:
    files = sorted(folder.rglob("*.parquet"))
    return pl.read_parquet(files, columns=["id"])["id"].to_list() if files else []


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_init_build_status_end_to_end(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for label in ("bible", "quotes", "legal", "code"):
        (data / f"{label}.jsonl").write_text((SLICE / f"{label}.jsonl").read_text())
    config = tmp_path / "mixforge.yaml"
    _cli("init", "--source", str(data / "bible.jsonl"), "--source", str(data / "quotes.jsonl"),
         "--source", str(data / "legal.jsonl"), "--source", str(data / "code.jsonl"),
         "--workspace", "work", "--out", str(config))
    text = config.read_text()
    assert "# Source label; default" in text and "path: data/bible.jsonl" in text
    # set the kinds, as a user would after reading the commented file
    cfg = yaml.safe_load(text)
    cfg["sources"][2]["kind"] = "reference"
    cfg["sources"][3]["kind"] = "code"
    config.write_text(yaml.safe_dump(cfg))

    run = _cli("build", str(config), env=ephemeral_env())  # Prefect's temporary server, as `make demo` runs it
    assert "kept" in run.stdout and "ledger" in run.stdout and str(tmp_path / "work") in run.stdout

    ws = tmp_path / "work"
    ledger = json.loads((ws / "ledger.json").read_text())
    for stage in ("ingest", "filter", "dedup", "prune"):
        row = ledger[stage]
        assert row["docs_in"] == row["docs_out"] + sum(r["docs"] for r in row["removed"].values())
    assert ledger["ingest"]["docs_in"] == 64
    # every input document is either kept or removed (with a reason), never both, never lost
    kept, removed = _ids(ws / "prune" / "docs"), _ids(ws / "removed")
    ingested = _ids(ws / "ingest" / "docs")
    assert len(ingested) == 64 and len(set(kept)) == len(kept)
    assert set(kept) | set(removed) == set(ingested) and not set(kept) & set(removed)
    assert ledger["prune"]["docs_out"] == len(kept) > 20
    assert "exact_duplicate" in ledger["dedup"]["removed"]  # the slice's licence copies
    docs = pl.read_parquet(sorted((ws / "prune" / "docs").glob("*.parquet")))
    assert set(docs["source"]) == {"bible", "quotes", "legal", "code"}

    status = json.loads(_cli("status", str(config), "--json").stdout)
    assert set(status["stages"]) == {"ingest", "filter", "dedup", "embed", "cluster", "quality", "prune", "components", "tokens"}
    assert status["stages"]["tokens"]["summary"]["tokenizer"]["vocab_size"] > 256
    assert {v["state"] for v in status["stages"].values()} == {"done"}
    assert status["stages"]["prune"]["ledger"]["docs_out"] == len(kept)
    assert status["stages"]["embed"]["summary"]["documents"] == len(kept)

    clusters = json.loads(_cli("clusters", str(config), "--json").stdout)
    comps = clusters["components"]
    assert sum(c["documents"] for c in comps) == len(kept)
    assert all(set(c) == {"component", "documents", "tokens", "quality_mean", "top_terms", "sources"} for c in comps)
    assert {label for c in comps for label in c["sources"]} == {"bible", "quotes", "legal", "code"}
    assert "component" in _cli("clusters", str(config)).stdout
    table = _cli("status", str(config)).stdout
    assert "ingest" in table and "done" in table and "exact_duplicate" in table

    rerun = _cli("build", str(config))
    assert "unchanged" in rerun.stdout


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_build_against_a_running_prefect_server(tmp_path, slice_config):
    server, api = start_server(tmp_path / "prefect-home")
    try:
        env = dict(os.environ, PREFECT_API_URL=api)
        _cli("build", str(slice_config), env=env)
        req = urllib.request.Request(f"{api}/flow_runs/filter", data=b"{}", headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            runs = json.loads(r.read())
        assert [(run["name"] != "", run["state_type"]) for run in runs] == [(True, "COMPLETED")]
    finally:
        stop_group(server)
