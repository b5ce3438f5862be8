"""Embed: document vectors (sentence-transformers, or the packaged int8 MiniLM)."""

# what the other packages use (they import it from here); the rest is internal

from mixforge.pipelines.embed.stage import cached_encoder, embed_fingerprint, run_embed

__all__ = ["cached_encoder", "embed_fingerprint", "run_embed"]
