"""A scheduled `--then search,export` exports a phased search's proposal as `mixforge export`
does: one folder per phase and schedule.json (issue 24: the flow's export task once wrote one
export of the phases' average instead)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from conftest import SLICE, SLICE_KINDS, mixforge_cmd

LABELS = ("bible", "code", "legal")


def _project(root):
    """10 documents of three slice labels, 2 components, one tiny proxy (influence, 1 round) over
    2 phases, a small export budget; returns the config path."""
    for label in LABELS:
        lines = (SLICE / f"{label}.jsonl").read_text().splitlines()[:10]
        (root / "data" / label).mkdir(parents=True)
        (root / "data" / label / "part-000.jsonl").write_text("\n".join(lines) + "\n")
    config = root / "mixforge.yaml"
    config.write_text(yaml.safe_dump({
        "workspace": str(root / "ws"), "workers": 2, "cluster": {"n_components": 2},
        "sources": [{"path": f"data/{label}", "label": label, "kind": SLICE_KINDS[label]} for label in LABELS],
        "search": {"strategy": "influence", "influence_rounds": 1, "phases": 2, "target": "bpb_mean", "candidates": 100},
        "proxy": {"vocab_size": 512, "tokens": 2_000, "seq_len": 32, "batch_size": 8, "warmup_steps": 2},
        "export": {"tokens": 3_000}}))
    return config


def _without(record: dict, *keys: str) -> dict:
    return {k: v for k, v in record.items() if k not in keys}


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_scheduled_export_of_a_phased_search_writes_one_folder_per_phase_as_the_cli_does(tmp_path):
    config = _project(tmp_path)
    flowed = tmp_path / "scheduled-export"
    script = ("import json, sys; from mixforge.flows.scheduled import scheduled_build_flow as f; "
              "print(json.dumps(f(sys.argv[1], then=['search', 'export'], export_out=sys.argv[2])))")
    run = subprocess.run([sys.executable, "-c", script, str(config), str(flowed)], capture_output=True, text=True, timeout=500)
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    assert summary["export"] == str(flowed)
    proposal = json.loads((tmp_path / "ws" / "search" / json.loads((tmp_path / "ws" / "search" / "latest.json").read_text())["folder"]
                           / "proposal.json").read_text())
    assert len(proposal["schedule"]) == 2

    cli = tmp_path / "cli-export"
    run = subprocess.run(mixforge_cmd() + ["export", str(tmp_path / "ws" / "search"), "-c", str(config), "--out", str(cli)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "schedule export: 2 phases" in run.stdout

    # the same files, phase by phase; the manifests (so schedule.json's digests of them) differ only in their time
    assert sorted(p.name for p in flowed.iterdir()) == sorted(p.name for p in cli.iterdir()) == ["phase0", "phase1", "schedule.json"]
    flowed_record, cli_record = (json.loads((d / "schedule.json").read_text()) for d in (flowed, cli))
    assert [_without(p, "manifest_sha256") for p in flowed_record["phases"]] == [_without(p, "manifest_sha256") for p in cli_record["phases"]]
    assert _without(flowed_record, "phases") == _without(cli_record, "phases")
    for phase in ("phase0", "phase1"):
        flowed_manifest, cli_manifest = (json.loads((d / phase / "manifest.json").read_text()) for d in (flowed, cli))
        assert _without(flowed_manifest, "created_at") == _without(cli_manifest, "created_at")
    check = subprocess.run(mixforge_cmd() + ["verify", str(flowed)], capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stdout + check.stderr

    from mixforge.pipelines.export.schedule import exported

    assert exported(flowed) and not exported(tmp_path)  # a later scheduled run with no new search keeps this export
