"""The one YAML config: a pydantic model per section (beside the others of its part of the job),
and `load_config`, whose errors name the file, line, field and bad value.

    section.py   the base of every section; section_hash (stage fingerprints)
    filters.py   filters          data.py   sources, dedup, embed, cluster, quality
    search.py    proxy, search, export      project.py   ray and the whole file (MixforgeConfig)
    load.py      load_config (with paths.py: sources and workspace checks; yaml_text.py: YAML
                 with line numbers; problems.py: validation errors as lines)
    template.py  the commented config `mixforge init` writes, and the reference the docs show
"""

from mixforge.config.data import ClusterConfig, DedupConfig, EmbedConfig, QualityConfig, SourceConfig
from mixforge.config.filters import LID176_CODES, PROSE_ONLY_FILTERS, FiltersConfig
from mixforge.config.load import MAX_CONFIG_BYTES, MAX_SOURCES, load_config, read_utf8
from mixforge.config.project import MixforgeConfig, RayConfig
from mixforge.config.search import MIN_REFRESH_RUNS, ExportConfig, ProxyConfig, SearchConfig
from mixforge.config.section import Section, section_hash

__all__ = ["ClusterConfig", "DedupConfig", "EmbedConfig", "ExportConfig", "FiltersConfig", "LID176_CODES", "MAX_CONFIG_BYTES",
           "MAX_SOURCES", "MIN_REFRESH_RUNS", "MixforgeConfig", "PROSE_ONLY_FILTERS", "ProxyConfig", "QualityConfig", "RayConfig",
           "SearchConfig", "Section", "SourceConfig", "load_config", "read_utf8", "section_hash"]
