"""Evaluating a proxy: loss and bits per byte on held-out token streams, and multiple-choice
accuracy by log-likelihood in the manner of lm-evaluation-harness (the choice whose
continuation has the highest summed log-probability wins)."""

from __future__ import annotations

import math

import numpy as np
import torch

from mixforge.proxy_training.model import GPT, autocast_context


@torch.no_grad()
def heldout_loss(model: GPT, tokens: np.ndarray, seq_len: int, batch_size: int = 16, max_windows: int = 256) -> float:
    """Mean next-token loss (nats) over non-overlapping windows of a held-out token stream."""
    device = next(model.parameters()).device
    n = min((len(tokens) - 1) // seq_len, max_windows)
    if n <= 0:
        raise ValueError(f"held-out text too short: {len(tokens)} tokens for windows of {seq_len}")
    windows = np.stack([tokens[i * seq_len : i * seq_len + seq_len + 1] for i in range(n)]).astype(np.int64)
    model.eval()
    total = 0.0
    for i in range(0, n, batch_size):
        xy = torch.from_numpy(windows[i : i + batch_size]).to(device)
        with autocast_context(device):
            _, loss = model(xy[:, :-1], xy[:, 1:])
        total += float(loss) * len(xy)
    return total / n


def bits_per_byte(loss_nats: float, tokens: int, text_bytes: int) -> float:
    """Tokenizer-independent: total bits spent on the text divided by its UTF-8 bytes."""
    return loss_nats * tokens / math.log(2) / max(text_bytes, 1)


@torch.no_grad()
def choice_accuracy(model: GPT, encode, items: list[dict], max_len: int, per_byte: bool = True) -> float:
    """Share of items {context, choices, gold} where the gold choice's continuation has the
    highest log-likelihood given the context. per_byte: the sum divided by the choice's UTF-8
    bytes (lm-evaluation-harness's acc_norm), so long choices are not penalised for length."""
    device = next(model.parameters()).device
    model.eval()
    correct = 0
    for item in items:
        context = encode(item["context"])
        scores = []
        for choice in item["choices"]:
            cont = encode(choice)
            ids = (context + cont)[-(max_len + 1):]
            n_cont = min(len(cont), len(ids) - 1)
            x = torch.tensor([ids[:-1]], device=device)
            y = torch.tensor([ids[1:]], device=device)
            logp = model.sequence_logprobs(x, y)[0]
            total = float(logp[-n_cont:].sum())
            scores.append(total / max(len(choice.encode()), 1) if per_byte else total)
        correct += int(np.argmax(scores) == item["gold"])
    return correct / max(len(items), 1)
