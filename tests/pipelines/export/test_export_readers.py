"""Exports read by the trainers' own packages: MosaicML streaming reads the MDS export (and its
MDSWriter writes the same bytes), litgpt's litdata and torchtitan run the export's snippets, and
Hugging Face `datasets` runs the interleave snippet.

MosaicML streaming, litdata and torchtitan run in the readers' environment (`make readers`,
tests/trainer_readers/requirements.txt): mosaicml-streaming needs torchvision, which has no build
for the main environment's CPU torch. `make test` sets MIXFORGE_READERS_PYTHON, so there these
tests fail rather than skip when that environment is missing.
"""

import hashlib
import importlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import ROOT
from mixforge.pipelines.export.verify import verify_export
from mixforge.pipelines.export.write import run_export
from mixforge.pipelines.export.formats import read_mds_shard, write_mds_index, write_shard

CHECK = ROOT / "tests" / "trainer_readers" / "check.py"


def readers_python() -> str:
    python = os.environ.get("MIXFORGE_READERS_PYTHON")
    if python:
        assert Path(python).exists(), f"MIXFORGE_READERS_PYTHON={python} does not exist: run `make readers`"
        return python
    default = ROOT / ".venv-readers" / "bin" / "python"
    if not default.exists():
        pytest.skip("the trainers' readers environment is missing: run `make readers` (make test does)")
    return str(default)


def run_check(*args) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([readers_python(), str(CHECK), *map(str, args)], capture_output=True, text=True,
                          timeout=400, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def _weights(cfg):
    comps = sorted(json.loads((cfg.workspace_dir / "tokens" / "_stage.json").read_text())["counts"]["components"])
    return dict(zip(comps, [0.4, 0.3, 0.2, 0.1]))


def _by_component(m, key):
    out = {}
    for s in m["shards"]:
        out[s["component"]] = out.get(s["component"], 0) + s[key]
    return out


@pytest.mark.timeout(600)
def test_mds_export_reads_with_mosaicml_streaming(built, tmp_path):
    _, cfg, _ = built
    out = tmp_path / "mds"
    m = run_export(cfg, _weights(cfg), out, "mds", tokens=20_000, mode="reference", shard_tokens=3_000)
    assert verify_export(out) == [] and len(m["index_files"]) == 4
    assert len(m["shards"]) > 4  # several shards in some folder: index.json lists them all
    seen = run_check("mds", out)
    docs, tokens = _by_component(m, "documents"), _by_component(m, "tokens")
    for comp in _weights(cfg):
        got = seen["streams"][comp]
        assert got["samples"] == docs[comp] and got["tokens"] == tokens[comp], (comp, got)
        assert got["components"] == [comp] and got["dtype"] == "uint16"
    ours = [d for s in m["shards"] for d in read_mds_shard(out / s["files"][0]["path"])]
    assert [d["id"] for d in ours] == [i for comp in _weights(cfg) for i in seen["streams"][comp]["ids"]]
    # one epoch of the snippet's Streams draws each folder in proportion to its documents
    assert seen["mixed_epoch"] == sum(docs.values())
    for comp, n in seen["mixed_components"].items():
        assert abs(n - docs[comp]) <= 1, seen["mixed_components"]
    streams = json.loads((out / "trainer" / "mosaicml_streams.json").read_text())
    assert {s["local"]: s["proportion"] for s in streams} == {c: s["document_probability"] for c, s in m["components"].items()}
    (out / "c00" / "index.json").write_text("{}")  # damage outside the shards is caught too
    assert any("c00/index.json" in p for p in verify_export(out))


@pytest.mark.timeout(300)
def test_mds_bytes_match_mosaicml_mdswriter(tmp_path):
    rng = np.random.default_rng(3)
    texts = ["plain", "naïve café – 東京", "x" * 3000, "line\nbreaks\tand tabs"]
    docs = [(f"doc-{i}", f"c{i % 3}", texts[i % len(texts)], rng.integers(0, 60_000, size=int(rng.integers(0, 400))))
            for i in range(40)]
    ours = write_shard("mds", tmp_path / "ours" / "shard-00000", docs, eos=7, dtype=np.dtype(np.uint16), tokenizer_name="t")
    raw = ours[0].read_bytes()
    write_mds_index(tmp_path / "ours", [{"basename": ours[0].name, "samples": len(docs), "bytes": len(raw),
                                         "sha256": hashlib.sha256(raw).hexdigest()}], np.dtype(np.uint16))
    lines = [json.dumps({"id": d[0], "component": d[1], "text": d[2], "tokens": [*map(int, d[3]), 7], "dtype": "uint16"})
             for d in docs]
    (tmp_path / "docs.jsonl").write_text("\n".join(lines) + "\n")
    run_check("mdswriter", tmp_path / "theirs", tmp_path / "docs.jsonl")
    assert (tmp_path / "theirs" / "shard.00000.mds").read_bytes() == ours[0].read_bytes()
    theirs_index = json.loads((tmp_path / "theirs" / "index.json").read_text())
    ours_index = json.loads((tmp_path / "ours" / "index.json").read_text())
    ours_index["shards"][0]["raw_data"]["basename"] = "shard.00000.mds"
    assert ours_index == theirs_index
    assert [d["tokens"].tolist() for d in read_mds_shard(ours[0])] == [[*map(int, d[3]), 7] for d in docs]


@pytest.mark.timeout(600)
def test_litgpt_snippet_mixes_the_numpy_export(built, tmp_path):
    _, cfg, _ = built
    out = tmp_path / "np"
    m = run_export(cfg, _weights(cfg), out, "numpy", tokens=20_000, mode="reference", shard_tokens=4_000)
    seen = run_check("litgpt", out, tmp_path / "litdata")
    tokens = _by_component(m, "tokens")
    for comp in _weights(cfg):  # litdata holds every token of the part, in blocks of 33
        assert seen["parts"][comp]["blocks"] == tokens[comp] // 33, (comp, seen["parts"][comp])
    first = next(s for s in m["shards"] if s["component"] == "c00")
    assert seen["parts"]["c00"]["first"] == np.fromfile(out / first["files"][0]["path"], dtype=np.uint16)[:33].tolist()
    assert seen["drawn_shapes"] == [[33]]
    snippet = (out / "trainer" / "load_litgpt.py").read_text()
    assert all(f"'{c}': {s['share']}" in snippet for c, s in m["components"].items())  # token shares


@pytest.mark.timeout(600)
def test_torchtitan_snippet_feeds_its_interleaved_loader(built, tmp_path):
    _, cfg, _ = built
    out = tmp_path / "pq"
    m = run_export(cfg, _weights(cfg), out, "parquet", tokens=20_000, mode="reference", shard_tokens=4_000)
    tokenizer_dir = tmp_path / "tokenizer"
    tokenizer_dir.mkdir()
    shutil.copy(cfg.workspace_dir / "tokens" / "extra" / "tokenizer.json", tokenizer_dir)
    seen = run_check("torchtitan", out, tokenizer_dir)
    assert seen["sources"] == [f"mixforge_{c}" for c in sorted(_weights(cfg))]
    assert seen["weights"] == [m["components"][c]["share"] for c in sorted(_weights(cfg))]
    assert seen["batches"] == 5 and seen["input_shape"] == [4, 64] and seen["label_shape"] == [4, 64]
    assert seen["max_token"] < m["tokenizer"]["vocab_size"]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_hf_snippet_interleaves_by_document_probability(built, tmp_path, fmt):
    _, cfg, _ = built
    out = tmp_path / fmt
    m = run_export(cfg, _weights(cfg), out, fmt, tokens=20_000, mode="reference", shard_tokens=4_000)
    sys.path.insert(0, str(out / "trainer"))
    try:
        sys.modules.pop("load_hf_datasets", None)
        snippet = importlib.import_module("load_hf_datasets")
        ds = snippet.build()
    finally:
        sys.path.remove(str(out / "trainer"))
    probs = {c: s["document_probability"] for c, s in m["components"].items()}
    assert snippet.PROBABILITIES == probs
    drawn = {c: ds["component"].count(c) for c in probs}
    assert all(drawn[c] >= s["documents"] for c, s in m["components"].items())  # all_exhausted: each seen
    assert {d for d in ds["id"]} == {i for s in m["shards"] for i in _shard_ids(out, s, fmt)}
    # the card's YAML header has one config per component, whose data_files are that component's shards
    header = yaml.safe_load((out / "README.md").read_text().split("---\n")[1])
    configs = {c["config_name"]: c["data_files"][0]["path"] for c in header["configs"]}
    assert set(configs) == {"default", *probs}
    for comp in probs:
        expected = {f["path"] for s in m["shards"] if s["component"] == comp for f in s["files"]}
        assert {p.relative_to(out).as_posix() for p in out.glob(configs[comp])} == expected


def _shard_ids(out, shard, fmt):
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return pq.read_table(out / shard["files"][0]["path"], columns=["id"]).column("id").to_pylist()
    import zstandard

    raw = zstandard.decompress((out / shard["files"][0]["path"]).read_bytes(), max_output_size=1 << 30)
    return [json.loads(line)["id"] for line in raw.decode().splitlines()]
