"""The data-build stages as plain functions a notebook can call, and their fingerprints.

The Prefect flow (flows/build.py) wraps exactly these; `status` uses the fingerprints to tell
done / stale / missing without running anything.
"""

from __future__ import annotations

from mixforge.config import MixforgeConfig
from mixforge.pipelines.dedup import dedup_fingerprint, run_dedup
from mixforge.pipelines.filters import filter_fingerprint, run_filter
from mixforge.pipelines.ingest import ingest_fingerprint, run_ingest
from mixforge.stage_runner import StageResult
from mixforge.workspace import STAGES, Workspace


def build(cfg: MixforgeConfig, force: bool = False, strict: bool = False) -> list[StageResult]:
    """ingest -> filter -> dedup, each skipped when already done for its inputs and settings."""
    ingested = run_ingest(cfg, force, strict)
    filtered = run_filter(cfg, ingested, force, strict)
    deduped = run_dedup(cfg, filtered, force, strict)
    return [ingested, filtered, deduped]


def stage_fingerprints(cfg: MixforgeConfig) -> dict[str, str]:
    """What each stage's fingerprint would be now (from the inputs and the config)."""
    fps = {"ingest": ingest_fingerprint(cfg)}
    fps["filter"] = filter_fingerprint(cfg, fps["ingest"])
    fps["dedup"] = dedup_fingerprint(cfg, fps["filter"])
    return fps


def stage_states(cfg: MixforgeConfig) -> dict[str, str]:
    """done / stale / missing per stage. A stage whose upstream is not done is stale at best."""
    ws = Workspace(cfg.workspace_dir)
    fps = stage_fingerprints(cfg)
    return {stage: ws.stage_state(stage, fps[stage]) for stage in STAGES}
