"""Export: a mixture written as sharded data any trainer reads, with its manifest, data card and trainer files."""
