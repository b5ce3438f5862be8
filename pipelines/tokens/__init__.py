"""Tokens: the tokenizer, token shards per component, and the eval tasks proxies are measured on."""

# what the other packages use (they import it from here); the rest is internal

from mixforge.pipelines.tokens.eval_tasks import load_task
from mixforge.pipelines.tokens.documents import text_hash
from mixforge.pipelines.tokens.stage import run_tokens, tokens_fingerprint
from mixforge.pipelines.tokens.tokenizer import (
    eos_id,
    load_tokenizer,
    token_dtype,
    tokenizer_identity,
    workspace_frames,
)

__all__ = [
    "eos_id", "load_task", "load_tokenizer", "run_tokens", "text_hash", "token_dtype", "tokenizer_identity",
    "tokens_fingerprint", "workspace_frames",
]
