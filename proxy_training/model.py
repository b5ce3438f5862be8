"""A small GPT for proxy training (nanoGPT style): config, presets and the model. No training code here.

Shapes in comments: B = batch, T = sequence length (<= block_size), C = n_embd, V = vocab_size,
H = n_head, D = C // H (head size).

Parameter counts of the presets (vocab 32768, block 512, tied embeddings, no biases; "non-embedding"
excludes the token embedding, the position embedding and an untied LM head, as in Kaplan et al.):

    tiny   2 layers  d=256  8 heads  FFN 512    1,049,856 non-embedding   9,569,536 total
    small  6 layers  d=512  8 heads  FFN 2048  18,881,024 non-embedding  35,920,384 total
    base  10 layers  d=768 12 heads  FFN 3072  70,795,008 non-embedding  96,354,048 total

(`base` has 10 layers because 8 layers at d=768 give only 56.6M non-embedding parameters.)
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["GPT", "PRESETS", "ModelConfig", "autocast_context", "preset"]


@dataclass
class ModelConfig:
    """Hyper-parameters of a GPT. Invalid values raise ValueError (TypeError for bias and
    tie_embeddings) naming the field."""

    vocab_size: int  # number of token ids (the tokenizer's vocabulary size)
    block_size: int  # context length: the longest sequence the model accepts (position embeddings)
    n_layer: int = 2  # number of transformer blocks
    n_head: int = 8  # attention heads per block; must divide n_embd
    n_embd: int = 256  # model width d (residual stream size)
    d_ff: int | None = None  # hidden size of the MLP; None means 4 * n_embd
    dropout: float = 0.0  # dropout on embeddings, attention weights and residual branches (training only)
    bias: bool = False  # biases in Linear layers and LayerNorms
    tie_embeddings: bool = True  # LM head shares its weight with the token embedding

    def __post_init__(self) -> None:
        if self.d_ff is None:
            self.d_ff = 4 * self.n_embd
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd", "d_ff"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"ModelConfig.{name} must be a positive integer, got {value!r}")
        if self.n_embd % self.n_head != 0:
            raise ValueError(
                f"ModelConfig.n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})"
            )
        if not (isinstance(self.dropout, (int, float)) and 0.0 <= self.dropout < 1.0):
            raise ValueError(f"ModelConfig.dropout must be in [0, 1), got {self.dropout!r}")
        for name in ("bias", "tie_embeddings"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"ModelConfig.{name} must be a bool, got {getattr(self, name)!r}")

    @property
    def head_size(self) -> int:
        return self.n_embd // self.n_head

    def to_dict(self) -> dict:
        return asdict(self)


# Shape of each preset; vocab_size and block_size come from the tokenizer and the run.
PRESETS: dict[str, dict] = {
    # The RegMix proxy: ~1M non-embedding parameters.
    "tiny": {"n_layer": 2, "n_head": 8, "n_embd": 256, "d_ff": 512},
    # ~19M non-embedding parameters.
    "small": {"n_layer": 6, "n_head": 8, "n_embd": 512, "d_ff": 2048},
    # ~71M non-embedding parameters.
    "base": {"n_layer": 10, "n_head": 12, "n_embd": 768, "d_ff": 3072},
}


def preset(name: str, vocab_size: int, block_size: int, **overrides) -> ModelConfig:
    """The ModelConfig of preset `name` ('tiny', 'small', 'base'); keyword overrides replace fields."""
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; choose one of {sorted(PRESETS)}")
    return ModelConfig(vocab_size=vocab_size, block_size=block_size, **{**PRESETS[name], **overrides})


def autocast_context(device: str | torch.device):
    """bf16 autocast on CUDA, a null context elsewhere (CPU runs in float32)."""
    device_type = torch.device(device).type
    if device_type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


class CausalSelfAttention(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.dropout = config.dropout
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)  # q, k, v together
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.c_proj.RESIDUAL_PROJECTION = True  # scaled init
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)  # 3 x (B, T, C)
        # (B, T, C) -> (B, H, T, D)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        y = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True
        )  # (B, H, T, D)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, config.d_ff, bias=config.bias)
        self.c_proj = nn.Linear(config.d_ff, config.n_embd, bias=config.bias)
        self.c_proj.RESIDUAL_PROJECTION = True  # scaled init
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x))))  # (B, T, C) -> (B, T, d_ff) -> (B, T, C)


class Block(nn.Module):
    """Pre-LayerNorm transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """Decoder-only transformer: token + learned position embeddings, pre-LN blocks, final LN, LM head."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if not isinstance(config, ModelConfig):
            raise TypeError(f"GPT needs a ModelConfig, got {type(config).__name__}")
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)  # token embedding (V, C)
        self.wpe = nn.Embedding(config.block_size, config.n_embd)  # position embedding (block_size, C)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)  # (C -> V)
        if config.tie_embeddings:
            self.lm_head.weight = self.wte.weight
        # nanoGPT / GPT-2 init: N(0, 0.02) everywhere, residual projections N(0, 0.02 / sqrt(2 * n_layer)).
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            std = 0.02
            if getattr(module, "RESIDUAL_PROJECTION", False):
                std = 0.02 / math.sqrt(2 * self.config.n_layer)
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self, non_embedding: bool = True) -> int:
        """Number of (unique) parameters; non_embedding=True leaves out the token and position
        embeddings and the LM head (which is the token embedding when tied)."""
        n = sum(p.numel() for p in self.parameters())  # parameters() yields a tied weight once
        if non_embedding:
            n -= self.wte.weight.numel() + self.wpe.weight.numel()
            if not self.config.tie_embeddings:
                n -= self.lm_head.weight.numel()
        return n

    def flops_per_token(self, seq_len: int | None = None) -> int:
        """Training FLOPs (forward + backward) per token, as in the PaLM paper (appendix B) / nanoGPT MFU:

            6 * N  +  12 * n_layer * n_embd * T

        N = non-embedding parameters + the LM head matmul (vocab_size * n_embd; the embedding
        look-ups cost no FLOPs). 6 = 2 (multiply-add) * 3 (forward + 2x backward). The second term is
        the attention score and weighted-sum matmuls (QK^T and AV: 2 * 2 * T * C per layer forward, times 3),
        with T = seq_len (default block_size), i.e. counted without the causal-mask saving.
        """
        cfg = self.config
        T = cfg.block_size if seq_len is None else seq_len
        n = self.num_params(non_embedding=True) + cfg.vocab_size * cfg.n_embd
        return 6 * n + 12 * cfg.n_layer * cfg.n_embd * T

    def _hidden(self, idx: torch.Tensor) -> torch.Tensor:
        assert idx.dim() == 2, f"idx must be (batch, seq) token ids, got shape {tuple(idx.shape)}"
        T = idx.shape[1]
        assert T <= self.config.block_size, (
            f"sequence length {T} is longer than block_size {self.config.block_size}"
        )
        pos = torch.arange(T, device=idx.device)  # (T,)
        x = self.drop(self.wte(idx) + self.wpe(pos))  # (B, T, C)
        for block in self.blocks:
            x = block(x)  # (B, T, C)
        return self.ln_f(x)  # (B, T, C)

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """idx (B, T) token ids -> logits (B, T, V) and, given targets (B, T), the mean cross-entropy
        over positions whose target is not -1 (ignored); loss is None without targets."""
        logits = self.lm_head(self._hidden(idx))  # (B, T, V)
        if targets is None:
            return logits, None
        assert targets.shape == idx.shape, (
            f"targets shape {tuple(targets.shape)} must equal idx shape {tuple(idx.shape)}"
        )
        loss = F.cross_entropy(
            logits.float().view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1
        )
        return logits, loss

    @torch.no_grad()
    def sequence_logprobs(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Per-token log-probabilities (B, T), float32: out[b, t] = log p(targets[b, t] | idx[b, :t+1]).

        Positions whose target is -1 get 0, so summing over T gives a continuation's log-likelihood
        when only the continuation's targets are set (log-likelihood multiple-choice evaluation).
        """
        assert targets.shape == idx.shape, (
            f"targets shape {tuple(targets.shape)} must equal idx shape {tuple(idx.shape)}"
        )
        logits, _ = self(idx)  # (B, T, V)
        logp = F.log_softmax(logits.float(), dim=-1)  # (B, T, V)
        mask = targets != -1  # (B, T)
        out = logp.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)  # (B, T)
        return out * mask
