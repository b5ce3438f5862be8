"""Tokens: the tokenizer, token shards per component, and the eval tasks proxies are measured on."""
