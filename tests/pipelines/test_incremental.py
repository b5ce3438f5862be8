"""Incremental builds on real slice documents: a second build reads only the files added since the
first, deduplicates them against everything kept before, assigns them to the saved centroids and
keeps a balanced ledger per build; changed files are refused unless retracted."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import polars as pl
import pytest
import yaml

from conftest import SLICE, SLICE_KINDS, mixforge_cmd

LABELS = ("bible", "code", "legal", "manuals")
FIRST = 10  # documents of each label in the first build; the rest arrive with the second


def _write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def _records(label):
    return [json.loads(line) for line in (SLICE / f"{label}.jsonl").read_text().splitlines()]


pytestmark = pytest.mark.xdist_group("incremental")  # its tests share one module fixture: built once, on one worker


@pytest.fixture(scope="module")
def two_builds(tmp_path_factory):
    """Build b0001 from part-000 of each label, add part-001 (new documents, an exact and a near
    copy of documents b0001 kept), build b0002. Returns (root, config path, cfg, facts)."""
    from mixforge.config import load_config
    from mixforge.pipelines.build import build
    from mixforge.ledger import parquet_files

    root = tmp_path_factory.mktemp("incremental")
    for label in LABELS:
        (root / "data" / label).mkdir(parents=True)
        _write(root / "data" / label / "part-000.jsonl", _records(label)[:FIRST])
    sources = [{"path": f"data/{label}", "label": label, "kind": SLICE_KINDS[label]} for label in LABELS]
    config = root / "mixforge.yaml"
    config.write_text(yaml.safe_dump({"workspace": str(root / "ws"), "workers": 2, "sources": sources,
                                      "cluster": {"n_components": 3},
                                      "proxy": {"vocab_size": 512, "tokens": 8_000, "seq_len": 32, "batch_size": 8, "warmup_steps": 5}}))
    cfg = load_config(config)
    build(cfg)
    ws = root / "ws"
    kept = pl.concat([pl.read_parquet(f, columns=["id", "text", "source"]) for f in parquet_files(ws / "dedup" / "docs")])
    old_vectors = {f.name: f.stat().st_ino for f in (ws / "embed" / "extra" / "vectors").glob("*.npy")}
    centroids = (ws / "cluster" / "extra" / "centroids.npy").read_bytes()
    tokens_before = {str(f.relative_to(ws)): f.read_bytes() for f in (ws / "tokens" / "extra").rglob("*.bin")}
    copies = {}
    for label in LABELS:
        mine = kept.filter(pl.col("source") == label).sort(pl.col("text").str.len_chars(), descending=True)
        exact, near = mine.row(0, named=True), mine.row(1, named=True)
        words = near["text"].split(" ")
        words[len(words) // 2] = "zyzzyva"  # one word changed in a long document: Jaccard stays far above 0.75
        fresh = _records(label)[FIRST:]
        longest = max(range(len(fresh)), key=lambda j: len(fresh[j]["text"]))
        twin = fresh[longest]["text"].split(" ")
        twin[len(twin) // 3] = "zyzzyva"  # a near copy of a new document: deduplicated within the new layer
        added = fresh + [{"id": "copy", "text": exact["text"]}, {"id": "near", "text": " ".join(words)},
                         {"id": "twin", "text": " ".join(twin)}]
        _write(root / "data" / label / "part-001.jsonl", added)
        copies[label] = {"exact": exact["id"], "near": near["id"], "added": len(added),
                         "twin": (f"{label}/part-001.jsonl:{len(added)}", f"{label}/part-001.jsonl:{longest + 1}")}
    build(cfg)
    return root, config, cfg, {"copies": copies, "old_vectors": old_vectors, "centroids": centroids, "kept_before": kept.height,
                               "tokens_before": tokens_before}


def _record(root, stage):
    return json.loads((root / "ws" / stage / "_stage.json").read_text())


def test_second_build_reads_only_the_added_files(two_builds):
    root, _, _, facts = two_builds
    ingest = _record(root, "ingest")
    assert [layer["id"] for layer in ingest["layers"]] == ["b0001", "b0002"]
    added = sum(c["added"] for c in facts["copies"].values())
    assert ingest["layers"][1]["counts"]["docs_in"] == added
    assert ingest["counts"]["docs_in"] == len(LABELS) * FIRST + added
    for stage in ("filter", "dedup", "embed", "cluster", "quality", "prune"):
        assert [layer["id"] for layer in _record(root, stage)["layers"]] == ["b0001", "b0002"], stage
    # the first build's vectors were not recomputed: the same files (inodes) are published
    vectors = root / "ws" / "embed" / "extra" / "vectors"
    assert {name: (vectors / name).stat().st_ino for name in facts["old_vectors"]} == facts["old_vectors"]
    new_shards = _record(root, "embed")["layers"][1]["files"]
    assert new_shards and all(name.startswith("b0002-") for name in new_shards)
    assert _record(root, "embed")["layers"][1]["counts"]["documents"] == _record(root, "dedup")["layers"][1]["counts"]["docs_out"]


def test_copies_of_earlier_documents_are_removed_naming_the_earlier_id(two_builds):
    root, _, _, facts = two_builds
    removed = pl.concat([pl.read_parquet(f, columns=["id", "reason", "kept_id"])
                         for f in (root / "ws" / "removed").rglob("dedup-b0002-*.parquet")])
    for label, copy in facts["copies"].items():
        rows = {r["reason"]: r["kept_id"] for r in removed.filter(pl.col("id").str.starts_with(f"{label}/part-001")).to_dicts()
                if r["kept_id"] in (copy["exact"], copy["near"])}
        assert rows.get("exact_duplicate") == copy["exact"], label
        assert rows.get("near_duplicate") == copy["near"], label
    twins = {r["id"]: r["kept_id"] for r in removed.filter(pl.col("reason") == "near_duplicate").to_dicts()}
    found = [c["twin"] for c in facts["copies"].values() if c["twin"][0] in twins]
    assert found and all(twins[twin] == original for twin, original in found)  # kept: the earlier new document


def test_ledger_balances_per_build_and_in_total(two_builds):
    root, config, _, _ = two_builds
    out = subprocess.run(mixforge_cmd() + ["status", str(config), "--json"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    status = json.loads(out.stdout)
    builds = status["builds"]
    assert [b["id"] for b in builds] == ["b0001", "b0002"]
    assert all(b["finished"] for b in builds)
    assert len(builds[1]["sources_added"]) == len(LABELS) and builds[1]["sources_changed"] == []
    for b in builds:
        for stage, counts in b["ledger"].items():
            assert counts["docs_in"] == counts["docs_out"] + counts["docs_removed"], (b["id"], stage)
        # each build's layers chain: what one stage kept is what the next one read
        chain = [b["ledger"][s] for s in ("ingest", "filter", "dedup", "prune")]
        assert all(a["docs_out"] == z["docs_in"] for a, z in zip(chain, chain[1:])), b["id"]
    for stage in ("ingest", "filter", "dedup", "prune"):
        total = status["stages"][stage]["ledger"]
        assert total["docs_in"] == sum(b["ledger"][stage]["docs_in"] for b in builds)
        assert total["docs_out"] == sum(b["ledger"][stage]["docs_out"] for b in builds)
        assert total["docs_in"] == total["docs_out"] + total["docs_removed"]
    assert all(state["state"] == "done" for state in status["stages"].values())


def test_new_documents_are_assigned_to_the_saved_centroids_with_drift(two_builds):
    root, _, _, facts = two_builds
    extra = root / "ws" / "cluster" / "extra"
    assert (extra / "centroids.npy").read_bytes() == facts["centroids"]
    cluster = _record(root, "cluster")
    drift = cluster["layers"][1]["counts"]["drift"]
    assert drift["documents"] == _record(root, "dedup")["layers"][1]["counts"]["docs_out"]
    assert 0 <= drift["share_beyond_p95"] <= 1 and drift["refit"] is False and drift["centroid_version"] == 1
    k = cluster["layers"][0]["counts"]["clusters"]
    for name in cluster["layers"][1]["files"]:
        assigned = pl.read_parquet(extra / "assign" / name)
        assert assigned["cluster"].is_between(0, k - 1).all()
    assert drift["largest_growth"]


def test_token_shards_are_appended_and_hold_every_document_where_the_index_says(two_builds):
    from mixforge.ledger import parquet_files
    from mixforge.pipelines.tokens.tokenizer import eos_id, load_tokenizer

    root, _, _, facts = two_builds
    ws = root / "ws"
    for stage in ("components", "tokens"):
        assert [layer["id"] for layer in _record(root, stage)["layers"]] == ["b0001", "b0002"], stage
    assert _record(root, "tokens")["counts"]["appended"] is True
    for name, old in facts["tokens_before"].items():  # each earlier shard is the start of its shard now
        new = (ws / name).read_bytes()
        assert len(new) >= len(old) and new[: len(old)] == old, name
    assert any((ws / name).stat().st_size > len(old) for name, old in facts["tokens_before"].items())
    texts = pl.concat([pl.read_parquet(f, columns=["id", "text"]) for f in parquet_files(ws / "prune" / "docs")])
    index = pl.read_parquet(ws / "tokens" / "extra" / "documents.parquet").join(texts, on="id")
    assert index.height == texts.height == _record(root, "prune")["counts"]["docs_out"]
    assert index.filter(pl.col("id").str.contains("part-001")).height > 0
    tok = load_tokenizer(ws / "tokens" / "extra" / "tokenizer.json")
    eos = eos_id(tok)
    shards = {}
    for row in index.iter_rows(named=True):  # every document's tokens, earlier and new, are a fresh encoding of its text
        key = (row["split"], row["component"])
        if key not in shards:
            meta = json.loads((ws / "tokens" / "extra" / row["split"] / f"{row['component']}.json").read_text())
            shards[key] = np.fromfile(ws / "tokens" / "extra" / row["split"] / f"{row['component']}.bin", dtype=meta["dtype"])
        expected = tok.encode(row["text"], add_special_tokens=False).ids + [eos]
        assert shards[key][row["start"]: row["start"] + row["length"]].tolist() == expected, row["id"]
    counts = _record(root, "tokens")["counts"]["components"]
    assert sum(c["train_documents"] for c in counts.values()) == index.filter(pl.col("split") == "train").height


def test_the_export_manifest_says_which_build_added_what(two_builds, tmp_path):
    from mixforge.pipelines.export.write import run_export

    root, _, cfg, _ = two_builds
    components = json.loads((root / "ws" / "tokens" / "_stage.json").read_text())["counts"]["components"]
    manifest = run_export(cfg, {c: 1 / len(components) for c in components}, tmp_path / "out", "parquet", mode="reference")
    assert sorted(manifest["builds"]) == ["b0001", "b0002"]
    for key in ("documents", "tokens"):  # the same draws, counted by build and by source
        assert sum(v[key] for v in manifest["builds"].values()) == sum(v[key] for v in manifest["sources"].values()) > 0


def test_proxy_runs_are_reused_while_their_data_is_unchanged_and_stale_after(two_builds):
    """Adds builds: a file of copies only (nothing new survives dedup), then a file of new documents."""
    from mixforge.pipelines.build import build
    from mixforge.proxy_training.proxy import run_proxy
    from mixforge.proxy_training.runs_table import RunsTable, run_freshness
    from mixforge.workspace import Workspace

    root, _, cfg, _ = two_builds
    ws = Workspace(root / "ws")
    components = json.loads((root / "ws" / "tokens" / "_stage.json").read_text())["counts"]["components"]
    uniform = {c: 1 / len(components) for c in components}
    first = run_proxy(cfg, uniform)
    run_proxy(cfg, uniform, run_id="named")  # a name of the user's: still a run of today's data
    assert run_freshness(cfg, ws) == {"total": 2, "current": 2, "stale": 0, "unknown": 0}

    _write(root / "data" / "bible" / "part-002.jsonl", _records("bible")[:3])  # copies of documents kept before
    build(cfg)
    assert json.loads((root / "ws" / "builds" / "b0003.json").read_text())["ledger"]["dedup"]["docs_out"] == 0
    assert run_proxy(cfg, uniform)["run_id"] == first["run_id"]  # the same data: reused, not retrained
    assert RunsTable(ws).load().height == 2

    _write(root / "data" / "bible" / "part-003.jsonl", [{"text": r["text"]} for r in _records("quotes")])  # new documents
    build(cfg)
    assert run_freshness(cfg, ws) == {"total": 2, "current": 0, "stale": 2, "unknown": 0}
    again = run_proxy(cfg, uniform)
    assert again["run_id"] != first["run_id"] and run_freshness(cfg, ws)["current"] == 1


def test_changed_files_are_refused_then_retracted_and_drift_refits(two_builds):
    """Runs last: it changes the sources."""
    from mixforge.errors import InputError
    from mixforge.pipelines.build import build

    root, config, cfg, _ = two_builds
    from mixforge.pipelines.run.build_records import list_builds
    from mixforge.workspace import Workspace

    # a file whose every record the filters remove: the later stages get an empty layer
    _write(root / "data" / "code" / "part-009.jsonl", [{"text": "hi"}, {"text": "ok then"}])
    build(cfg)
    empty = list_builds(Workspace(root / "ws"))[-1]
    assert empty["ledger"]["filter"]["docs_in"] == 2 and empty["ledger"]["filter"]["docs_out"] == 0
    assert empty["ledger"]["dedup"]["docs_in"] == 0 and empty["stages"][:3] == ["ingest", "filter", "dedup"]

    changed = root / "data" / "legal" / "part-000.jsonl"
    records = _records("legal")[:FIRST]
    records[0]["text"] += "\nA changed paragraph, added after the first build."
    _write(changed, records)
    out = subprocess.run(mixforge_cmd() + ["build", str(config)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and str(changed) in out.stderr and "--allow-changed" in out.stderr
    assert "Traceback" not in out.stderr
    with pytest.raises(InputError):
        build(cfg)

    cfg.cluster.refit_drift = 1e-9  # any drift refits (the retracting rebuild refits anyway: it runs in full)
    build(cfg, allow_changed=True)
    b3 = list_builds(Workspace(root / "ws"))[-1]
    assert b3["sources_changed"] == [str(changed)]
    retracted = pl.read_parquet(root / "ws" / b3["retracted"]["list"])
    assert retracted.height == b3["retracted"]["docs"] == FIRST
    assert retracted["id"].str.starts_with("legal/part-000.jsonl:").all()
    assert [layer["id"] for layer in _record(root, "ingest")["layers"]] == [b3["id"]]  # rebuilt in full

    # a new file now drifts past the threshold: the centroids are refitted as version 2
    shutil.copy(SLICE / "dictionary.jsonl", root / "data" / "legal" / "part-002.jsonl")
    build(cfg)
    cluster = _record(root, "cluster")
    assert cluster["counts"]["centroid_version"] == 2 and cluster["counts"]["drift"]["refit"] is True
    extra = root / "ws" / "cluster" / "extra"
    fit = json.loads((extra / "fit.json").read_text())
    assert (extra / "centroids-v1.npy").exists() and fit["previous"]["version"] == 1
    assert len(fit["previous"]["mapping"]) == len(np.load(extra / "centroids-v1.npy"))  # each old cluster -> a new one
    components = json.loads((root / "ws" / "components" / "extra" / "components.json").read_text())["summary"]
    assert components["centroid_version"] == 2
    old_clusters = sum(len(c) for c in components["from_previous"].values())
    assert 0 < old_clusters <= len(fit["previous"]["mapping"])  # the old components' clusters, followed to new components
