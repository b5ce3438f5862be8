"""Evaluating a proxy: loss and bits per byte on held-out token streams, and multiple-choice
accuracy by log-likelihood in the manner of lm-evaluation-harness (the choice whose
continuation has the highest summed log-probability wins)."""

from __future__ import annotations

import math

import numpy as np
import torch

from mixforge.proxy_training.model import GPT, autocast_context


@torch.no_grad()
def heldout_loss(model: GPT, tokens: np.ndarray, seq_len: int, eos_id: int | None = None, batch_size: int = 16,
                 max_tokens: int = 0, seed: int = 0) -> tuple[float, int]:
    """(mean next-token loss in nats per scored token, tokens scored) over a held-out stream of
    documents, each followed by EOS. For a `ModelStack` of N models, the N mean losses (an array).

    Every text token is scored: the stream is cut into non-overlapping windows of seq_len (the last
    one padded), and an EOS in front gives the first document the context every later one has.
    EOS targets are not scored, so the tokens scored and the text's bytes describe the same text.
    `max_tokens` > 0 scores a seeded sample of whole windows spread over the whole stream instead."""
    device = next(model.parameters()).device
    stream = np.asarray(tokens, dtype=np.int64)
    if eos_id is not None:
        stream = np.concatenate([[eos_id], stream])
    if len(stream) < 2:
        raise ValueError(f"held-out text too short: {len(tokens)} tokens")
    positions = len(stream) - 1
    n = -(-positions // seq_len)
    x = np.zeros(n * seq_len, dtype=np.int64)
    y = np.full(n * seq_len, -1, dtype=np.int64)
    x[:positions], y[:positions] = stream[:-1], stream[1:]
    if eos_id is not None:
        y[y == eos_id] = -1
    x, y = x.reshape(n, seq_len), y.reshape(n, seq_len)
    if max_tokens and max_tokens < positions:
        keep = np.random.default_rng(seed).choice(n, size=max(-(-max_tokens // seq_len), 1), replace=False)
        x, y = x[np.sort(keep)], y[np.sort(keep)]
    model.eval()
    total, scored = np.float64(0.0), 0
    for i in range(0, len(x), batch_size):
        xb, yb = torch.from_numpy(x[i : i + batch_size]).to(device), torch.from_numpy(y[i : i + batch_size]).to(device)
        count = int((yb != -1).sum())
        if not count:
            continue
        with autocast_context(device):
            _, loss = model(xb, yb)  # mean over the scored positions of the batch (one per model of a stack)
        total = total + loss.double().cpu().numpy() * count  # in float64, as float(loss) * count summed
        scored += count
    if not scored:
        raise ValueError("held-out text holds no token to score")
    mean = total / scored
    return (float(mean) if np.ndim(mean) == 0 else mean), scored


def bits_per_byte(loss_nats: float, tokens: int, text_bytes: int) -> float:
    """Tokenizer-independent: total bits spent on the text divided by its UTF-8 bytes. `tokens` are
    the text's tokens (EOS excluded, as its bytes exclude it); `loss_nats` their mean loss."""
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
