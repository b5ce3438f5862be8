"""Group influence at a proxy checkpoint (TiKMiX's idea; its exact estimator is not public).

Our reading: a component helps the target when a training step on the component's data moves the
model the way a step on the target's data would. So each component's influence is the cosine
between the gradient of the mean loss on a sample of its training windows and the gradient of the
mean loss on the target's held-out windows, both at the same checkpoint (all parameters
flattened). A first-order estimate: it says which data the model, as it is now, would profit from.
"""

from __future__ import annotations

import numpy as np
import torch

from mixforge.proxy_training.model import GPT, autocast_context


def windows(tokens: np.ndarray, seq_len: int, n: int, seed: int) -> np.ndarray:
    """n random windows of seq_len + 1 tokens from a stream (int64 [n, seq_len + 1])."""
    tokens = np.asarray(tokens)
    if len(tokens) <= seq_len + 1:
        raise ValueError(f"a stream of {len(tokens)} tokens holds no window of {seq_len + 1}")
    starts = np.random.default_rng(seed).integers(0, len(tokens) - seq_len - 1, size=n)
    return np.stack([tokens[s : s + seq_len + 1] for s in starts]).astype(np.int64)


def loss_gradient(model: GPT, batch: np.ndarray, batch_size: int = 16) -> torch.Tensor:
    """Gradient of the mean next-token loss over the windows, flattened (float32)."""
    device = next(model.parameters()).device
    model.eval()  # no dropout: the gradient of the model as it is
    model.zero_grad(set_to_none=True)
    n = len(batch)
    for lo in range(0, n, batch_size):
        xy = torch.from_numpy(batch[lo : lo + batch_size]).to(device)
        with autocast_context(device):
            _, loss = model(xy[:, :-1], xy[:, 1:])
        (loss * len(xy) / n).backward()
    grad = torch.cat([p.grad.reshape(-1).float() for p in model.parameters() if p.grad is not None])
    model.zero_grad(set_to_none=True)
    return grad


def group_influence(model: GPT, components: dict[str, np.ndarray], target: np.ndarray, seq_len: int,
                    windows_per_group: int = 64, seed: int = 0) -> dict[str, float]:
    """{component: cosine(grad on its windows, grad on the target's windows)}."""
    g_target = loss_gradient(model, windows(target, seq_len, windows_per_group, seed))
    out = {}
    for i, (name, tokens) in enumerate(sorted(components.items())):
        if len(tokens) <= seq_len + 1:
            continue
        g = loss_gradient(model, windows(tokens, seq_len, windows_per_group, seed + 1 + i))
        out[name] = float(torch.nn.functional.cosine_similarity(g, g_target, dim=0))
    return out
