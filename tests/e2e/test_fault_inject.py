"""Fault injection in CI: scripts/fault_inject.py kills an incremental build, proxy sweep, search verify and
export at seeded random moments, reruns each to completion and compares with an uninterrupted
run (exit 1 on any difference). MIXFORGE_FAULT_TRIALS kills per command: 1 by default (the
suite's slowest test, 805 s at 2), so that the suite stays within its time on 2 cores; 10 per
command were run by hand (BENCHMARKS.md), and more trials by hand after changes to a stage.

MIXFORGE_FAULT_COMMANDS, the commands killed: by default all but `build` (the others start from
the incremental build's result: no build from scratch is run). Killed builds are tests/e2e/test_resume.py's: 6
deterministic kill points, each followed by this script's checks of a killed run, and its
comparison of the resumed outputs. The script's own default, for runs by hand, is every command;
MIXFORGE_FAULT_COMMANDS=build,grow,sweep,verify,export gives that here."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, fault_inject_tool

TRIALS = int(os.environ.get("MIXFORGE_FAULT_TRIALS", "1"))
COMMANDS = [c for c in os.environ.get("MIXFORGE_FAULT_COMMANDS", "grow,sweep,verify,export").split(",") if c]


@pytest.mark.slow
@pytest.mark.timeout(1200 + 600 * TRIALS)  # 683 s at 3 trials of 4 commands on an idle 2-core machine (2026-12-01): a third of the timeout leaves room for a loaded one
def test_killed_commands_rerun_to_identical_outputs(tmp_path):
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "fault_inject.py"), "--trials", str(TRIALS),
                          "--commands", ",".join(COMMANDS), "--seed", "0", "--workdir", str(tmp_path)],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-3000:]
    trials = [line for line in run.stdout.splitlines() if " trial " in line]
    assert len(trials) == len(COMMANDS) * TRIALS and all(line.endswith(": ok") for line in trials), run.stdout
    assert sorted({line.split()[0] for line in trials}) == sorted(COMMANDS), run.stdout


def _workspace(root: Path, finished_at: str, wall_s: float, text: str, token: int) -> Path:
    import json

    import polars as pl

    ws = root / "ws"
    for d in ("tokens/extra/train", "runs/rows", "prune/docs", "prune/logs"):
        (ws / d).mkdir(parents=True)
    (ws / "tokens" / "_stage.json").write_text(json.dumps({"counts": {"docs": 2, "seconds": wall_s}, "finished_at": finished_at}))
    (ws / "tokens" / "extra" / "train" / "c00.bin").write_bytes(bytes([1, 2, token]))
    pl.DataFrame([{"run_id": "r1", "loss_mean": 3.5, "wall_s": wall_s, "created_at": finished_at}]).write_parquet(ws / "runs" / "rows" / "r1.parquet")
    pl.DataFrame({"id": ["a", "b"], "text": ["one", text]}).write_parquet(ws / "prune" / "docs" / "00000.parquet")
    (ws / "prune" / "logs" / "stats.json").write_text(json.dumps({"time": wall_s}))
    return root


def test_comparison_ignores_timings_and_catches_changed_bytes(tmp_path):
    """The tool's verdict can fail: a changed token, a changed text, a left-over partial folder are
    reported; timings (records, runs rows, datatrove logs) and the run's own folder are not."""
    fi = fault_inject_tool()
    ref = fi.outputs(_workspace(tmp_path / "ref", "2026-12-01T10:00", 1.0, "two", 3))
    assert fi.differences(fi.outputs(_workspace(tmp_path / "same", "2026-12-01T11:00", 9.0, "two", 3)), ref) == []
    changed = _workspace(tmp_path / "changed", "2026-12-01T11:00", 9.0, "TWO", 4)
    (changed / "ws" / "dedup.partial").mkdir()
    got = fi.differences(fi.outputs(changed), ref) + fi.leftovers(changed)
    assert got == ["differs ws/prune/docs/00000.parquet", "differs ws/tokens/extra/train/c00.bin",
                   "differs kept documents (id, xxh3 of text) (2 vs 2 items)", "left behind ws/dedup.partial"], got


def test_compare_workspaces_passes_equal_runs_and_names_each_difference(tmp_path):
    """scripts/compare_workspaces.py (the before/after check of a refactor) uses the same comparison."""
    same = [_workspace(tmp_path / name, at, wall, "two", 3) for name, at, wall in
            (("old", "2026-12-01T10:00", 1.0), ("new", "2026-12-07T10:00", 5.0))]
    script = [sys.executable, str(ROOT / "scripts" / "compare_workspaces.py"), "--workspace", "ws"]
    run = subprocess.run(script + [str(p) for p in same], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and "0 difference(s); 2 kept documents identical" in run.stdout, run.stdout + run.stderr
    changed = _workspace(tmp_path / "changed", "2026-12-07T10:00", 5.0, "two", 4)
    run = subprocess.run(script + [str(same[0]), str(changed)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 1 and "differs ws/tokens/extra/train/c00.bin" in run.stdout, run.stdout + run.stderr
