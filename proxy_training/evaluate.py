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
def choice_accuracy(model: GPT, encode, items: list[dict], max_len: int, per_byte: bool = True,
                    batch_size: int = 64) -> float:
    """Share of items {context, choices, gold} where the gold choice's continuation has the
    highest log-likelihood given the context. per_byte: the sum divided by the choice's UTF-8
    bytes (lm-evaluation-harness's acc_norm), so long choices are not penalised for length.
    Every (item, choice) pair is one right-padded row of a batch: causal attention keeps the
    padding out of the scored positions, and targets outside the continuation are masked."""
    device = next(model.parameters()).device
    model.eval()
    rows = []  # (item index, inputs, targets with -1 outside the continuation, divisor)
    for n, item in enumerate(items):
        context = encode(item["context"])
        for choice in item["choices"]:
            cont = encode(choice)
            ids = (context + cont)[-(max_len + 1):]
            n_cont = min(len(cont), len(ids) - 1)
            targets = [-1] * (len(ids) - 1 - n_cont) + ids[len(ids) - n_cont:]
            rows.append((n, ids[:-1], targets, max(len(choice.encode()), 1) if per_byte else 1))
    scores: list[list[float]] = [[] for _ in items]
    for lo in range(0, len(rows), batch_size):
        batch = rows[lo : lo + batch_size]
        width = max(len(r[1]) for r in batch)
        x = torch.tensor([r[1] + [0] * (width - len(r[1])) for r in batch], device=device)
        y = torch.tensor([r[2] + [-1] * (width - len(r[2])) for r in batch], device=device)
        totals = model.sequence_logprobs(x, y).sum(dim=1).tolist()
        for (n, _, _, divisor), total in zip(batch, totals):
            scores[n].append(total / divisor)
    correct = sum(int(np.argmax(s) == item["gold"]) for s, item in zip(scores, items))
    return correct / max(len(items), 1)
