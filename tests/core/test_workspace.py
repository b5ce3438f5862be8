import json
from pathlib import Path

import pytest

from conftest import SLICE, write_config
from mixforge.config import load_config
from mixforge.errors import InputError, LedgerError
from mixforge.ledger import StageCounts
from mixforge.pipelines.build import build, stage_states
from mixforge.pipelines.run.stage import run_stage
from mixforge.workspace import Workspace, atomic_write_bytes


def test_atomic_write_leaves_old_content_on_failure(tmp_path):
    target = tmp_path / "f.json"
    atomic_write_bytes(target, b"old")

    with pytest.raises(TypeError):
        atomic_write_bytes(target, object())  # fails mid-write
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]  # no temp file left behind


def test_ledger_invariant_violation_stops_the_stage(tmp_path):
    ws = Workspace(tmp_path / "ws")

    def body(partial: Path) -> None:  # writes nothing: documents vanish without a reason
        (partial / "docs").mkdir(parents=True)

    with pytest.raises(LedgerError, match=r"documents in \(5\) != out \(0\) \+ removed \(0\); 5 unaccounted"):
        run_stage(ws, "filter", "fp", body, lambda _: (5, 100))
    assert ws.stage_record("filter") is None  # nothing published
    with pytest.raises(LedgerError):
        StageCounts("x", 3, 1, 0, 0, {"r": {"docs": 1, "chars": 0}}).check()
    StageCounts("x", 3, 2, 0, 0, {"r": {"docs": 1, "chars": 0}}).check()


def test_rerun_skips_changed_settings_rerun_downstream_and_force_redoes(tmp_path):
    (tmp_path / "b.jsonl").write_text((SLICE / "bible.jsonl").read_text())
    cfg = load_config(write_config(tmp_path, [{"path": "b.jsonl"}]))
    stages = ["ingest", "filter", "dedup", "embed", "cluster", "quality", "prune", "components", "tokens"]

    def statuses(**kw):
        return dict(zip(stages, (r.status for r in build(cfg, **kw))))

    def ran(result):
        return [s for s, v in result.items() if v == "ran"]

    assert set(stage_states(cfg).values()) == {"missing"}
    first = build(cfg)
    assert [r.status for r in first] == ["ran"] * 9
    assert set(stage_states(cfg).values()) == {"done"}
    assert ran(statuses()) == []

    cfg.filters.gopher_quality.min_doc_words = 10  # a filter setting: everything downstream is stale
    assert stage_states(cfg)["ingest"] == "done" and stage_states(cfg)["components"] == "stale"
    assert ran(statuses()) == stages[1:]
    cfg.cluster.n_components = 2  # only the merge (and the tokens of the new components) change
    assert ran(statuses()) == ["components", "tokens"]
    cfg.quality.min_cluster_score = 1.5  # pruning and what follows
    assert ran(statuses()) == ["prune", "components", "tokens"]
    cfg.proxy.vocab_size = 600  # only the tokens
    assert ran(statuses()) == ["tokens"]
    assert ran(statuses(force=True)) == stages

    # a changed input file makes everything stale; rebuilding it retracts its old documents, so it is asked for
    with (tmp_path / "b.jsonl").open("a") as f:
        f.write(json.dumps({"text": "One more line appended by hand to the Bible slice."}) + "\n")
    assert stage_states(cfg)["ingest"] == "stale"
    with pytest.raises(InputError, match="changed: .*b.jsonl"):
        build(cfg, until="ingest")
    again = build(cfg, until="ingest", allow_changed=True)
    assert again[0].status == "ran" and again[0].counts["docs_in"] == first[0].counts["docs_in"] + 1


def test_publish_finishes_after_a_kill_between_moves(tmp_path):
    """A kill after some outputs were moved into place: the rerun only finishes publishing."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mixforge.pipelines.ingest.records import DOC_SCHEMA
    from mixforge.workspace import atomic_write_json

    ws = Workspace(tmp_path / "ws")
    partial = ws.partial_dir("filter")
    (partial / "docs").mkdir(parents=True)
    row = {"id": "a", "text": "hello", "source": "s", "source_id": None, "origin": "f:1", "chars": 5}
    pq.write_table(pa.Table.from_pylist([row], schema=DOC_SCHEMA), partial / "docs" / "0.parquet")
    atomic_write_json(partial / "_fingerprint.json", {"fingerprint": "fp"})
    counts = StageCounts("filter", 1, 1, 5, 5, {}).to_dict()
    atomic_write_json(partial / "_record.json", {"stage": "filter", "fingerprint": "fp", "counts": counts})
    ws.stage_dir("filter").mkdir(parents=True)
    (partial / "docs").rename(ws.docs_dir("filter"))  # the kill came right after this move

    def must_not_run(_):
        raise AssertionError("finished work was redone")

    result = run_stage(ws, "filter", "fp", must_not_run, must_not_run)
    assert result.status == "ran" and result.counts["docs_out"] == 1
    assert (ws.docs_dir("filter") / "0.parquet").exists() and not partial.exists()
    assert ws.stage_state("filter", "fp") == "done"
