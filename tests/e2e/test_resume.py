"""Kill `mixforge build` part-way (SIGKILL to the whole process group, datatrove workers
included) at 6 points, check after each kill that nothing looks complete that is not, rerun, and
check the outputs are byte-identical to an uninterrupted build (the session's `slice_built`, over
the same data folder), by this module's digests and by scripts/fault_inject.py's comparison.

The kill points reach both ways a stage publishes (`run_stage`: ingest, filter, dedup;
`run_side_stage`: embed, components), with fault_inject's checks of a killed run and of a finished
one (nothing left behind): this is the CI test of killed builds, so tests/e2e/test_fault_inject.py
leaves `build` out of its random kills."""

import hashlib
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import fault_inject_tool, mixforge_cmd, slice_config_over

# Points in a build to kill at, as predicates on the workspace (checked every 20 ms).
KILL_POINTS = {
    "ingest started": lambda ws: (ws / "ingest.partial").exists(),
    "filter task done": lambda ws: any((ws / "filter.partial" / "logs" / "completions").glob("*")),
    "minhash started": lambda ws: (ws / "dedup.partial" / "logs" / "mh1").exists(),
    "dedup writing": lambda ws: (ws / "dedup.partial" / "logs" / "final").exists(),
    "embedding": lambda ws: (ws / "embed.partial").exists(),
    "merging components": lambda ws: (ws / "components.partial").exists(),
}


def _outputs(ws: Path) -> dict[str, str]:
    """sha256 of every published output (stage records and summaries hold timings: left out)."""
    files = [p for p in ws.rglob("*") if p.is_file() and ".partial" not in str(p) and "/logs/" not in str(p)]
    keep = [p for p in files if p.suffix in (".parquet", ".npy") or p.name in ("report.md", "ledger.json")]
    return {str(p.relative_to(ws)): hashlib.sha256(p.read_bytes()).hexdigest() for p in keep}


def _run_until(config: Path, ws: Path, predicate, timeout: float = 180) -> bool:
    """Start a build; kill its process group as soon as `predicate(ws)` holds. True if killed."""
    proc = subprocess.Popen(mixforge_cmd() + ["build", str(config)], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if predicate(ws):
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                return True
            time.sleep(0.02)
        assert proc.poll() == 0, proc.stderr.read().decode()[-3000:]
        return False
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_killed_build_resumes_to_identical_outputs(tmp_path, slice_built):
    data, clean_ws = slice_built
    expected = _outputs(clean_ws)
    assert any("dedup/docs" in k for k in expected) and any(k.startswith("removed/") for k in expected)

    fi = fault_inject_tool()
    slice_config = slice_config_over(tmp_path, data)  # tmp_path/mixforge.yaml, workspace tmp_path/ws: fault_inject's layout
    ws = tmp_path / "ws"
    killed = []
    for name, predicate in KILL_POINTS.items():
        if _run_until(slice_config, ws, predicate):
            killed.append(name)
            assert fi.after_kill(tmp_path, dict(os.environ)) == [], f"after the kill at {name}"
    assert len(killed) >= 4, f"the build was killed only at {killed}"
    run = subprocess.run(mixforge_cmd() + ["build", str(slice_config)], timeout=300, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    assert _outputs(ws) == expected
    assert not list(ws.glob("*.partial"))
    assert fi.differences(fi.outputs(tmp_path), fi.outputs(clean_ws.parent)) == [] and fi.leftovers(tmp_path) == []
