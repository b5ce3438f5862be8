"""Embed: document vectors (sentence-transformers, or the packaged int8 MiniLM)."""
