"""Many proxies at once: N GPTs of the same shape, each on its own mixture, trained in one process so
that every kernel launch serves all N (RegMix trains hundreds of tiny proxies; one at a time, a tiny
model leaves a GPU mostly idle and pays Python/launch overhead N times).

How: the N models' parameters are stacked along a new leading "model" dimension
(`torch.func.stack_module_state`), and one forward runs `torch.func.functional_call` under
`torch.vmap` over that dimension, each model on its own batch. The per-model losses are summed for
the backward pass: model i's loss depends only on slice i of each stacked parameter, so the
gradients stay separate. AdamW is elementwise, so one AdamW over the stacked tensors equals N
separate AdamWs (weight decay only on per-model tensors of >= 2 dimensions, i.e. stacked dim >= 3,
as in `train`). Gradient clipping is per model: each model's gradient norm is taken over its own
slices and only that model's slices are scaled.

Each model starts exactly as `GPT(model_cfg)` under `torch.manual_seed(seed_i)` would (what `train`
does), so `train_many` with N = 1 matches `train` on the same batches up to float rounding
(vmap turns the matmuls into batched matmuls, which can sum in a different order).

    from mixforge.proxy_training.batched import train_many
    runs = train_many(model_cfg, TrainConfig(lr=3e-3), [s.batches(8) for s in samplers], steps=1000)
    for model, result in runs: ...   # a GPT and a ProxyResult per mixture, in the streams' order
"""

from __future__ import annotations

import math
import time
import types
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call, stack_module_state

from mixforge.proxy_training.model import GPT, ModelConfig, autocast_context
from mixforge.proxy_training.train import ProxyResult, TrainConfig, checkpoint_due, lr_at, resolve_device, write_checkpoint

__all__ = ["ModelStack", "init_models", "per_model_clip_", "stacked_loss_fn", "structure_model", "train_many", "unstack"]


def init_models(model_cfg: ModelConfig, seeds: Sequence[int]) -> list[GPT]:
    """One fresh GPT per seed, each initialised exactly as `train` initialises it for that seed."""
    models = []
    for seed in seeds:
        torch.manual_seed(int(seed))
        models.append(GPT(model_cfg))
    return models


def unstack(model_cfg: ModelConfig, params: dict[str, torch.Tensor], device: str | torch.device = "cpu") -> list[GPT]:
    """The stacked parameters {name: [N, ...]} back as N ordinary GPTs (eval mode, on `device`).

    Tied embeddings: stack_module_state keeps `wte.weight` once; loading it re-ties `lm_head.weight`
    (GPT's constructor ties them, load_state_dict copies into the shared tensor)."""
    n = next(iter(params.values())).shape[0]
    models = []
    for i in range(n):
        model = GPT(model_cfg)  # its random init is overwritten below; the global RNG is left as it was
        state = {name: p[i].detach().clone() for name, p in params.items()}
        missing, unexpected = model.load_state_dict(state, strict=False)
        tied = {"lm_head.weight"} if model_cfg.tie_embeddings else set()
        if set(missing) - tied or unexpected:
            raise RuntimeError(f"unstack: missing {sorted(set(missing) - tied)}, unexpected {sorted(unexpected)}")
        models.append(model.to(device).eval())
    return models


def _manual_causal_attention(self, x: torch.Tensor) -> torch.Tensor:
    """CausalSelfAttention.forward with the attention written out (QK^T, causal mask, softmax, AV).

    Used under vmap on CPU: torch 2.13 has no vmap batching rule for
    aten::_scaled_dot_product_flash_attention_for_cpu, so vmap would fall back to a slow Python loop
    over the N models (with a UserWarning). The written-out form is plain batched matmuls."""
    B, T, C = x.shape
    H = self.n_head
    q, k, v = self.c_attn(x).split(self.n_embd, dim=2)  # 3 x (B, T, C)
    q = q.view(B, T, H, C // H).transpose(1, 2)  # (B, H, T, D)
    k = k.view(B, T, H, C // H).transpose(1, 2)
    v = v.view(B, T, H, C // H).transpose(1, 2)
    att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(C // H))  # (B, H, T, T)
    mask = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
    att = att.masked_fill(~mask, float("-inf")).softmax(dim=-1)
    if self.training and self.dropout > 0:
        att = F.dropout(att, p=self.dropout)
    y = (att @ v).transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C)
    return self.resid_dropout(self.c_proj(y))


def structure_model(model_cfg: ModelConfig, attention: str = "sdpa") -> GPT:
    """A GPT on the meta device (no memory, no random draws) that lends its structure to
    functional_call. attention: "sdpa" keeps the model's F.scaled_dot_product_attention,
    "manual" swaps in the written-out causal attention (same maths, see _manual_causal_attention)."""
    if attention not in ("sdpa", "manual"):
        raise ValueError(f"attention must be 'sdpa' or 'manual', got {attention!r}")
    with torch.device("meta"):
        base = GPT(model_cfg)  # built on meta, so lm_head.weight stays tied to wte.weight
    if attention == "manual":
        for block in base.blocks:
            block.attn.forward = types.MethodType(_manual_causal_attention, block.attn)
    return base.train()


def stacked_loss_fn(base: GPT):
    """f(params [N, ...], idx [N, B, T], targets [N, B, T]) -> losses [N]: `base`'s forward, vmapped
    over the model dimension. `base` only lends its structure (see structure_model)."""

    def one(params, idx, targets):
        _, loss = functional_call(base, params, (idx, targets))  # tie_weights=True: lm_head follows wte
        return loss

    # randomness="different": with dropout > 0 every model draws its own masks
    return torch.vmap(one, in_dims=(0, 0, 0), randomness="different")


class ModelStack:
    """N models of one shape evaluated as one: called on a batch (idx, targets) [B, T] it returns
    (None, each model's mean loss [N]), the forward vmapped as `train_many` trains. It stands for a
    GPT where evaluation only calls it (`heldout_loss`): many merged models scored per kernel launch."""

    def __init__(self, model_cfg: ModelConfig, states: Sequence[dict], device: str = "cpu", attention: str = "auto"):
        with torch.device("meta"):
            names = [name for name, _ in GPT(model_cfg).named_parameters()]  # the tied head once, as stacked
        self.n = len(states)
        self.params = {name: torch.stack([s[name] for s in states]).to(device) for name in names}
        self.loss_fn = stacked_loss_fn(structure_model(model_cfg, _attention(attention, device)).eval())

    def parameters(self):
        return iter(self.params.values())

    def eval(self) -> "ModelStack":
        return self

    @torch.no_grad()
    def __call__(self, idx: torch.Tensor, targets: torch.Tensor) -> tuple[None, torch.Tensor]:
        shape = (self.n, *idx.shape)  # every model reads the same batch
        return None, self.loss_fn(self.params, idx.expand(shape), targets.expand(shape))


@torch.no_grad()
def per_model_clip_(params: Iterable[torch.Tensor], max_norm: float) -> torch.Tensor:
    """Clip each model's gradient to `max_norm` (as torch.nn.utils.clip_grad_norm_ does for one model,
    same 1e-6 epsilon) over stacked parameters [N, ...]. Returns the N pre-clip norms."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(0)
    # norm of per-tensor norms, per model: [n_tensors, N] -> [N]
    per_tensor = torch.stack([torch.linalg.vector_norm(g.flatten(1), 2.0, dim=1) for g in grads])
    norms = torch.linalg.vector_norm(per_tensor, 2.0, dim=0)
    coef = torch.clamp(max_norm / (norms + 1e-6), max=1.0)
    for g in grads:
        g.mul_(coef.view(-1, *([1] * (g.dim() - 1))).to(g.dtype))
    return norms


def _stack_batches(batches: list[np.ndarray], device: str) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """N batches [B_i, T_i + 1] -> idx, targets [N, B, T] (B, T the largest) and each model's token count.

    Batches of different shapes (a short last batch) are padded: inputs with token 0, targets with -1.
    The loss ignores targets of -1 and averages over the rest, rows never see each other and the
    attention is causal (a padded tail comes after every real position), so padding changes no
    model's loss or gradient."""
    arrays = [np.asarray(b, dtype=np.int64) for b in batches]
    shapes = {a.shape for a in arrays}
    if len(shapes) == 1:
        xy = torch.from_numpy(np.stack(arrays)).to(device)
        return xy[:, :, :-1], xy[:, :, 1:], [a[:, 1:].size for a in arrays]
    B = max(a.shape[0] for a in arrays)
    T = max(a.shape[1] for a in arrays) - 1
    idx = np.zeros((len(arrays), B, T), dtype=np.int64)
    targets = np.full((len(arrays), B, T), -1, dtype=np.int64)
    for i, a in enumerate(arrays):
        b, t = a.shape[0], a.shape[1] - 1
        idx[i, :b, :t] = a[:, :-1]
        targets[i, :b, :t] = a[:, 1:]
    return torch.from_numpy(idx).to(device), torch.from_numpy(targets).to(device), [a[:, 1:].size for a in arrays]


def _seeds_for(train_cfg: TrainConfig, n: int, seeds: Sequence[int] | None) -> list[int]:
    """One seed per stream: the given ones, else train_cfg.seed for every model."""
    if n == 0:
        raise ValueError("train_many needs at least one batch stream")
    seeds = [train_cfg.seed] * n if seeds is None else [int(s) for s in seeds]
    if len(seeds) != n:
        raise ValueError(f"train_many got {n} batch streams but {len(seeds)} seeds")
    return seeds


def _stacked_models(model_cfg: ModelConfig, seeds: list[int], device: str,
                    init_state: dict | None = None) -> tuple[dict[str, torch.Tensor], int, int]:
    """The N models' parameters stacked {name: [N, ...]} on `device` (fresh, or each from
    `init_state`), and the model's non-embedding parameter count and FLOPs per token (the same for all N)."""
    models = init_models(model_cfg, seeds)
    for m in models if init_state is not None else ():
        m.load_state_dict(init_state)
    non_embedding, flops_per_token = models[0].num_params(non_embedding=True), models[0].flops_per_token()
    for m in models:
        m.to(device).train()
    params, buffers = stack_module_state(models)  # {name: [N, ...]} leaves with requires_grad
    if buffers:  # GPT has none; functional_call would need them passed through vmap
        raise RuntimeError(f"train_many: GPT has unexpected buffers {sorted(buffers)}")
    return params, non_embedding, flops_per_token


def _attention(attention: str, device: str) -> str:
    """"auto" resolved: CUDA has vmap batching rules for the flash / memory-efficient SDPA kernels; CPU does not."""
    return ("sdpa" if str(device).startswith("cuda") else "manual") if attention == "auto" else attention


def _loss_fn(model_cfg: ModelConfig, train_cfg: TrainConfig, attention: str, device: str):
    """The vmapped loss over the stacked models, with "auto" attention resolved (and compiled if asked)."""
    loss_fn = stacked_loss_fn(structure_model(model_cfg, _attention(attention, device)))
    if train_cfg.compile:
        loss_fn = torch.compile(loss_fn)
    return loss_fn


def _optimizer(params: dict[str, torch.Tensor], train_cfg: TrainConfig, device: str) -> torch.optim.AdamW:
    """AdamW over the stacked tensors, weight decay only where each model's tensor has >= 2 dims."""
    decay = [p for p in params.values() if p.dim() >= 3]  # per-model dim >= 2
    no_decay = [p for p in params.values() if p.dim() < 3]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": train_cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=train_cfg.lr, betas=(0.9, 0.95), fused=device == "cuda",
    )


def _next_batches(iterators: list) -> list[np.ndarray] | None:
    """One batch from every stream, or None once any stream has run out."""
    batches = []
    for it in iterators:
        batch = next(it, None)
        if batch is None:
            return None
        batches.append(batch)
    return batches


def _model_states(params: dict[str, torch.Tensor], tied: bool) -> list[dict[str, torch.Tensor]]:
    """The stacked parameters as N state dicts, the tied head listed as GPT.state_dict() lists it."""
    n = next(iter(params.values())).shape[0]
    states = [{name: p[i].detach().clone() for name, p in params.items()} for i in range(n)]
    for state in states if tied else ():
        state["lm_head.weight"] = state["wte.weight"]
    return states


def _save_checkpoints(folders: Sequence[Path], model_cfg: ModelConfig, params, optimizer, step: int,
                      tokens: list[int], losses: list[list]) -> None:
    """Each model's checkpoint in `train`'s format: its weights and its slice of the stacked AdamW's
    moments (AdamW is elementwise: the slice is what the model's own optimizer would hold), so that
    `train` resumes from it and a merge reads it like any run's."""
    whole = optimizer.state_dict()
    for i, (folder, state) in enumerate(zip(folders, _model_states(params, model_cfg.tie_embeddings))):
        moments = {k: {name: v if name == "step" else v[i].clone() for name, v in per.items()} for k, per in whole["state"].items()}
        write_checkpoint(folder, model_cfg.to_dict(), state, {"state": moments, "param_groups": whole["param_groups"]},
                         step, tokens[i], losses[i])


def _train_steps(params, loss_fn, optimizer, batch_streams, steps: int, train_cfg: TrainConfig, device: str,
                 progress, checkpoints=None) -> tuple[list[list[tuple[int, float]]], list[int], float]:
    """The training loop over all N models together: each model's logged loss curve, its token
    count, and the loop's wall seconds. `checkpoints(step, tokens, losses)` after each step
    `train` would save a checkpoint at."""
    n = len(batch_streams)
    losses: list[list[tuple[int, float]]] = [[] for _ in range(n)]
    tokens = [0] * n
    iterators = [iter(s) for s in batch_streams]
    t0 = time.perf_counter()
    for step in range(steps):
        batches = _next_batches(iterators)
        if batches is None:  # stacklevel 3: the warning points at train_many's caller
            warnings.warn(f"train_many: a batch stream ran out after {step} of {steps} steps; "
                          f"all {n} models stop there", stacklevel=3)
            break
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, steps, train_cfg)
        idx, targets, counts = _stack_batches(batches, device)
        with autocast_context(device):
            per_model = loss_fn(params, idx, targets)  # [N]
        optimizer.zero_grad(set_to_none=True)
        per_model.sum().backward()  # model i's loss reaches only slice i: separate gradients
        per_model_clip_(params.values(), train_cfg.grad_clip)
        optimizer.step()
        tokens = [t + c for t, c in zip(tokens, counts)]
        if step % train_cfg.log_every == 0 or step == steps - 1:
            values = per_model.detach().float().tolist()  # one sync for all N
            for i in range(n):
                losses[i].append((step, values[i]))
            if progress is not None:
                progress(step + 1, steps, sum(tokens) / (time.perf_counter() - t0))
        if checkpoints is not None and checkpoint_due(train_cfg, step, steps):
            checkpoints(step + 1, tokens, losses)
    return losses, tokens, time.perf_counter() - t0


def _proxy_result(curve: list[tuple[int, float]], tokens: int, steps: int, seconds: float, device: str,
                  non_embedding: int, flops_per_token: int) -> ProxyResult:
    """One model's ProxyResult, its final loss the mean over the last 10% of the planned steps."""
    total = curve[-1][0] + 1 if curve else 0
    tail = [l for s, l in curve if s >= int(0.9 * steps)] or ([curve[-1][1]] if curve else [float("nan")])
    return ProxyResult(
        steps=total, tokens=tokens, final_loss=float(np.mean(tail)), losses=curve,
        seconds=round(seconds, 3), tokens_per_s=round(tokens / max(seconds, 1e-9), 1), device=device,
        non_embedding_params=non_embedding, flops_per_token=flops_per_token,
    )


def _trained_models(model_cfg: ModelConfig, out_params: dict[str, torch.Tensor], device: str,
                    return_models: bool) -> list[GPT] | list[dict[str, torch.Tensor]]:
    """The trained stack as N GPTs, or as N state dicts (the tied head listed as GPT.state_dict() lists it)."""
    if return_models:
        rng = torch.get_rng_state()  # building the GPTs draws random init: leave the RNG as training left it
        models = unstack(model_cfg, out_params, device)
        torch.set_rng_state(rng)
        return models
    return _model_states(out_params, model_cfg.tie_embeddings)


def group_size(model_cfg: ModelConfig, batch_size: int, free_bytes: int, most: int = 256) -> int:
    """How many proxies of `model_cfg` `train_many` fits in `free_bytes` of device memory, a fifth
    kept free. Each holds fp32 weights, gradients and AdamW's two moments (16 bytes a parameter)
    and its activations: about 34 bytes per token, layer and unit of width in 16-bit with fused
    attention (Korthikanti et al.'s count without the attention matrix), and 6 per token and
    vocabulary entry for the logits and their loss."""
    with torch.device("meta"):
        params = sum(p.numel() for p in GPT(model_cfg).parameters())
    tokens = batch_size * model_cfg.block_size
    per_proxy = 16 * params + tokens * (34 * model_cfg.n_layer * model_cfg.n_embd + 6 * model_cfg.vocab_size)
    return int(max(1, min(most, 0.8 * free_bytes // per_proxy)))


def train_many(model_cfg: ModelConfig, train_cfg: TrainConfig, batch_streams: Sequence[Iterable[np.ndarray]],
               steps: int, seeds: Sequence[int] | None = None, progress=None,
               return_models: bool = True, attention: str = "auto", init_state: dict | None = None,
               checkpoint_dirs: Sequence[Path] | None = None) -> list[tuple[GPT | dict[str, torch.Tensor], ProxyResult]]:
    """Train N = len(batch_streams) fresh GPTs of shape `model_cfg` together, model i on stream i,
    for `steps` steps with one TrainConfig (lr schedule, AdamW, clipping: as `train`, per model).

    seeds: model i starts as `train` would start with seed seeds[i] (default: train_cfg.seed for all);
    with `init_state`, every model starts from those weights instead (a shared base).
    Training stops when the shortest stream runs out (`train` stops at its stream's end as well).
    progress(step, steps, tokens_per_s) as in `train` (tokens of all N models together).

    attention: "sdpa" (the model's F.scaled_dot_product_attention under vmap), "manual" (written-out
    causal attention: CPU has no vmap rule for its SDPA kernel) or "auto" (sdpa on CUDA, else manual).

    checkpoint_dirs: one folder per model, where its checkpoints go at the steps `train` saves them
    (train_cfg.checkpoint_every, checkpoint_at), in `train`'s format. A group is not resumed from
    them (an interrupted group trains again); `train` resumes from them one run at a time.

    Returns [(model, ProxyResult)] in the streams' order; model is a GPT in eval mode, or its state
    dict when return_models is False. ProxyResult.seconds is the wall time of the whole batched run
    (the N models share it) and tokens_per_s is each model's tokens over that time; the aggregate
    rate is sum(tokens) / seconds.
    """
    seeds = _seeds_for(train_cfg, len(batch_streams), seeds)
    device = resolve_device(train_cfg.device)
    params, non_embedding, flops_per_token = _stacked_models(model_cfg, seeds, device, init_state)
    loss_fn = _loss_fn(model_cfg, train_cfg, attention, device)
    optimizer = _optimizer(params, train_cfg, device)
    def save(step: int, tokens: list[int], losses: list[list]) -> None:
        _save_checkpoints(checkpoint_dirs, model_cfg, params, optimizer, step, tokens, losses)

    losses, tokens, seconds = _train_steps(params, loss_fn, optimizer, batch_streams, steps, train_cfg, device, progress,
                                           None if checkpoint_dirs is None else save)
    results = [_proxy_result(curve, count, steps, seconds, device, non_embedding, flops_per_token)
               for curve, count in zip(losses, tokens)]
    out_params = {name: p.detach() for name, p in params.items()}
    return list(zip(_trained_models(model_cfg, out_params, device, return_models), results))
