"""The embedding fast paths on real documents (CPU): the int8 backend's vectors stay close to the
full-precision ones, and the pipelined path (tokenising ahead of the model, used on CUDA) gives
the plain path's vectors."""

import json

import numpy as np
import pytest
import zstandard

from conftest import SLICE
from mixforge.config import EmbedConfig
from mixforge.demo import DEMO_DIR
from mixforge.pipelines.embed.stage import Encoder


def demo_texts(per_label: int) -> list[str]:
    """The first `per_label` documents of every demo source: prose, code, reference, dialogue."""
    texts = []
    for f in sorted((DEMO_DIR / "corpus").glob("*.jsonl.zst")):
        lines = zstandard.decompress(f.read_bytes(), max_output_size=1 << 30).decode().splitlines()
        texts += [json.loads(l)["text"] for l in lines[:per_label]]
    return texts


@pytest.fixture(scope="module")
def full() -> Encoder:
    return Encoder(EmbedConfig(max_tokens=128))


@pytest.mark.timeout(300)
def test_int8_vectors_are_as_good_as_full_precision_and_the_model_is_cached(full, tmp_path):
    texts = demo_texts(3)  # 24 documents over 8 sources
    fast = Encoder(EmbedConfig(max_tokens=128, backend="int8"), cache_dir=tmp_path)
    built = list(tmp_path.glob("int8-*/model.onnx"))
    assert len(built) == 1 and not list(tmp_path.glob(".int8-*"))  # one finished folder, no leftovers
    cos = np.sum(full.encode(texts) * fast.encode(texts), axis=1)
    assert cos.mean() >= 0.99 and cos.min() >= 0.95, (cos.mean(), cos.min())
    # a short text padded in a batch of long ones: the exported graph keeps the attention mask
    short = ["In the beginning God created the heaven and the earth."]
    alone, padded = fast.encode(short)[0], fast.encode(short + texts[:4])[0]
    assert alone @ padded > 0.98 and alone @ full.encode(short)[0] > 0.98
    stamp = built[0].stat().st_mtime_ns
    Encoder(EmbedConfig(max_tokens=64, backend="int8"), cache_dir=tmp_path)  # other runtime settings: same build
    assert built[0].stat().st_mtime_ns == stamp and len(list(tmp_path.glob("int8-*"))) == 1


def test_pipelined_path_gives_the_plain_vectors(full):
    """On CPU the pipelined path (what CUDA runs) is forced on: same batches, same vectors."""
    texts = demo_texts(2) + [json.loads(l)["text"] for l in (SLICE / "code.jsonl").read_text().splitlines()[:3]]
    blocks = [texts[:7], texts[7:], ["short one", "another short text"]]
    expected = [full.encode(b) for b in blocks]
    try:
        full.pipelined, full.batch_size = True, 4  # several batches per block
        got = list(full.encode_blocks(iter(blocks)))
    finally:
        full.pipelined, full.batch_size = False, 64
    assert [g.shape for g in got] == [e.shape for e in expected]
    for g, e in zip(got, expected):
        assert np.allclose(g, e, atol=1e-5)
    chunked = Encoder(EmbedConfig(max_tokens=32, pooling="mean_chunks", max_chunks=3))
    chunked.pipelined = True
    assert np.allclose(np.concatenate(list(chunked.encode_blocks([texts[:5]]))), chunked.encode(texts[:5]), atol=1e-5)


def test_pipelined_path_raises_the_tokenizer_thread_error(full):
    def blocks():
        yield ["fine"]
        raise RuntimeError("reader broke")

    full.pipelined = True
    try:
        with pytest.raises(RuntimeError, match="reader broke"):
            list(full.encode_blocks(blocks()))
    finally:
        full.pipelined = False
