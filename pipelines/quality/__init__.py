"""Quality: heuristic and classifier scores of every document."""

# what the other packages use (they import it from here); the rest is internal

from mixforge.pipelines.quality.stage import quality_fingerprint, read_reference, run_quality

__all__ = ["quality_fingerprint", "read_reference", "run_quality"]
