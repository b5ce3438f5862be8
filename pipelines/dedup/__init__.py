"""Dedup: exact and MinHash near-duplicate removal, incremental against an index of kept documents."""

# what the other packages use (they import it from here); the rest is internal

from mixforge.pipelines.dedup.stage import dedup_fingerprint, run_dedup

__all__ = ["dedup_fingerprint", "run_dedup"]
