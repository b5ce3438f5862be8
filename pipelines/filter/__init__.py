"""Filter: datatrove's quality filters per source, their report and a preview on a sample."""
