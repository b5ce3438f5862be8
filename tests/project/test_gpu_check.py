"""bench/gpu_check.sh, the script a lent GPU machine runs in one call, works end to end: here as
its CPU dry run with tiny sizes (the GPU figures themselves are in BENCHMARKS.md when measured)."""

from conftest import ROOT
import json
import os
import subprocess
import sys

import pytest



@pytest.mark.slow
@pytest.mark.timeout(900)
def test_gpu_check_dry_run_writes_every_result(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable}
    run = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh"), "--tiny"], env=env, capture_output=True,
                         text=True, timeout=850)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    names = [r["name"] for r in result["results"]]
    assert result["tiny"] is True
    assert any(n.startswith("embed") for n in names) and any("kmeans" in n for n in names), names
    assert any("proxy" in n or "train" in n for n in names), names
    for name in ("embed", "kmeans", "proxy"):
        assert (tmp_path / f"{name}.log").exists()
