"""The proxy GPT (mixforge.proxy_training.model): shapes, init loss, causality, presets, determinism,
a real learning signal on bytes of the Bible slice, and config validation."""

from __future__ import annotations

from conftest import SLICE
import json
import math

import pytest
import torch
from mixforge.proxy_training.model import (
    GPT,
    PRESETS,
    ModelConfig,
    autocast_context,
    preset,
)



def _tiny(vocab_size: int = 256, block_size: int = 64, **overrides) -> GPT:
    torch.manual_seed(0)
    return GPT(preset("tiny", vocab_size=vocab_size, block_size=block_size, **overrides))


@pytest.mark.timeout(60)
def test_shapes_and_logprobs():
    model = _tiny(vocab_size=100, block_size=32).eval()
    idx = torch.randint(0, 100, (3, 20))
    logits, loss = model(idx)
    assert logits.shape == (3, 20, 100) and loss is None
    targets = torch.randint(0, 100, (3, 20))
    logits, loss = model(idx, targets)
    assert loss.dim() == 0 and torch.isfinite(loss)

    lp = model.sequence_logprobs(idx, targets)
    assert lp.shape == (3, 20) and lp.dtype == torch.float32 and (lp <= 0).all()
    # Mean of the negated per-token log-probabilities is the loss.
    torch.testing.assert_close(-lp.mean(), loss, rtol=1e-5, atol=1e-5)
    # Ignored targets (-1) contribute 0 and are left out of the loss.
    masked = targets.clone()
    masked[:, :10] = -1
    lp_masked = model.sequence_logprobs(idx, masked)
    assert (lp_masked[:, :10] == 0).all()
    torch.testing.assert_close(lp_masked[:, 10:], lp[:, 10:])
    _, loss_masked = model(idx, masked)
    torch.testing.assert_close(loss_masked, -lp[:, 10:].mean(), rtol=1e-5, atol=1e-5)

    with pytest.raises(AssertionError, match="block_size"):
        model(torch.zeros(1, 33, dtype=torch.long))
    with autocast_context("cpu"):  # a null context on CPU
        assert model(idx)[0].dtype == torch.float32


@pytest.mark.timeout(60)
def test_loss_at_init_is_log_vocab():
    vocab = 512
    model = _tiny(vocab_size=vocab, block_size=64)
    idx = torch.randint(0, vocab, (8, 64), generator=torch.Generator().manual_seed(1))
    targets = torch.randint(0, vocab, (8, 64), generator=torch.Generator().manual_seed(2))
    _, loss = model(idx, targets)
    assert abs(loss.item() - math.log(vocab)) < 0.1 * math.log(vocab), loss.item()


@pytest.mark.timeout(60)
def test_causal_masking():
    model = _tiny(vocab_size=256, block_size=64).eval()
    idx = torch.randint(0, 256, (2, 40))
    changed = idx.clone()
    changed[:, 25] = (changed[:, 25] + 1) % 256
    with torch.no_grad():
        a, _ = model(idx)
        b, _ = model(changed)
    torch.testing.assert_close(a[:, :25], b[:, :25], rtol=0, atol=1e-6)  # earlier positions unchanged
    assert (a[:, 25:] - b[:, 25:]).abs().max() > 1e-4  # the changed token and later ones do change


@pytest.mark.timeout(60)
def test_preset_parameter_counts():
    counts = {}
    for name in PRESETS:
        with torch.device("meta"):  # no memory, no init cost
            model = GPT(preset(name, vocab_size=32768, block_size=512))
        counts[name] = (model.num_params(), model.num_params(non_embedding=False))
        cfg = model.config
        # Embeddings (tied LM head counted once) make up the difference.
        assert counts[name][1] - counts[name][0] == (cfg.vocab_size + cfg.block_size) * cfg.n_embd
        assert model.flops_per_token() > 6 * counts[name][0]
    assert 0.8e6 <= counts["tiny"][0] <= 1.3e6, counts
    assert 15e6 <= counts["small"][0] <= 30e6, counts
    assert counts["base"][0] >= 60e6, counts
    assert counts["tiny"][0] == 1_049_856  # 2 * (4*256^2 + 2*256*512 + 2*256) + 256

    # An untied LM head is a separate (embedding) parameter: non-embedding count unchanged.
    with torch.device("meta"):
        untied = GPT(preset("tiny", vocab_size=32768, block_size=512, tie_embeddings=False))
    assert untied.num_params() == counts["tiny"][0]
    assert untied.num_params(non_embedding=False) == counts["tiny"][1] + 32768 * 256


@pytest.mark.timeout(60)
def test_deterministic_init_and_training():
    def run() -> tuple[dict, list[float]]:
        model = _tiny(vocab_size=128, block_size=32)
        state = {k: v.clone() for k, v in model.state_dict().items()}
        gen = torch.Generator().manual_seed(7)
        idx = torch.randint(0, 128, (4, 32), generator=gen)
        targets = torch.randint(0, 128, (4, 32), generator=gen)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        losses = []
        for _ in range(3):
            _, loss = model(idx, targets)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        losses.append(model(idx, targets)[1].item())
        return state, losses

    state_a, losses_a = run()
    state_b, losses_b = run()
    assert state_a.keys() == state_b.keys()
    for k in state_a:
        assert torch.equal(state_a[k], state_b[k]), k
    assert losses_a == losses_b
    assert losses_a[-1] < losses_a[0]  # SGD on a fixed batch goes down


@pytest.mark.timeout(180)  # seconds when idle; a loaded 2-core machine took past 60
def test_tiny_learns_bible_bytes():
    text = "\n".join(
        json.loads(line)["text"] for line in (SLICE / "bible.jsonl").read_text().splitlines() if line
    )
    data = torch.tensor(list(text.encode("utf-8")), dtype=torch.long)
    assert len(data) > 20_000
    block, batch = 64, 16
    model = _tiny(vocab_size=256, block_size=block)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    gen = torch.Generator().manual_seed(0)

    def get_batch():
        ix = torch.randint(0, len(data) - block - 1, (batch,), generator=gen)
        x = torch.stack([data[i : i + block] for i in ix])
        y = torch.stack([data[i + 1 : i + 1 + block] for i in ix])
        return x, y

    eval_x, eval_y = get_batch()
    with torch.no_grad():
        start = model(eval_x, eval_y)[1].item()
    for _ in range(60):
        x, y = get_batch()
        _, loss = model(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        end = model(eval_x, eval_y)[1].item()
    assert end < 0.7 * start, (start, end)


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "field, kwargs",
    [
        ("n_embd", {"n_embd": 100, "n_head": 8}),
        ("vocab_size", {"vocab_size": 0}),
        ("block_size", {"block_size": -1}),
        ("n_layer", {"n_layer": 0}),
        ("n_head", {"n_head": 0}),
        ("d_ff", {"d_ff": 0}),
        ("dropout", {"dropout": 1.5}),
        ("bias", {"bias": "yes"}),
    ],
)
def test_config_validation_names_field(field, kwargs):
    base = {"vocab_size": 256, "block_size": 64, "n_layer": 2, "n_head": 8, "n_embd": 256}
    with pytest.raises((ValueError, TypeError), match=field):
        ModelConfig(**{**base, **kwargs})


@pytest.mark.timeout(60)
def test_preset_defaults_and_unknown_name():
    cfg = preset("small", vocab_size=1000, block_size=128)
    assert (cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.d_ff) == (6, 8, 512, 2048)
    assert cfg.dropout == 0.0 and cfg.bias is False and cfg.tie_embeddings is True
    assert ModelConfig(vocab_size=10, block_size=8, n_embd=64, n_head=4).d_ff == 256  # None -> 4 * n_embd
    with pytest.raises(ValueError, match="unknown model preset"):
        preset("huge", vocab_size=1000, block_size=128)
