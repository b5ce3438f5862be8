"""Proxy-training data: tokenizer, token shards and the mixture sampler, on the real slice."""

from __future__ import annotations

from conftest import SLICE
import json
import math
import warnings

import numpy as np
import polars as pl
import pytest

from mixforge.errors import ConfigError, MixforgeError
from mixforge.proxy_training.data import MixtureSampler, load_shards
from mixforge.pipelines.tokens.tokenizer import (
    EOS,
    load_tokenizer,
    tokenize_components,
    tokenize_workspace,
    tokenizer_identity,
    train_default_tokenizer,
)
from mixforge.workspace import Workspace, atomic_write_parquet



def slice_docs() -> list[tuple[str, str, str]]:
    """(label, id, text) for the 128 slice documents, labels as components."""
    docs = []
    for f in sorted(SLICE.glob("*.jsonl")):
        for line in f.read_text(encoding="utf-8").splitlines():
            rec = json.loads(line)
            docs.append((f.stem, rec["id"], rec["text"]))
    return docs


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict:
    """The default tokenizer trained on the slice (small vocab for speed) and its shards."""
    root = tmp_path_factory.mktemp("proxy")
    docs = slice_docs()
    tok_path = root / "tok" / "tokenizer.json"
    train_default_tokenizer([t for _, _, t in docs], tok_path, vocab_size=2048, seed=0)
    meta = tokenize_components(((c, t) for c, _, t in docs), tok_path, root / "shards")
    return {"root": root, "docs": docs, "tok_path": tok_path, "meta": meta, "shards": load_shards(root / "shards")}


@pytest.mark.timeout(90)
def test_shards_round_trip(built):
    tok = load_tokenizer(built["tok_path"])
    eos = tok.token_to_id(EOS)
    assert tok.get_vocab_size() <= 2048
    meta, shards, docs = built["meta"], built["shards"], built["docs"]
    assert sorted(meta) == sorted({c for c, _, _ in docs})
    bible = [t for c, _, t in docs if c == "bible"]
    m = meta["bible"]
    assert m["documents"] == len(bible) == 16 and m["dtype"] == "uint16" and shards["bible"].dtype == np.uint16
    assert m["tokens"] == len(shards["bible"]) and m["tokenizer_sha256"] == tokenizer_identity(built["tok_path"])["sha256"]
    # one EOS after each document, documents decode back exactly (byte-level BPE)
    stream = np.asarray(shards["bible"])
    ends = np.flatnonzero(stream == eos)
    assert len(ends) == 16 and ends[-1] == len(stream) - 1
    assert tok.decode(stream[: ends[0]].tolist()) == bible[0]
    assert tok.decode(stream[ends[0] + 1: ends[1]].tolist()) == bible[1]
    code = [t for c, _, t in docs if c == "code"]
    first_code = np.asarray(shards["code"])[: np.flatnonzero(np.asarray(shards["code"]) == eos)[0]]
    assert tok.decode(first_code.tolist()) == code[0]
    # no temp files left behind
    assert not [p for p in (built["root"] / "shards").iterdir() if p.name.startswith(".")]


@pytest.mark.timeout(90)
def test_identity_stable(built, tmp_path):
    a = tokenizer_identity(built["tok_path"])
    assert a == tokenizer_identity(built["tok_path"])
    assert a["name"] == "tok" and a["vocab_size"] <= 2048 and len(a["sha256"]) == 64
    # training is seeded and deterministic: the same texts give the same file
    again = tmp_path / "tokenizer.json"
    train_default_tokenizer([t for _, _, t in built["docs"]], again, vocab_size=2048, seed=0)
    assert tokenizer_identity(again)["sha256"] == a["sha256"]


@pytest.mark.timeout(90)
def test_truncation_and_padding_switched_off(built, tmp_path):
    tok = load_tokenizer(built["tok_path"])
    tok.enable_truncation(max_length=16)  # like MiniLM's tokenizer.json (max_length 128)
    tok.enable_padding(length=16)
    path = tmp_path / "minilm_like.json"
    tok.save(str(path))
    assert json.loads(path.read_text())["truncation"] is not None
    loaded = load_tokenizer(path)
    assert loaded.truncation is None and loaded.padding is None
    text = built["docs"][0][2]
    assert len(loaded.encode(text).ids) > 16


@pytest.mark.timeout(90)
def test_corrupt_tokenizer_names_file(tmp_path):
    bad = tmp_path / "tokenizer.json"
    bad.write_text('{"version": "1.0", "model": {"type": "BPE", "vocab": ')
    with pytest.raises(ConfigError, match="tokenizer.json"):
        load_tokenizer(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_tokenizer(tmp_path / "missing.json")


@pytest.mark.timeout(90)
def test_tokenize_workspace(built, tmp_path):
    """Prune docs joined with components/<shard>.parquet give the same shards as the (component, text) pairs."""
    ws = Workspace(tmp_path / "ws")
    docs = built["docs"]
    frame = pl.DataFrame({"id": [i for _, i, _ in docs], "text": [t for _, _, t in docs], "source": [c for c, _, _ in docs]})
    atomic_write_parquet(ws.docs_dir("prune") / "000.parquet", frame)
    comps = frame.select("id", pl.col("source").alias("component"), pl.lit(0, dtype=pl.Int32).alias("cluster"))
    atomic_write_parquet(ws.stage_dir("components") / "extra" / "components" / "000.parquet", comps)
    meta = tokenize_workspace(ws, built["tok_path"], tmp_path / "shards")
    assert {c: m["tokens"] for c, m in meta.items()} == {c: m["tokens"] for c, m in built["meta"].items()}
    shards = load_shards(tmp_path / "shards")
    assert np.array_equal(shards["legal"], built["shards"]["legal"])


WEIGHTS = {"bible": 0.3, "code": 0.2, "legal": 0.15, "manuals": 0.15, "quotes": 0.1, "dictionary": 0.1}


def sampler(shards, weights=WEIGHTS, seed=0, seq_len=64, budget=200 * 64, **kw) -> MixtureSampler:
    return MixtureSampler(shards, weights, seq_len=seq_len, token_budget=budget, seed=seed, **kw)


@pytest.mark.timeout(90)
def test_sampler_proportions(built):
    s = sampler(built["shards"])
    batches = list(s.batches(32))
    assert len(s) == 200 and sum(len(b) for b in batches) == 200
    assert all(b.dtype == np.int64 and b.shape[1] == 65 for b in batches)
    summary = s.summary()
    for comp, row in summary["components"].items():
        assert abs(row["share"] - WEIGHTS.get(comp, 0.0)) <= 0.02, comp
    assert summary["components"]["python_docs"]["sequences"] == 0  # left out = weight 0
    # the interleaving keeps every prefix near the weights too (first 50 sequences)
    head = s.components()[:50]
    for comp, w in WEIGHTS.items():
        assert abs(head.count(comp) / 50 - w) <= 0.03, comp
    # each sequence is a real window of its component's stream
    for i in (0, 7, 199):
        stream = np.asarray(built["shards"][s.components()[i]]).astype(np.int64)
        start = int(s.starts[i])
        expect = np.take(stream, np.arange(start, start + 65), mode="wrap")
        assert np.array_equal(s.sequence(i), expect)


@pytest.mark.timeout(90)
def test_sampler_multi_phase_schedule(built):
    early, late = {"bible": 0.8, "code": 0.2}, {"bible": 0.2, "code": 0.8}
    s = sampler(built["shards"], [early, late], budget=201 * 64)
    comps = s.components()
    assert len(comps) == 201 and s.phases == [{**dict.fromkeys(s.names, 0.0), **early}, {**dict.fromkeys(s.names, 0.0), **late}]
    first, second = comps[:101], comps[101:]  # 201 sequences split 101 / 100
    assert first.count("bible") == 81 and second.count("code") == 80  # each phase in its own proportions
    assert s.weights["bible"] == pytest.approx(0.5) and s.summary()["phases"] == s.phases
    # one window sequence per component across phases: no window repeats within an epoch
    bible = s.starts[np.array(comps) == "bible"]
    per_epoch = len(built["shards"]["bible"]) // 64
    assert len(set(bible[:per_epoch].tolist())) == min(len(bible), per_epoch)
    # a schedule of one phase is the static mixture, sequence for sequence
    one, static = sampler(built["shards"], [WEIGHTS]), sampler(built["shards"], WEIGHTS)
    assert one.components() == static.components() and np.array_equal(one.starts, static.starts)


@pytest.mark.timeout(90)
def test_sampler_deterministic(built):
    a = np.concatenate(list(sampler(built["shards"], seed=1).batches(50)))
    b = np.concatenate(list(sampler(built["shards"], seed=1).batches(50)))
    c = np.concatenate(list(sampler(built["shards"], seed=2).batches(50)))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.timeout(90)
def test_sampler_bad_weights(built):
    shards = built["shards"]
    with pytest.raises(MixforgeError, match=r"unknown component\(s\) wiki.*known: bible, code"):
        sampler(shards, {"bible": 0.5, "wiki": 0.5})
    with pytest.raises(MixforgeError, match="'code'.*negative"):
        sampler(shards, {"bible": 1.2, "code": -0.2})
    with pytest.raises(MixforgeError, match="'code'.*nan"):
        sampler(shards, {"bible": 1.0, "code": math.nan})
    with pytest.warns(UserWarning, match="sum to 2"):
        s = sampler(shards, {"bible": 1.0, "code": 1.0})
    assert s.weights["bible"] == pytest.approx(0.5) and s.weights["code"] == pytest.approx(0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sampler(shards, {"bible": 0.7, "code": 0.3})  # sums to 1: no warning


@pytest.mark.timeout(90)
def test_sampler_epoch_cap(built):
    shards = built["shards"]
    have = len(shards["quotes"])
    # 10 epochs of quotes is allowed and recorded
    s = sampler(shards, {"quotes": 1.0}, budget=10 * have)
    assert 9.9 <= s.summary()["components"]["quotes"]["epochs"] <= 10.1
    with pytest.raises(MixforgeError) as err:
        sampler(shards, {"quotes": 1.0}, budget=20 * have)
    msg = str(err.value)
    assert "quotes" in msg and f"{have:,}" in msg and f"{20 * have:,}" in msg and "20.0 epochs" in msg and "15" in msg
