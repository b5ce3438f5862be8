"""Exports to object storage, on a real S3-compatible server on 127.0.0.1 (moto's): an export to
s3:// equals the local one file for file, is read back by `mixforge verify s3://...` and by HF
datasets through fsspec; damage is found remotely; --overwrite keeps the old export whole until the
new manifest is in place; an upload killed before its manifest never shows one, and the next
export clears what it left."""

import json
import os
import signal
import subprocess
import time

import pytest

from conftest import mixforge_cmd, private_built
from mixforge.pipelines.export.write import run_export

pytestmark = pytest.mark.timeout(600)


def _weights(cfg) -> dict[str, float]:
    comps = sorted(json.loads((cfg.workspace_dir / "tokens" / "_stage.json").read_text())["counts"]["components"])
    return {c: w for c, w in zip(comps, [0.4, 0.3, 0.2, 0.1])}


def _cli(*args, expect: int = 0) -> subprocess.CompletedProcess:
    run = subprocess.run(mixforge_cmd() + list(args), capture_output=True, text=True, timeout=300)
    assert run.returncode == expect, run.stdout[-2000:] + run.stderr[-3000:]
    return run


def _s3():
    import s3fs

    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    return fs


@pytest.fixture
def workspace(built, tmp_path, s3_store):
    """A private copy of the built slice (an export to a URL stages in its workspace), a mixture
    file, and an empty bucket: (config path, config, mixture file)."""
    config, cfg = private_built(built, tmp_path)
    mix = tmp_path / "mix.yaml"
    mix.write_text("".join(f"{c}: {w}\n" for c, w in _weights(cfg).items()))
    bucket = f"mixes-{os.getpid()}-{time.monotonic_ns()}"
    _s3().mkdir(bucket)
    return config, cfg, mix, f"s3://{bucket}"


def test_an_export_to_s3_is_the_local_export_and_is_verified_and_read_remotely(workspace, tmp_path):
    from datasets import load_dataset

    config, cfg, mix, bucket = workspace
    url = f"{bucket}/web-v3"
    run = _cli("export", str(mix), "-c", str(config), "--out", url, "--format", "parquet", "--tokens", "20000", "--shard-tokens", "6000")
    assert url in run.stdout
    local = run_export(cfg, _weights(cfg), tmp_path / "local", "parquet", tokens=20_000, shard_tokens=6_000)

    fs = _s3()
    remote = json.loads(fs.cat_file(f"{url}/manifest.json"))
    assert [s["path"] for s in remote["shards"]] == [f"g1/{s['path']}" for s in local["shards"]]
    for r, s in zip(remote["shards"], local["shards"]):  # the same bytes, in the generation folder
        assert [(f["bytes"], f["sha256"]) for f in r["files"]] == [(f["bytes"], f["sha256"]) for f in s["files"]]
        assert all(fs.cat_file(f"{url}/{f['path']}") == (tmp_path / "local" / g["path"]).read_bytes()
                   for f, g in zip(r["files"], s["files"]))
    assert fs.exists(f"{url}/README.md") and fs.exists(f"{url}/trainer/hf_interleave_probabilities.json")
    assert not [p for p in fs.find(bucket) if ".mixforge-upload-" in p]
    assert not (cfg.workspace_dir / ".export-staging").exists() or not any((cfg.workspace_dir / ".export-staging").iterdir())

    assert "every shard matches its manifest" in _cli("verify", url).stdout
    files = [f"{url}/{f['path']}" for s in remote["shards"] for f in s["files"]]
    ds = load_dataset("parquet", data_files=files, split="train", cache_dir=str(tmp_path / "hf-cache"))
    assert len(ds) == sum(s["documents"] for s in remote["shards"])

    shard = files[0].removeprefix("s3://")
    fs.pipe_file(shard, fs.cat_file(shard)[:-10])  # a truncated object
    damaged = _cli("verify", url, expect=1)
    assert files[0].removeprefix(url + "/") in damaged.stderr and "truncated or changed" in damaged.stderr


def _objects(fs, url: str) -> list[str]:
    fs.invalidate_cache()
    return sorted(p.removeprefix(url.removeprefix("s3://") + "/") for p in fs.find(url))


def _kill_when(proc: subprocess.Popen, fs, marker: str) -> None:
    """SIGKILL the export's process group once its upload marker is in the store."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        fs.invalidate_cache()
        if fs.exists(marker):
            break
        assert proc.poll() is None, "the export finished before it could be interrupted"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def test_overwrite_keeps_the_old_export_readable_until_the_new_manifest_and_a_killed_upload_shows_none(workspace):
    config, cfg, mix, bucket = workspace
    url, fs = f"{bucket}/mix", _s3()
    export = ["export", str(mix), "-c", str(config), "--out", url, "--format", "jsonl", "--tokens", "20000"]
    _cli(*export)
    old = fs.cat_file(f"{url}/manifest.json")
    refused = _cli(*export, expect=2)
    assert "exists: pass --overwrite" in refused.stderr

    # an --overwrite upload killed once its generation is being uploaded (hundreds of small shards)
    proc = subprocess.Popen(mixforge_cmd() + export + ["--overwrite", "--shard-tokens", "50"], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _kill_when(proc, fs, f"{url}/.mixforge-upload-g2")
    assert fs.cat_file(f"{url}/manifest.json") == old  # the old export, whole and verified
    assert "every shard matches its manifest" in _cli("verify", url).stdout

    _cli(*export, "--overwrite", "--tokens", "12000")
    new = json.loads(fs.cat_file(f"{url}/manifest.json"))
    assert new["tokens"] != json.loads(old)["tokens"] and new["shards"][0]["path"].startswith("g2/")
    left = _objects(fs, url)
    assert not [p for p in left if p.startswith(("g1/", ".mixforge-upload-"))]  # the old generation, the killed one's marker
    assert "every shard matches its manifest" in _cli("verify", url).stdout

    # a first export killed during its upload: no manifest, so no export; the next one clears it
    fresh = f"{bucket}/fresh"
    proc = subprocess.Popen(mixforge_cmd() + ["export", str(mix), "-c", str(config), "--out", fresh, "--format", "jsonl",
                                              "--tokens", "20000", "--shard-tokens", "50"], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _kill_when(proc, fs, f"{fresh}/.mixforge-upload-g1")
    assert not fs.exists(f"{fresh}/manifest.json")
    assert "not an export" in _cli("verify", fresh, expect=2).stderr
    _cli("export", str(mix), "-c", str(config), "--out", fresh, "--format", "jsonl", "--tokens", "10000")
    assert "every shard matches its manifest" in _cli("verify", fresh).stdout
    assert not [p for p in _objects(fs, fresh) if p.startswith(".mixforge-upload-")]


def test_an_export_to_a_url_with_credentials_is_refused_without_showing_them(workspace):
    config, cfg, mix, bucket = workspace
    run = _cli("export", str(mix), "-c", str(config), "--out", "s3://KEY:hunter2@bucket/mix", expect=2)
    assert "holds credentials" in run.stderr and "hunter2" not in run.stderr + run.stdout and "Traceback" not in run.stderr
