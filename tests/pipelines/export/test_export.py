"""Exports read back by the real readers (Hugging Face datasets, datatrove's DatatroveFolderDataset,
a Megatron index reader checked byte for byte against datatrove's Megatron writer), manifest
schema, verify catching damage, determinism, and the bad-input cases."""

import json
import subprocess

import numpy as np
import polars as pl
import pytest

from conftest import mixforge_cmd, private_built
from mixforge.errors import MixforgeError
from mixforge.pipelines.export.manifest import validate_manifest
from mixforge.pipelines.export.verify import verify_export
from mixforge.pipelines.export.write import run_export
from mixforge.pipelines.export.formats import read_megatron_index, write_shard


def _weights(cfg):
    comps = sorted(json.loads((cfg.workspace_dir / "tokens" / "_stage.json").read_text())["counts"]["components"])
    return {c: w for c, w in zip(comps, [0.4, 0.3, 0.2, 0.1])}


@pytest.mark.timeout(600)
def test_parquet_export_loads_with_hf_datasets_and_is_deterministic(built, tmp_path):
    from datasets import load_dataset

    _, cfg, _ = built
    m = run_export(cfg, _weights(cfg), tmp_path / "a", "parquet", tokens=20_000, shard_tokens=6_000)
    validate_manifest(m)
    assert len(m["shards"]) >= 3 and verify_export(tmp_path / "a") == []
    ds = load_dataset("parquet", data_files=sorted(str(p) for p in (tmp_path / "a").glob("*.parquet")), split="train")
    assert len(ds) == sum(s["documents"] for s in m["shards"]) and sum(ds["tokens"]) == m["tokens"]
    shares = {c: s["share"] for c, s in m["components"].items()}
    for c, w in _weights(cfg).items():
        assert abs(shares[c] - w) < 0.08, shares  # whole documents: shares within a document's size of the weights
    again = run_export(cfg, _weights(cfg), tmp_path / "b", "parquet", tokens=20_000, shard_tokens=6_000)
    assert [s["files"][0]["sha256"] for s in again["shards"]] == [s["files"][0]["sha256"] for s in m["shards"]]
    card = (tmp_path / "a" / "README.md").read_text()
    assert card.startswith("---\n") and "size_categories" in card and "| component | share |" in card
    assert "## How to train on it" in card and "trainer/load_hf_datasets.py" in card
    assert "| filter | 128 |" in card and "## Search" in card  # the ledger in pipeline order, from the template
    assert (tmp_path / "a" / "mixture.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.timeout(600)
def test_datatrove_export_reads_with_datatrove(built, tmp_path):
    from datatrove.utils.dataset import DatatroveFolderDataset

    _, cfg, _ = built
    m = run_export(cfg, _weights(cfg), tmp_path / "dt", "datatrove", tokens=20_000, mode="reference", shard_tokens=4_000)
    assert {s["component"] for s in m["shards"]} == set(_weights(cfg))
    ds = DatatroveFolderDataset(str(tmp_path / "dt"), seq_len=63, filename_pattern="**/*.ds", token_size=2)
    assert len(ds) == sum(s["tokens"] // 64 for s in m["shards"])
    assert ds[0]["input_ids"].shape[0] == 64
    assert set(m["trainer"]["nanotron_dataset_weights"]) == set(_weights(cfg))
    assert verify_export(tmp_path / "dt") == []


def test_megatron_files_match_datatrove_megatron_writer_byte_for_byte(tmp_path):
    from datatrove.pipeline.tokens.megatron_tokenizer import MegatronTokenizedFile

    rng = np.random.default_rng(0)
    docs = [(f"d{i}", "c", "", rng.integers(0, 1000, size=rng.integers(1, 50))) for i in range(30)]
    ours = write_shard("megatron", tmp_path / "ours" / "x", docs, eos=0, dtype=np.dtype(np.uint16), tokenizer_name="t")
    theirs = MegatronTokenizedFile(str(tmp_path / "theirs"), "x", token_size=2)
    for d in docs:
        theirs.write(list(d[3]) + [0])
    theirs.close()
    for suffix in (".bin", ".idx"):
        assert (tmp_path / "ours" / f"x{suffix}").read_bytes() == (tmp_path / "theirs" / f"x{suffix}").read_bytes()
    idx = read_megatron_index(ours[1])
    assert idx["lengths"].tolist() == [len(d[3]) + 1 for d in docs] and idx["version"] == 1


@pytest.mark.timeout(600)
def test_verify_catches_damage_and_the_cli_reports_it(built, tmp_path):
    _, cfg, _ = built
    out = tmp_path / "mg"
    m = run_export(cfg, _weights(cfg), out, "megatron", tokens=20_000, shard_tokens=5_000)
    blend = (out / "trainer" / "megatron_data_path.txt").read_text().split()
    assert blend[0] == "--data-path" and sum(map(float, blend[1::2])) == pytest.approx(1, abs=1e-4)
    ref = run_export(cfg, _weights(cfg), tmp_path / "mgr", "megatron", tokens=20_000, shard_tokens=3_000, mode="reference")
    pairs = ref["trainer"]["megatron_data_path"].split()[1:]
    for comp, s in ref["components"].items():  # each component's prefixes add up to its token share
        assert sum(float(w) for w, path in zip(pairs[::2], pairs[1::2]) if path.startswith(comp + "/")) == pytest.approx(s["share"], abs=1e-4)
    from megatron.core.datasets.indexed_dataset import IndexedDataset  # Megatron-Core's own reader, on CPU

    read = [IndexedDataset(str(out / s["path"])) for s in m["shards"]]
    assert sum(int(d.sequence_lengths.sum()) for d in read) == m["tokens"]
    assert [len(d) for d in read] == [s["documents"] for s in m["shards"]]
    shard = out / m["shards"][0]["files"][0]["path"]
    raw = bytearray(shard.read_bytes())
    raw[10] ^= 0xFF
    shard.write_bytes(bytes(raw))
    (out / m["shards"][1]["files"][1]["path"]).unlink()
    problems = verify_export(out)
    assert any("sha256" in p for p in problems) and any("missing" in p for p in problems)
    run = subprocess.run(mixforge_cmd() + ["verify", str(out)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 1 and "mismatch" in run.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["shards"][2]["files"][0]["path"] = "../../etc/passwd"
    (out / "manifest.json").write_text(json.dumps(manifest))
    assert any("outside the export folder" in p for p in verify_export(out))


@pytest.mark.timeout(600)
def test_bad_input(built, tmp_path):
    config, cfg, _ = built
    w = _weights(cfg)
    with pytest.raises(MixforgeError, match="known: "):
        run_export(cfg, {"poetry": 1.0}, tmp_path / "x", "numpy")
    with pytest.raises(MixforgeError, match="cannot be negative"):
        run_export(cfg, {**w, next(iter(w)): -1.0}, tmp_path / "x", "numpy")
    with pytest.raises(MixforgeError, match="is nan: weights must be finite"):
        run_export(cfg, {**w, next(iter(w)): float("nan")}, tmp_path / "x", "mds")
    with pytest.raises(MixforgeError, match="epochs"):
        run_export(cfg, w, tmp_path / "x", "numpy", tokens=10**9)
    with pytest.warns(UserWarning, match="normalised"):
        m = run_export(cfg, {c: v * 10 for c, v in w.items()}, tmp_path / "np", "numpy", tokens=10_000)
    assert m["trainer"]["olmo_core_source_mixture"]["dtype"] == "uint16"
    assert (tmp_path / "np").stat().st_size and verify_export(tmp_path / "np") == []
    with pytest.raises(MixforgeError, match="exists: pass --overwrite"):
        run_export(cfg, w, tmp_path / "np", "numpy", tokens=10_000)
    run_export(cfg, w, tmp_path / "np", "numpy", tokens=12_000, overwrite=True)
    assert json.loads((tmp_path / "np" / "manifest.json").read_text())["token_budget"] == 12_000
    assert not list(tmp_path.glob(".np.*"))  # no temporary folder left behind
    mix = tmp_path / "mix.yaml"
    mix.write_text("poetry: 1\n")
    run = subprocess.run(mixforge_cmd() + ["export", str(mix), "-c", str(config), "--out", str(tmp_path / "y")],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "Traceback" not in run.stderr and "poetry" in run.stderr
    assert not (tmp_path / "y").exists()


@pytest.mark.timeout(300)
def test_a_killed_export_never_looks_complete(built, tmp_path):
    import os
    import signal
    import time

    config, cfg, _ = built
    (tmp_path / "mix.yaml").write_text("".join(f"{c}: {w}\n" for c, w in _weights(cfg).items()))
    out = tmp_path / "killed"
    cmd = mixforge_cmd() + ["export", str(tmp_path / "mix.yaml"), "-c", str(config), "--out", str(out),
                            "--format", "jsonl", "--shard-tokens", "20"]  # thousands of tiny shards: a slow export
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not list(tmp_path.glob(".killed.partial-*/shard-00010.jsonl.zst")) and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the export finished before it could be interrupted"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not out.exists()  # the half-written shards sit in a hidden temporary folder only
    run = subprocess.run(cmd[:-2] + ["--shard-tokens", "20000"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert verify_export(out) == [] and not list(tmp_path.glob(".killed.partial-*"))


def test_card_carries_the_search_and_its_verification(built, tmp_path):
    _, cfg, _ = built
    search = {"strategy": "regmix", "objective": "bpb_reference", "predicted": 2.87813, "fit": {"spearman": 0.9391, "runs": 16}}
    verified = {"results": {"proposal": {"mean": 2.93512, "std": 0.0071, "predicted": 2.87813},
                            "uniform": {"mean": 2.98921, "std": 0.0008, "predicted": None}}}
    run_export(cfg, _weights(cfg), tmp_path / "s", "jsonl", tokens=10_000, provenance={"search": search, "verified": verified})
    card = (tmp_path / "s" / "README.md").read_text()
    assert "Strategy `regmix`, target `bpb_reference`, predicted 2.8781; predictor cross-validated Spearman 0.939 over 16" in card
    assert "| proposal | 2.9351 | 0.0071 | 2.8781 |" in card and "| uniform | 2.9892 | 0.0008 |  |" in card
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert manifest["provenance"]["verified"] == verified


def test_export_reuses_the_tokens_stage_shards_and_checks_the_texts(built, tmp_path):
    import polars as pl

    from mixforge.pipelines.export.plan import load_table
    from mixforge.workspace import Workspace

    _, cfg = private_built(built, tmp_path)  # its document index is changed below
    ws = Workspace(cfg.workspace_dir)
    reused = load_table(ws, tmp_path / "a")
    fresh = load_table(ws, tmp_path / "b", reuse_tokens=False)
    n = reused.frame.height
    assert reused.frame.select("id", "component", "source").equals(fresh.frame.select("id", "component", "source"))
    assert not (tmp_path / "a").exists()  # every document's tokens were reused: nothing tokenized again
    assert all(np.array_equal(reused.tokens(i), fresh.tokens(i)) for i in range(n))
    assert {reused.tokens(i).dtype.name for i in range(n)} == {"uint16"} and {fresh.tokens(i).dtype.name for i in range(n)} == {"int64"}
    docs = reused.documents(np.arange(n))  # what token formats read: ids and tokens, no texts held
    assert {d[2] for d in docs} == {""} and [d[0] for d in docs] == reused.frame["id"].to_list()
    # a text that no longer hashes as the tokens stage saw it is tokenized again, not reused
    index_path = cfg.workspace_dir / "tokens" / "extra" / "documents.parquet"
    original = index_path.read_bytes()
    first = reused.frame["id"][0]
    try:
        index = pl.read_parquet(index_path)
        index.with_columns(pl.when(pl.col("id") == first).then(pl.lit(0, pl.UInt64)).otherwise(pl.col("text_hash"))
                           .alias("text_hash")).write_parquet(index_path)
        again = load_table(ws, tmp_path / "c")
    finally:
        index_path.write_bytes(original)
    assert again.tokens(0).dtype.name == "int64" and np.array_equal(again.tokens(0), fresh.tokens(0))
    assert {again.tokens(i).dtype.name for i in range(1, n)} == {"uint16"}
    assert all(np.array_equal(again.tokens(i), fresh.tokens(i)) for i in range(n))


def test_a_search_folder_names_its_latest_proposal(tmp_path):
    from mixforge.mixers.mixture_file import read_mixture

    search = tmp_path / "search"
    (search / "regmix-bpb").mkdir(parents=True)
    proposal = {"strategy": "regmix", "objective": "bpb", "predicted": 2.9, "fit": None, "runs_used": 16,
                "weights": {"a": 0.25, "b": 0.75}}
    (search / "regmix-bpb" / "proposal.json").write_text(json.dumps(proposal))
    (search / "latest.json").write_text(json.dumps({"folder": "regmix-bpb"}))
    for path in (search, search / "regmix-bpb", search / "regmix-bpb" / "proposal.json"):
        weights, provenance = read_mixture(path)
        assert weights == {"a": 0.25, "b": 0.75} and provenance["search"]["runs_used"] == 16


@pytest.mark.timeout(600)
def test_texts_gathered_out_of_core_are_each_documents_own(built, tmp_path):
    """The global shuffle draws every output shard from every prune shard: each row's text must be
    its own document's, repeats included, and no scratch file may stay in the export."""
    from mixforge.pipelines.tokens.tokenizer import workspace_frames

    _, cfg, _ = built
    texts = pl.concat(list(workspace_frames(cfg.workspace_dir))).select("id", "text", "component")
    weights = {c: w for c, w in zip(sorted(_weights(cfg)), [0.85, 0.05, 0.05, 0.05])}  # one component repeats
    m = run_export(cfg, weights, tmp_path / "e", "parquet", tokens=60_000, shard_tokens=5_000)
    rows = pl.concat([pl.read_parquet(tmp_path / "e" / s["files"][0]["path"]) for s in m["shards"]])
    assert len(m["shards"]) >= 5 and rows.height == sum(c["documents"] for c in m["components"].values())
    assert rows["id"].n_unique() < rows.height  # repeats
    joined = rows.join(texts, on="id", how="left", suffix="_kept")
    assert joined["text_kept"].null_count() == 0
    assert (joined["text"] == joined["text_kept"]).all() and (joined["component"] == joined["component_kept"]).all()
    assert not list((tmp_path / "e").rglob("_work")) and verify_export(tmp_path / "e") == []


def test_reference_mode_writes_each_document_once(built, tmp_path):
    _, cfg, _ = built
    w = _weights(cfg)
    small = min(w, key=lambda c: json.loads((cfg.workspace_dir / "tokens" / "_stage.json").read_text())["counts"]["components"][c]["train_tokens"])
    weights = {c: (0.7 if c == small else 0.1) for c in w}  # the smallest component needs more than one epoch
    ref = run_export(cfg, weights, tmp_path / "ref", "parquet", tokens=40_000, mode="reference", shard_tokens=10**9)
    mat = run_export(cfg, weights, tmp_path / "mat", "parquet", tokens=40_000, shard_tokens=10**9)
    assert ref["components"][small]["epochs"] > 1 and ref["components"] == mat["components"]
    ids = {s["component"]: pl.read_parquet(tmp_path / "ref" / s["files"][0]["path"])["id"].to_list() for s in ref["shards"]}
    assert len(ids[small]) == len(set(ids[small])) == ref["components"][small]["available_documents"]
    assert ref["tokens"] < ref["mixture_tokens"] == mat["mixture_tokens"] == mat["tokens"]
    mixed = pl.read_parquet(tmp_path / "mat" / mat["shards"][0]["files"][0]["path"])
    assert mixed.filter(pl.col("component") == small)["id"].n_unique() < mixed.filter(pl.col("component") == small).height
    assert "written once" in (tmp_path / "ref" / "README.md").read_text() and verify_export(tmp_path / "ref") == []


@pytest.mark.timeout(300)
def test_cli_export_names_its_loaders_and_verifies(built, tmp_path):
    config, cfg, _ = built
    (tmp_path / "mix.yaml").write_text("".join(f"{c}: {w}\n" for c, w in _weights(cfg).items()))
    out = tmp_path / "cli-mds"
    run = subprocess.run(mixforge_cmd() + ["export", str(tmp_path / "mix.yaml"), "-c", str(config), "--out", str(out),
                                           "--format", "mds", "--mode", "reference", "--tokens", "15000"],
                         capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "trainer/load_mosaicml_streaming.py" in run.stdout and "trainer/mosaicml_streams.json" in run.stdout
    check = subprocess.run(mixforge_cmd() + ["verify", str(out)], capture_output=True, text=True, timeout=120)
    assert check.returncode == 0 and "every shard matches" in check.stdout


def test_card_lists_each_source_with_its_licence(built, tmp_path):
    import yaml

    _, cfg, _ = built
    same = cfg.model_copy(deep=True)
    for s in same.sources:
        s.license = "CC0-1.0"
    m = run_export(same, _weights(cfg), tmp_path / "a", "parquet", tokens=15_000)
    assert sum(s["tokens"] for s in m["sources"].values()) == m["mixture_tokens"]
    assert sum(s["documents"] for s in m["sources"].values()) == sum(c["documents"] for c in m["components"].values())
    card = (tmp_path / "a" / "README.md").read_text()
    assert yaml.safe_load(card.split("---\n")[1])["license"] == "cc0-1.0"
    top = next(iter(m["sources"]))
    assert f"| {top} | {m['sources'][top]['share']:.3f} |" in card
    mixed = cfg.model_copy(deep=True)
    mixed.sources[0].license = "MIT"  # the others give none
    run_export(mixed, _weights(cfg), tmp_path / "b", "parquet", tokens=15_000)
    card = (tmp_path / "b" / "README.md").read_text()
    assert yaml.safe_load(card.split("---\n")[1])["license"] == "other" and "not given (set `license`" in card


def test_a_schedule_exports_one_folder_per_phase_and_verifies(built, tmp_path):
    config, cfg, _ = built
    first = _weights(cfg)
    second = dict(zip(first, reversed(list(first.values()))))
    schedule = [{"start_fraction": 0.0, "end_fraction": 0.25, "weights": first},
                {"start_fraction": 0.25, "end_fraction": 1.0, "weights": second}]
    (tmp_path / "fit.json").write_text(json.dumps({"proposal": first, "fit": {}, "schedule": schedule}))
    out = tmp_path / "schedule-export"
    cmd = mixforge_cmd() + ["export", str(tmp_path / "fit.json"), "-c", str(config), "--out", str(out), "--format", "megatron"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert run.returncode == 2 and "needs a token budget" in run.stderr and "Traceback" not in run.stderr
    run = subprocess.run(cmd + ["--tokens", "16000"], capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-2000:]
    record = json.loads((out / "schedule.json").read_text())
    assert [p["folder"] for p in record["phases"]] == ["phase0", "phase1"]
    for phase, wanted in zip(record["phases"], schedule):
        manifest = json.loads((out / phase["folder"] / "manifest.json").read_text())
        assert manifest["token_budget"] == round(16000 * (wanted["end_fraction"] - wanted["start_fraction"]))
        total = sum(wanted["weights"].values())
        assert manifest["weights"] == pytest.approx({c: w / total for c, w in wanted["weights"].items()}, abs=1e-6)
    assert record["phases"][0]["end_token"] == record["phases"][1]["start_token"]
    check = subprocess.run(mixforge_cmd() + ["verify", str(out)], capture_output=True, text=True, timeout=120)
    assert check.returncode == 0 and "every shard matches" in check.stdout
    manifest = out / "phase1" / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"seed"', '"seed" ', 1))  # same content, other bytes
    check = subprocess.run(mixforge_cmd() + ["verify", str(out)], capture_output=True, text=True, timeout=120)
    assert check.returncode == 1 and "phase1/manifest.json: sha256 differs" in check.stdout + check.stderr
