"""Export: a mixture written as sharded data any trainer reads, with its manifest, data card and trainer files."""

# what the other packages use (they import it from here); the rest is internal

from mixforge.pipelines.export.schedule import SCHEDULE_FILE, export_mixture, exported, verify_schedule
from mixforge.pipelines.export.verify import verify_export

__all__ = ["SCHEDULE_FILE", "export_mixture", "exported", "verify_export", "verify_schedule"]
