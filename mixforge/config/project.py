"""The whole file: every section, where the workspace is, and each source's resolved filters."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError

from mixforge.errors import ConfigError
from mixforge.config.data import ClusterConfig, DedupConfig, EmbedConfig, QualityConfig, SourceConfig
from mixforge.config.filters import PROSE_ONLY_FILTERS, FiltersConfig
from mixforge.config.search import ExportConfig, ProxyConfig, SearchConfig
from mixforge.config.section import Section
from mixforge.config.problems import error_lines


class RayConfig(Section):
    """Where and how the Ray executor runs (`executor: ray`)."""

    address: str | None = Field(None, description="host:port of a running Ray cluster; none: start a local Ray for the build.")
    cpus_per_task: float = Field(1, gt=0, description="CPUs reserved per shard task.")
    gpus_per_embed_task: float = Field(0, ge=0, description="GPUs reserved per embedding task (1: one task per GPU).")
    memory_per_task_gb: float = Field(1.0, gt=0, description="Memory reserved per task (Ray waits for a node that has it).")
    max_retries: int = Field(3, ge=0, description="Times a task whose worker died is rerun.")
    gpus_per_proxy: float = Field(0, ge=0, description="GPUs reserved per proxy task of a sweep or search (0: CPU nodes; "
                                  "0.25: four proxies share a GPU; with proxy.batched, per group of runs trained together).")





class MixforgeConfig(Section):
    """A mixforge project: where data comes from, how it is cleaned, where results go."""

    workspace: str = Field("./mixforge-work", description="Folder for all stage outputs (relative to the config).")
    seed: int = Field(0, ge=0, description="Seed for every random choice; recorded in manifests and run rows.")
    workers: int = Field(0, ge=0, description="Parallel worker processes; 0 = number of CPU cores.")
    shard_mb: int = Field(64, ge=1, description="Target size of normalised Parquet shards (MB of input).")
    executor: Literal["local", "ray"] = Field(
        "local", description="local: worker processes on this machine; ray: shard tasks on a Ray cluster (see `ray`).")
    ray: RayConfig = Field(default_factory=RayConfig, description="Ray executor settings.")
    check_outputs: Literal["digest", "size"] = Field(
        "digest", description="What `build` checks of each published stage's files before it skips the stage: digest "
        "rereads them (xxh3; catches bytes changed in place), size only stats them (for workspaces too large to reread "
        "every build: run `mixforge status --check` now and then). A stage that fails is redone with the stages after it.")
    sources: list[SourceConfig] = Field(..., min_length=1, description="Inputs to read.")
    filters: FiltersConfig = Field(default_factory=FiltersConfig, description="Global filter settings.")
    dedup: DedupConfig = Field(default_factory=DedupConfig, description="Deduplication settings.")
    embed: EmbedConfig = Field(default_factory=EmbedConfig, description="Embedding settings.")
    cluster: ClusterConfig = Field(default_factory=ClusterConfig, description="Clustering settings.")
    quality: QualityConfig = Field(default_factory=QualityConfig, description="Quality-scoring settings.")
    proxy: ProxyConfig = Field(default_factory=ProxyConfig, description="Proxy-training settings (`mixforge proxy`, `mixforge search`).")
    search: SearchConfig = Field(default_factory=SearchConfig, description="Mixture-search settings (`mixforge search`).")
    export: ExportConfig = Field(default_factory=ExportConfig, description="Defaults of `mixforge export`.")

    # Where the file lives; relative paths resolve against it. Not part of the YAML.
    _base_dir: Path = Path(".")

    def resolve(self, path: str) -> Path:
        """A path from the config, made absolute against the config file's folder."""
        p = Path(path).expanduser()
        return p if p.is_absolute() else (self._base_dir / p).resolve()

    @property
    def workspace_dir(self) -> Path:
        return self.resolve(self.workspace)

    def source_filters(self, source: SourceConfig) -> FiltersConfig:
        """The filters one source runs: global settings, minus prose-only filters for code and
        reference sources, plus the source's own overrides (validated like the global block)."""
        merged = self.filters.model_dump()
        for name in PROSE_ONLY_FILTERS[source.kind]:
            merged[name]["enabled"] = False
        for name, override in source.filters.items():
            if name not in merged:
                raise ConfigError(f"source {source.path!r}: unknown filter {name!r}; known: {sorted(merged)}")
            merged[name].update(override)
        try:
            return FiltersConfig.model_validate(merged)
        except ValidationError as e:
            raise ConfigError(f"source {source.path!r}: " + "; ".join(error_lines(e))) from None
