"""Published files carry their digests: a file changed, truncated or planted after its stage wrote
it is found by `status` (sizes) and `status --check` (digests), redone by `build`, and refused by
the readers that would use it (export, proxy training); a damaged runs-table row is named."""

import json
import os
import shutil
import subprocess

import pytest
import yaml

from conftest import mixforge_cmd, slice_config_over
from mixforge.config import load_config
from mixforge.pipelines.build import build
from mixforge.workspace import read_json


def _cli(*args, timeout=600):
    return subprocess.run(mixforge_cmd() + [str(a) for a in args], capture_output=True, text=True, timeout=timeout)


def _copy(slice_built, tmp_path):
    """A private copy of the session's built slice, with a config naming the same data."""
    data, ws = slice_built
    shutil.copytree(ws, tmp_path / "ws", symlinks=True)
    return slice_config_over(tmp_path, data), tmp_path / "ws"


def _flip(path, at=None, n=16):
    """Flip n bytes in place, keeping the size and the modification time."""
    st = path.stat()
    raw = bytearray(path.read_bytes())
    at = len(raw) // 2 if at is None else at
    for i in range(at, at + n):
        raw[i] ^= 0xFF
    path.write_bytes(bytes(raw))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def _stages(config, *flags):
    run = _cli("status", config, "--json", *flags)
    return run, {s: v["state"] for s, v in json.loads(run.stdout)["stages"].items()}


@pytest.mark.timeout(600)
def test_changed_bytes_are_found_by_status_check_and_redone_by_build(slice_built, tmp_path):
    config, ws = _copy(slice_built, tmp_path)
    record = read_json(ws / "prune" / "_stage.json")
    shard = sorted((ws / "prune" / "docs").glob("*.parquet"))[0]
    assert record["files"][f"prune/docs/{shard.name}"]["bytes"] == shard.stat().st_size
    original = shard.read_bytes()
    _flip(shard)

    run, states = _stages(config)  # sizes only: same size, so not seen
    assert run.returncode == 0 and states["prune"] == "done"
    run, states = _stages(config, "--check")
    assert run.returncode == 1 and states["prune"] == "damaged" and states["tokens"] == "done"
    run = _cli("status", config, "--check")
    assert run.returncode == 1 and f"prune/docs/{shard.name}" in run.stderr and "Traceback" not in run.stderr

    sizes_only = tmp_path / "sizes.yaml"  # check_outputs: size trusts same-size files: nothing is redone
    sizes_only.write_text(yaml.safe_dump(yaml.safe_load(config.read_text()) | {"check_outputs": "size"}))
    assert {r.status for r in build(load_config(sizes_only))} == {"skipped"} and shard.read_bytes() != original

    run = _cli("build", config)
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"prune/docs/{shard.name}" in run.stderr and "redoing prune" in run.stderr
    assert shard.read_bytes() == original  # the build is deterministic: prune was redone as it was
    _, built = slice_built
    for stage in ("prune", "tokens"):  # (components.json records the seconds it took)
        assert read_json(ws / stage / "_stage.json")["files"] == read_json(built / stage / "_stage.json")["files"]
    run, states = _stages(config, "--check")
    assert run.returncode == 0 and set(states.values()) == {"done"}


@pytest.mark.timeout(600)
def test_truncated_or_planted_files_are_seen_by_plain_status(slice_built, tmp_path):
    config, ws = _copy(slice_built, tmp_path)
    shard = sorted((ws / "tokens" / "extra" / "train").glob("*.bin"))[0]
    with open(shard, "r+b") as f:
        f.truncate(shard.stat().st_size // 2)
    planted = ws / "dedup" / "docs" / "zz-planted.parquet"
    shutil.copy(sorted((ws / "dedup" / "docs").glob("*.parquet"))[0], planted)
    run, states = _stages(config)
    assert run.returncode == 0 and states["tokens"] == "damaged" and states["dedup"] == "damaged"
    problems = json.loads(run.stdout)["stages"]
    assert any(shard.name in p and "truncated" in p for p in problems["tokens"]["problems"])
    assert any("zz-planted.parquet" in p and "not written by the dedup stage" in p for p in problems["dedup"]["problems"])


@pytest.mark.timeout(600)
def test_export_refuses_damaged_or_stale_tokens(slice_built, tmp_path):
    config, ws = _copy(slice_built, tmp_path)
    components = sorted(read_json(ws / "tokens" / "_stage.json")["counts"]["components"])
    mixture = tmp_path / "mix.yaml"
    mixture.write_text(yaml.safe_dump({c: 1 / len(components) for c in components}))
    shard = ws / "tokens" / "extra" / "train" / f"{components[0]}.bin"
    _flip(shard, at=8)
    run = _cli("export", mixture, "-c", config, "--out", tmp_path / "out")
    assert run.returncode == 2 and f"tokens/extra/train/{components[0]}.bin" in run.stderr and "Traceback" not in run.stderr
    assert not (tmp_path / "out").exists()
    _flip(shard, at=8)  # flipped back: intact again

    _flip(shard, at=8)  # a proxy run reads the same shards: refused too while damaged
    run = _cli("proxy", "train", config, "--mixture", mixture)
    assert run.returncode == 2 and f"{components[0]}.bin" in run.stderr and "Traceback" not in run.stderr
    assert not (ws / "runs" / "rows").exists() or not list((ws / "runs" / "rows").glob("*.parquet"))
    _flip(shard, at=8)

    cfg = yaml.safe_load(config.read_text())
    cfg["proxy"] = {"vocab_size": 777}  # the tokens stage is stale for this config
    stale = tmp_path / "stale.yaml"
    stale.write_text(yaml.safe_dump(cfg))
    run = _cli("export", mixture, "-c", stale, "--out", tmp_path / "out")
    assert run.returncode == 2 and "tokens stage" in run.stderr and "stale" in run.stderr
    shutil.rmtree(ws / "tokens")
    run = _cli("export", mixture, "-c", config, "--out", tmp_path / "out")
    assert run.returncode == 2 and "missing" in run.stderr and not (tmp_path / "out").exists()


@pytest.mark.timeout(300)
def test_a_damaged_runs_row_is_named(tmp_path):
    import polars as pl

    from mixforge.proxy_training.runs_table import RunsTable
    from mixforge.workspace import Workspace

    table = RunsTable(Workspace(tmp_path))
    table.append({"run_id": "r1", "w_a": 1.0, "loss_a": 2.0})
    table.append({"run_id": "r2", "w_a": 1.0, "loss_a": 2.5})
    assert table.load().height == 2
    row = tmp_path / "runs" / "rows" / "r2.parquet"
    row.write_bytes(row.read_bytes()[: row.stat().st_size // 2])
    with pytest.raises(Exception) as e:
        table.load()
    assert type(e.value).__name__ == "MixforgeError" and str(row) in str(e.value) and "delete it" in str(e.value)
    pl.DataFrame([{"run_id": "r3", "w_a": 1.0}]).write_parquet(row)  # another run's row under this name
    with pytest.raises(Exception, match="not the row of run r2"):
        table.load()
