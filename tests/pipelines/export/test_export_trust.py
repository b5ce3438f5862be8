"""Exports you can trust: one export per folder at a time (lock), an --overwrite that no kill can
lose (each on-disk state a kill leaves, rebuilt from real exports, recovered by the next run),
files with the user's umask, and `mixforge verify` refusing every damaged or escaping path."""

import hashlib
import json
import os
import shutil
import signal
import stat
import subprocess
import time

import pytest

from conftest import mixforge_cmd
from mixforge.errors import MixforgeError
from mixforge.pipelines.export.verify import verify_export
from mixforge.pipelines.export.write import run_export


def _weights(cfg):
    comps = sorted(json.loads((cfg.workspace_dir / "tokens" / "_stage.json").read_text())["counts"]["components"])
    return {c: w for c, w in zip(comps, [0.4, 0.3, 0.2, 0.1])}


def _export_cmd(built, tmp_path, out, *extra):
    config, cfg, _ = built
    mix = tmp_path / "mix.yaml"
    mix.write_text("".join(f"{c}: {w}\n" for c, w in _weights(cfg).items()))
    return mixforge_cmd() + ["export", str(mix), "-c", str(config), "--out", str(out), *extra]


def _budget(folder):
    return json.loads((folder / "manifest.json").read_text())["token_budget"]


def _hidden(tmp_path, name):
    return sorted(p.name for p in tmp_path.glob(f".{name}.*"))


def _wait_for(pattern_dir, pattern, proc, seconds=120):
    deadline = time.time() + seconds
    while not list(pattern_dir.glob(pattern)) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert list(pattern_dir.glob(pattern)), "the export never reached the point to interrupt"


@pytest.mark.timeout(300)
def test_files_of_an_export_follow_the_umask(built, tmp_path):
    for umask, file_mode, dir_mode in ((0o022, 0o644, 0o755), (0o027, 0o640, 0o750)):
        out = tmp_path / f"u{umask:o}"
        run = subprocess.run(_export_cmd(built, tmp_path, out, "--format", "megatron", "--tokens", "10000"),
                             capture_output=True, text=True, timeout=240, umask=umask)
        assert run.returncode == 0, run.stderr[-2000:]
        modes = {p.relative_to(out).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in [out, *out.rglob("*")]}
        assert "manifest.json" in modes and "README.md" in modes and "trainer/megatron_data_path.txt" in modes
        wrong = {p: oct(m) for p, m in modes.items() if m != (dir_mode if (out / p).is_dir() else file_mode)}
        assert not wrong, f"umask {umask:o}: {wrong}"


@pytest.mark.timeout(300)
def test_a_second_export_to_the_same_folder_fails_at_once_and_deletes_nothing(built, tmp_path):
    out = tmp_path / "busy"
    first = subprocess.Popen(_export_cmd(built, tmp_path, out, "--format", "jsonl", "--tokens", "20000", "--shard-tokens", "40"),
                             start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_for(tmp_path, ".busy.partial-*/shard-00005.jsonl.zst", first)
        os.kill(first.pid, signal.SIGSTOP)  # holds the lock, paused mid-export: deterministic
        assert first.poll() is None, "the first export finished before it could be paused"
        partial = next(tmp_path.glob(".busy.partial-*"))
        second = subprocess.run(_export_cmd(built, tmp_path, out, "--format", "parquet", "--overwrite"),
                                capture_output=True, text=True, timeout=120)
        assert second.returncode == 2 and "Traceback" not in second.stderr
        assert str(out) in second.stderr and f"pid {first.pid}" in second.stderr
        assert partial.exists() and (partial / "shard-00005.jsonl.zst").exists()  # the first one's output is intact
    finally:
        os.kill(first.pid, signal.SIGCONT)
    assert first.wait(timeout=240) == 0, first.stderr.read()[-2000:]
    assert verify_export(out) == [] and _hidden(tmp_path, "busy") == []  # lock file and partial gone


@pytest.mark.timeout(300)
def test_a_killed_overwrite_keeps_the_old_export_and_the_rerun_cleans_up(built, tmp_path):
    _, cfg, _ = built
    out = tmp_path / "mix"
    run_export(cfg, _weights(cfg), out, "numpy", tokens=10_000)
    proc = subprocess.Popen(_export_cmd(built, tmp_path, out, "--format", "jsonl", "--tokens", "20000", "--shard-tokens", "20",
                                        "--overwrite"), start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for(tmp_path, ".mix.partial-*/shard-00010.jsonl.zst", proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert _budget(out) == 10_000 and verify_export(out) == []  # the old export, whole
    rerun = subprocess.run(_export_cmd(built, tmp_path, out, "--format", "jsonl", "--tokens", "12000", "--overwrite"),
                           capture_output=True, text=True, timeout=240)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert _budget(out) == 12_000 and verify_export(out) == [] and _hidden(tmp_path, "mix") == []


@pytest.mark.timeout(300)
def test_each_state_a_killed_overwrite_leaves_is_recovered(built, tmp_path):
    """The states between the steps of --overwrite (old -> .old-PID, new -> in place, .old-PID ->
    .deleting-PID -> deleted), made from real exports, each recovered by the next export."""
    _, cfg, _ = built
    old, new = tmp_path / "src-old", tmp_path / "src-new"
    run_export(cfg, _weights(cfg), old, "megatron", tokens=10_000)
    run_export(cfg, _weights(cfg), new, "megatron", tokens=12_000)
    out = tmp_path / "mix"
    # killed between the renames: the old export is hidden, the new one complete beside it
    shutil.copytree(old, tmp_path / ".mix.old-4242")
    shutil.copytree(new, tmp_path / ".mix.partial-4243")
    run = subprocess.run(_export_cmd(built, tmp_path, out, "--format", "megatron"), capture_output=True, text=True, timeout=240)
    assert run.returncode == 2 and "exists: pass --overwrite" in run.stderr and "put back the previous export" in run.stderr
    assert _budget(out) == 10_000 and verify_export(out) == [] and _hidden(tmp_path, "mix") == []
    # killed after the renames: the new export in place, the old one still beside it
    shutil.rmtree(out)
    shutil.copytree(new, out)
    shutil.copytree(old, tmp_path / ".mix.old-4242")
    with pytest.raises(MixforgeError, match="exists: pass --overwrite"):
        run_export(cfg, _weights(cfg), out, "megatron")
    assert _budget(out) == 12_000 and _hidden(tmp_path, "mix") == []
    # killed while deleting the old one
    shutil.copytree(old, tmp_path / ".mix.deleting-4242")
    (tmp_path / ".mix.deleting-4242" / "manifest.json").unlink()
    # killed while writing the new one, with a stale lock file (the kernel dropped its lock)
    shutil.copytree(new, tmp_path / ".mix.partial-4243", ignore=shutil.ignore_patterns("manifest.json", "shard-00001.*"))
    (tmp_path / ".mix.lock").write_text("4243\n")
    run_export(cfg, _weights(cfg), out, "megatron", tokens=11_000, overwrite=True)
    assert _budget(out) == 11_000 and verify_export(out) == [] and _hidden(tmp_path, "mix") == []


def test_overwrite_replaces_only_an_export(built, tmp_path):
    _, cfg, _ = built
    precious = tmp_path / "home"
    (precious / "notes").mkdir(parents=True)
    (precious / "notes" / "todo.txt").write_text("keep me")
    with pytest.raises(MixforgeError, match="is not an export"):
        run_export(cfg, _weights(cfg), precious, "numpy", tokens=10_000, overwrite=True)
    assert (precious / "notes" / "todo.txt").read_text() == "keep me" and _hidden(tmp_path, "home") == []
    (tmp_path / "empty").mkdir()
    run_export(cfg, _weights(cfg), tmp_path / "empty", "numpy", tokens=10_000, overwrite=True)
    assert verify_export(tmp_path / "empty") == []


def _verify(folder):
    run = subprocess.run(mixforge_cmd() + ["verify", str(folder)], capture_output=True, text=True, timeout=120)
    assert "Traceback" not in run.stderr, run.stderr
    return run.returncode, run.stderr


def _damaged(src, dst, edit=None):
    shutil.copytree(src, dst)
    manifest = json.loads((dst / "manifest.json").read_text())
    if edit:
        edit(manifest)
        (dst / "manifest.json").write_text(json.dumps(manifest))
    return dst, manifest


@pytest.mark.timeout(300)
def test_verify_refuses_every_damaged_or_escaping_path(built, tmp_path):
    _, cfg, _ = built
    good = tmp_path / "good"
    m = run_export(cfg, _weights(cfg), good, "megatron", tokens=20_000, shard_tokens=5_000)
    assert len(m["shards"]) >= 3 and _verify(good)[0] == 0
    code, err = _verify(tmp_path / "nowhere")
    assert code == 2 and "no such export folder" in err

    bad = _damaged(good, tmp_path / "json")[0]
    (bad / "manifest.json").write_text((good / "manifest.json").read_text()[:500])
    code, err = _verify(bad)
    assert code == 2 and "manifest.json line" in err and "not valid JSON" in err

    bad, _ = _damaged(good, tmp_path / "shard-path", lambda x: x["shards"][1].update(path="../../etc/passwd"))
    code, err = _verify(bad)
    assert code == 1 and "../../etc/passwd: shard path points outside the export folder" in err

    bad, _ = _damaged(good, tmp_path / "file-path", lambda x: x["shards"][0]["files"][0].update(path="/etc/passwd"))
    code, err = _verify(bad)
    assert code == 1 and "/etc/passwd: points outside the export folder" in err

    bad, man = _damaged(good, tmp_path / "symlink")  # a shard file swapped for a link out of the folder
    outside = tmp_path / "outside.bin"
    shutil.copy(bad / man["shards"][0]["files"][0]["path"], outside)
    (bad / man["shards"][0]["files"][0]["path"]).unlink()
    (bad / man["shards"][0]["files"][0]["path"]).symlink_to(outside)
    code, err = _verify(bad)
    assert code == 1 and f"{man['shards'][0]['files'][0]['path']}: points outside" in err

    bad, man = _damaged(good, tmp_path / "truncated")
    rel = man["shards"][2]["files"][0]["path"]
    (bad / rel).write_bytes((bad / rel).read_bytes()[:-5])
    code, err = _verify(bad)
    assert code == 1 and f"{rel}: " in err and "truncated or changed" in err
    # the same, with the manifest's size and hash made to match: the re-count still catches it
    data = (bad / rel).read_bytes()
    bad, _ = _damaged(bad, tmp_path / "rehashed", lambda x: x["shards"][2]["files"][0].update(
        bytes=len(data), sha256=hashlib.sha256(data).hexdigest()))
    code, err = _verify(bad)
    assert code == 1 and f"{man['shards'][2]['path']}: cannot be read as megatron" in err and "not a whole number" in err

    def recount(x):  # every shard is re-counted, not only the first with a problem
        x["shards"][0]["documents"] += 1
        x["shards"][-1]["documents"] -= 1
    bad, man = _damaged(good, tmp_path / "counts", recount)
    code, err = _verify(bad)
    assert code == 1 and f"{man['shards'][0]['path']}: {man['shards'][0]['documents'] - 1} documents" in err
    assert f"{man['shards'][-1]['path']}: {man['shards'][-1]['documents'] + 1} documents" in err

    bad, man = _damaged(good, tmp_path / "stray")  # a shard of another export left in the folder
    shutil.copy(bad / man["shards"][0]["files"][0]["path"], bad / "shard-99999.bin")
    code, err = _verify(bad)
    assert code == 1 and "shard-99999.bin: a file the manifest does not name" in err

    bad = _damaged(good, tmp_path / "blend")[0]
    (bad / "trainer" / "megatron_data_path.txt").write_text("--data-path 1.0 ../elsewhere/shard\n")
    code, err = _verify(bad)
    assert code == 1 and "trainer/megatron_data_path.txt: differs from the manifest" in err


@pytest.mark.timeout(300)
def test_verify_checks_mds_index_files_and_text_shards(built, tmp_path):
    _, cfg, _ = built
    mds = tmp_path / "mds"
    m = run_export(cfg, _weights(cfg), mds, "mds", tokens=15_000, mode="reference")
    assert verify_export(mds) == []
    bad, _ = _damaged(mds, tmp_path / "mds-index", lambda x: x["index_files"][0].update(path="../mds/index.json"))
    code, err = _verify(bad)
    assert code == 1 and "../mds/index.json: points outside the export folder" in err
    jsonl = tmp_path / "jsonl"
    m = run_export(cfg, _weights(cfg), jsonl, "jsonl", tokens=15_000, shard_tokens=5_000)
    bad, _ = _damaged(jsonl, tmp_path / "jsonl-docs", lambda x: x["shards"][1].update(documents=x["shards"][1]["documents"] + 2))
    code, err = _verify(bad)
    assert code == 1 and f"{m['shards'][1]['path']}: {m['shards'][1]['documents']} documents, the manifest says" in err


def test_an_export_where_no_folder_can_be_made_is_a_clear_error(built, tmp_path):
    (tmp_path / "notes.txt").write_text("a file, not a folder")
    out = tmp_path / "notes.txt" / "mix"
    run = subprocess.run(_export_cmd(built, tmp_path, out, "--format", "numpy"), capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "Traceback" not in run.stderr and f"cannot export to {out}" in run.stderr
