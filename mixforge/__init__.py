"""mixforge: filter, deduplicate, cluster and search data mixtures for LLM pretraining."""

__version__ = "0.1.0"
