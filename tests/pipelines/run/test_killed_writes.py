"""A build killed inside an atomic write leaves its temp file (no handler sees SIGKILL): the next
build deletes those in builds/ and at the workspace's top, and nothing else."""

from conftest import SLICE, write_config
from mixforge.config import load_config
from mixforge.pipelines.build import build


def test_the_next_build_deletes_the_temp_files_of_a_killed_one(tmp_path):
    (tmp_path / "code.jsonl").write_text((SLICE / "code.jsonl").read_text())
    cfg = load_config(write_config(tmp_path, [{"path": "code.jsonl", "label": "code"}]))
    build(cfg, until="ingest")
    ws = tmp_path / "ws"
    planted = [ws / "builds" / ".b0002.json.i7gn0equ.tmp", ws / ".ledger.json.x1y2z3.tmp"]
    for path in planted:
        path.write_text("{")  # half a record
    kept = ws / ".folder-of-a-stage.tmp"  # a folder is a stage's own business
    kept.mkdir()
    build(cfg, until="ingest")
    assert not [p for p in planted if p.exists()] and kept.is_dir()
