"""Dedup: exact and MinHash near-duplicate removal, incremental against an index of kept documents."""
