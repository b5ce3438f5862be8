"""What a search's training cost, in FLOPs (its proposal's `evidence.flops`)."""

from __future__ import annotations

from mixforge.config import MixforgeConfig
from mixforge.proxy_training.base import bases_trained
from mixforge.proxy_training.proxy import run_flops
from mixforge.proxy_training.runs_table import tokens_summary
from mixforge.workspace import Workspace


def training_flops(cfg: MixforgeConfig, ws: Workspace, trained: int, bases_before: dict[str, int], online: dict | None,
                   uses_base: bool) -> dict:
    """Its proxy runs (`trained` of them), the bases trained since `bases_before` (a base trained
    by an earlier search cost this one nothing, and says so when `uses_base`), an online run (aioli)."""
    vocab = tokens_summary(ws)["tokenizer"]["vocab_size"]
    new_bases = {b: t for b, t in bases_trained(ws).items() if b not in bases_before}
    flops = {"runs": trained * run_flops(cfg, vocab), "base": sum(run_flops(cfg, vocab, t) for t in new_bases.values()),
             "online": int(online["flops"]) if online else 0}
    flops["total"] = sum(flops.values())
    if uses_base and not new_bases:
        flops["base_trained_earlier"] = True
    return flops
