"""Training one proxy: warm-up, then a constant (RegMix), cosine or WSD learning rate; AdamW;
deterministic for a seed; progress with tokens/s; optional checkpoints that a rerun resumes from.
Data comes in as batches of token ids [B, T + 1] (inputs are [:, :-1], targets [:, 1:]) from the
mixture sampler."""

from __future__ import annotations

import contextlib
import io
import itertools
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Literal

import numpy as np
import torch

from mixforge.errors import MixforgeError
from mixforge.proxy_training.model import GPT, ModelConfig, autocast_context
from mixforge.workspace import atomic_write_bytes


@dataclass
class TrainConfig:
    """Optimisation settings of one proxy run."""

    lr: float = 4e-4  # peak learning rate (RegMix: constant 4e-4)
    warmup_steps: int = 100  # linear warm-up from 0 (RegMix: 100)
    schedule: Literal["constant", "cosine", "wsd"] = "constant"
    min_lr_ratio: float = 0.1  # floor of cosine / end of WSD decay, as a fraction of lr
    decay_fraction: float = 0.2  # WSD: share of steps spent decaying at the end
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    seed: int = 0
    device: str = "auto"  # auto: CUDA when present
    compile: bool = False  # torch.compile the model (pays off for long GPU runs)
    log_every: int = 10  # steps between recorded losses
    checkpoint_every: int = 0  # steps between checkpoints (0: none); needs checkpoint_dir in train()
    checkpoint_at: tuple[int, ...] = ()  # steps after which a checkpoint is saved as well (the ends of unequal phases)


@dataclass
class ProxyResult:
    """What one training run produced (the model itself is returned beside it)."""

    steps: int
    tokens: int
    final_loss: float  # mean training loss over the last 10% of steps
    losses: list[tuple[int, float]] = field(default_factory=list)  # (step, loss) every log_every
    seconds: float = 0.0
    tokens_per_s: float = 0.0
    device: str = "cpu"
    non_embedding_params: int = 0
    flops_per_token: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def lr_at(step: int, total: int, cfg: TrainConfig) -> float:
    """Learning rate of a step (0-based) out of `total` steps."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return cfg.lr
    floor = cfg.lr * cfg.min_lr_ratio
    if cfg.schedule == "cosine":
        progress = (step - cfg.warmup_steps) / max(total - cfg.warmup_steps, 1)
        return floor + 0.5 * (cfg.lr - floor) * (1 + math.cos(math.pi * min(progress, 1.0)))
    decay_start = int(total * (1 - cfg.decay_fraction))  # WSD: warm-up, stable, then linear decay
    if step < decay_start:
        return cfg.lr
    return cfg.lr - (cfg.lr - floor) * (step - decay_start) / max(total - decay_start, 1)


def resolve_device(device: str) -> str:
    if device == "cuda" and not torch.cuda.is_available():  # else torch fails deep inside the first step
        from mixforge.errors import ConfigError

        raise ConfigError("proxy.device is 'cuda' but no CUDA device is visible: set proxy.device to auto or cpu")
    return ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device


def checkpoints(folder: str | Path | None) -> list[Path]:
    """The checkpoints in a folder, oldest step first."""
    return sorted(Path(folder).glob("step_*.pt")) if folder and Path(folder).is_dir() else []


def load_checkpoint(path: str | Path, device: str = "cpu") -> tuple[GPT, dict]:
    """A model as it was at a checkpoint, and the checkpoint's other fields (step, tokens, ...)."""
    state = read_checkpoint(path, device)
    with checkpoint_errors(path):
        model = GPT(ModelConfig(**state["model_config"])).to(device)
        model.load_state_dict(state["model"])
    return model, state


CHECKPOINT_KEYS = {"step", "tokens", "losses", "model_config", "model", "optimizer"}


OWN_CHECKPOINT = "mixforge did not write it as it is: remove it, and the run trains again from its previous checkpoint or the start"


@contextlib.contextmanager
def checkpoint_errors(path: str | Path, advice: str = OWN_CHECKPOINT):
    """Any failure to read or apply a checkpoint (unpickling refused, a damaged file, another
    model's weights) is one MixforgeError naming the file and what to do, not a traceback."""
    try:
        yield
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, EOFError, OSError, ...: all mean "not usable"
        if type(e).__name__ == "UnpicklingError":  # torch's own text advises loading it unsafely
            reason = "not tensors and plain data only: a damaged file, or objects that could run code when loaded"
        else:
            reason = f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:300]}"
        raise MixforgeError(f"checkpoint {path}: not loaded ({reason}); {advice}") from None


def read_checkpoint(path: str | Path, device: str = "cpu") -> dict:
    """A checkpoint's fields, read with weights_only=True: tensors and plain data (numbers, strings,
    lists, dicts) only, so a file planted in the workspace cannot run code when loaded."""
    with checkpoint_errors(path):
        state = torch.load(path, map_location=device, weights_only=True)
        if not isinstance(state, dict) or not CHECKPOINT_KEYS <= state.keys():
            raise ValueError(f"expected a dict with {sorted(CHECKPOINT_KEYS)}")
    return state


def save_checkpoint(folder: Path, model: GPT, optimizer, step: int, tokens: int, losses: list) -> None:
    """A model and its optimizer at `step` (`write_checkpoint`)."""
    write_checkpoint(folder, model.config.to_dict(), model.state_dict(), optimizer.state_dict(), step, tokens, losses)


def write_checkpoint(folder: Path, model_config: dict, model_state: dict, optimizer_state: dict, step: int, tokens: int,
                     losses: list) -> None:
    """folder/step_<step>.pt, atomically: tensors and plain data only (the optimizer's state dict is
    tensors, numbers and tuples), so that `read_checkpoint` can load it with weights_only=True."""
    buffer = io.BytesIO()
    torch.save({"step": step, "tokens": tokens, "losses": [[int(s), float(l)] for s, l in losses],
                "model_config": model_config, "model": model_state, "optimizer": optimizer_state}, buffer)
    atomic_write_bytes(folder / f"step_{step:07d}.pt", buffer.getvalue())


def checkpoint_due(cfg: TrainConfig, step: int, steps: int) -> bool:
    """Whether a checkpoint is saved after `step` (0-based) of `steps`: every `checkpoint_every`
    steps and at the end, and after each step of `checkpoint_at`."""
    every = cfg.checkpoint_every and ((step + 1) % cfg.checkpoint_every == 0 or step == steps - 1)
    return bool(every or step + 1 in cfg.checkpoint_at)


def train(model_cfg: ModelConfig, cfg: TrainConfig, batches: Iterable[np.ndarray] | Callable, steps: int, progress=None,
          checkpoint_dir: str | Path | None = None, init_state: dict | None = None) -> tuple[GPT, ProxyResult]:
    """Train a fresh GPT for `steps` batches. `progress(step, steps, tokens_per_s)` is called
    every `log_every` steps when given. With `checkpoint_dir` and `cfg.checkpoint_every`, the
    state is saved every that many steps (and at the end), and a call that finds checkpoints
    there resumes from the latest: `batches` must then be the same stream from its start (the
    batches already trained are skipped), and the result equals an uninterrupted run's.
    `init_state`: the weights to start from instead of fresh ones (a shared base, proxy/base.py).
    `batches` may be a function of the model that returns the stream: a stream that looks at the
    model as it trains (Aioli's online mixing, proxy_training/aioli.py); it cannot resume."""
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    model = GPT(model_cfg).to(device)
    if init_state is not None:
        model.load_state_dict(init_state)
    forward = torch.compile(model) if cfg.compile else model
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr, betas=(0.9, 0.95), fused=device == "cuda",
    )
    losses: list[tuple[int, float]] = []
    tokens, start = 0, 0
    if callable(batches):
        batches = batches(model)
    saved = checkpoints(checkpoint_dir)
    if saved:
        state = read_checkpoint(saved[-1], device)
        with checkpoint_errors(saved[-1]):
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            start, tokens, losses = int(state["step"]), int(state["tokens"]), [(int(s), float(l)) for s, l in state["losses"]]
        batches = itertools.islice(batches, start, None)
    t0, tokens_at_start = time.perf_counter(), tokens
    model.train()
    for step, batch in zip(range(start, steps), batches):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, steps, cfg)
        xy = torch.from_numpy(np.asarray(batch, dtype=np.int64)).to(device)
        with autocast_context(device):
            _, loss = forward(xy[:, :-1], xy[:, 1:])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        tokens += xy[:, 1:].numel()
        if step % cfg.log_every == 0 or step == steps - 1:
            losses.append((step, loss.item()))
            if progress is not None:
                progress(step + 1, steps, (tokens - tokens_at_start) / (time.perf_counter() - t0))
        if checkpoint_dir and checkpoint_due(cfg, step, steps):
            save_checkpoint(Path(checkpoint_dir), model, optimizer, step + 1, tokens, losses)
    seconds = time.perf_counter() - t0
    tail = [l for s, l in losses if s >= int(0.9 * steps)] or [losses[-1][1]]
    result = ProxyResult(
        steps=len(losses) and losses[-1][0] + 1, tokens=tokens, final_loss=float(np.mean(tail)), losses=losses,
        seconds=round(seconds, 3), tokens_per_s=round((tokens - tokens_at_start) / max(seconds, 1e-9), 1), device=device,
        non_embedding_params=model.num_params(non_embedding=True), flops_per_token=model.flops_per_token(),
    )
    return model, result
