"""Filter: datatrove's quality filters per source, their report and a preview on a sample."""

# what the other packages use (they import it from here); the rest is internal

from mixforge.pipelines.filter.preview import preview_source, write_starter_config
from mixforge.pipelines.filter.report import filter_warnings, removal_warning
from mixforge.pipelines.filter.stage import filter_fingerprint, run_filter

__all__ = [
    "filter_fingerprint", "filter_warnings", "preview_source", "removal_warning", "run_filter",
    "write_starter_config",
]
