"""Ingest: reading sources (files, folders, globs; jsonl, parquet, txt, HF on disk) into document shards."""
