"""Proxy training on real text: a real learning signal on CPU in seconds."""

import json

import pytest
import torch

from conftest import SLICE, slice_token_streams
from mixforge.proxy_training.data import MixtureSampler
from mixforge.proxy_training.evaluate import bits_per_byte, choice_accuracy, heldout_loss
from mixforge.proxy_training.model import preset
from mixforge.proxy_training.train import TrainConfig, checkpoints, load_checkpoint, lr_at, train

SEQ = 64


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """bible and code slices tokenized with a small BPE trained on them: 90% train, 10% held out."""
    tok, streams = slice_token_streams(tmp_path_factory.mktemp("tok"))
    split = {c: int(len(s) * 0.9) for c, s in streams.items()}
    return tok, {c: s[: split[c]] for c, s in streams.items()}, {c: s[split[c]:] for c, s in streams.items()}


def _train(tok, train_streams, weights, steps, seed=0):
    sampler = MixtureSampler(train_streams, weights, SEQ, token_budget=steps * 8 * SEQ, seed=seed)
    cfg = preset("tiny", vocab_size=tok.get_vocab_size(), block_size=SEQ)
    return train(cfg, TrainConfig(lr=3e-3, warmup_steps=5, seed=seed, log_every=5), sampler.batches(8), steps)


@pytest.mark.timeout(180)
def test_a_proxy_learns_what_it_is_fed(shards):
    tok, train_streams, held = shards
    on_bible, r_bible = _train(tok, train_streams, {"bible": 1.0, "code": 0.0}, 80)
    on_code, _ = _train(tok, train_streams, {"bible": 0.0, "code": 1.0}, 80)
    def loss(model, text):
        return heldout_loss(model, held[text], SEQ)[0]

    assert loss(on_bible, "bible") < loss(on_code, "bible") - 0.3
    assert loss(on_code, "code") < loss(on_bible, "code") - 0.3
    assert r_bible.final_loss < r_bible.losses[0][1] * 0.7 and r_bible.tokens == 80 * 8 * SEQ
    assert r_bible.tokens_per_s > 0 and r_bible.non_embedding_params > 1_000_000

    short, _ = _train(tok, train_streams, {"bible": 1.0, "code": 0.0}, 20)
    assert loss(on_bible, "bible") < loss(short, "bible")  # more tokens, lower loss
    mean, scored = heldout_loss(on_bible, held["bible"], SEQ, eos_id=tok.token_to_id("<|endoftext|>"))  # text tokens only
    bpb = bits_per_byte(mean, scored, len(tok.decode(held["bible"].tolist()).encode()))
    assert 0.5 < bpb < 8


@pytest.mark.timeout(120)
def test_training_is_deterministic_for_a_seed(shards):
    tok, train_streams, _ = shards
    _, a = _train(tok, train_streams, {"bible": 0.5, "code": 0.5}, 10, seed=3)
    _, b = _train(tok, train_streams, {"bible": 0.5, "code": 0.5}, 10, seed=3)
    _, c = _train(tok, train_streams, {"bible": 0.5, "code": 0.5}, 10, seed=4)
    assert a.losses == b.losses and a.losses != c.losses


def test_schedules():
    cfg = TrainConfig(lr=1.0, warmup_steps=10, schedule="constant")
    assert lr_at(0, 100, cfg) == pytest.approx(0.1) and lr_at(50, 100, cfg) == 1.0
    cos = TrainConfig(lr=1.0, warmup_steps=10, schedule="cosine", min_lr_ratio=0.1)
    assert lr_at(10, 100, cos) == pytest.approx(1.0) and lr_at(99, 100, cos) == pytest.approx(0.1, abs=1e-3)
    wsd = TrainConfig(lr=1.0, warmup_steps=10, schedule="wsd", decay_fraction=0.2, min_lr_ratio=0.0)
    assert lr_at(79, 100, wsd) == 1.0 and lr_at(90, 100, wsd) == pytest.approx(0.5) and lr_at(100, 100, wsd) == pytest.approx(0.0)


@pytest.mark.timeout(120)
def test_multiple_choice_by_log_likelihood(shards):
    tok, train_streams, held = shards
    model, _ = _train(tok, train_streams, {"bible": 1.0, "code": 0.0}, 80)
    encode = lambda s: tok.encode(s, add_special_tokens=False).ids  # noqa: E731
    chapters = [json.loads(l)["text"].splitlines() for l in (SLICE / "bible.jsonl").read_text().splitlines()[-4:]]
    code = [l for l in json.loads((SLICE / "code.jsonl").read_text().splitlines()[-1])["text"].splitlines() if len(l) > 30]
    # the true next verse against a line of Python: a Bible-trained proxy should pick the verse
    items = [{"context": "\n".join(ch[:3]) + "\n", "choices": [code[i], ch[3]], "gold": 1} for i, ch in enumerate(chapters)]
    assert choice_accuracy(model, encode, items, max_len=SEQ) >= 0.75
    # padded batches score exactly what one row at a time does (long contexts are cut to SEQ)
    many = items * 3 + [{"context": "\n".join(chapters[0]) * 3, "choices": [code[0], "x", chapters[1][0]], "gold": 2}]
    assert choice_accuracy(model, encode, many, max_len=SEQ) == choice_accuracy(model, encode, many, max_len=SEQ, batch_size=1)


@pytest.mark.timeout(180)
def test_checkpoints_resume_to_the_same_model(shards, tmp_path):
    """A run stopped after a checkpoint and started again ends where an uninterrupted run ends."""
    tok, train_streams, _ = shards
    sampler = MixtureSampler(train_streams, {"bible": 0.6, "code": 0.4}, SEQ, token_budget=30 * 8 * SEQ, seed=1)
    model_cfg = preset("tiny", vocab_size=tok.get_vocab_size(), block_size=SEQ)
    cfg = TrainConfig(lr=3e-3, warmup_steps=5, seed=1, log_every=5, checkpoint_every=10)
    whole, r_whole = train(model_cfg, cfg, sampler.batches(8), 30)
    folder = tmp_path / "ckpt"

    def stops_after_25():
        for n, batch in enumerate(sampler.batches(8)):
            if n == 25:
                raise KeyboardInterrupt
            yield batch

    with pytest.raises(KeyboardInterrupt):
        train(model_cfg, cfg, stops_after_25(), 30, checkpoint_dir=folder)
    assert [p.name for p in checkpoints(folder)] == ["step_0000010.pt", "step_0000020.pt"]
    resumed, r_resumed = train(model_cfg, cfg, sampler.batches(8), 30, checkpoint_dir=folder)
    assert r_resumed.losses == r_whole.losses and r_resumed.tokens == r_whole.tokens
    for a, b in zip(whole.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)
    at_20, state = load_checkpoint(folder / "step_0000020.pt")
    assert state["step"] == 20 and not torch.equal(at_20.lm_head.weight, resumed.lm_head.weight)
