"""The data-build flow: one Prefect task per stage over the plain functions in pipelines/.

Tasks exchange StageResult records (paths and counts), never data. Caching is mixforge's own
(stage fingerprints in the workspace), so Prefect's result cache is off. Runs in Prefect's
ephemeral mode with no server, or against a running server when PREFECT_API_URL is set.
"""

from __future__ import annotations

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from mixforge.config import load_config
from mixforge.pipelines.dedup import run_dedup
from mixforge.pipelines.filters import run_filter
from mixforge.pipelines.ingest import run_ingest
from mixforge.stage_runner import StageResult

_task = task(cache_policy=NO_CACHE, persist_result=False, retries=0)

ingest_task = _task(run_ingest, name="ingest")
filter_task = _task(run_filter, name="filter")
dedup_task = _task(run_dedup, name="dedup")


@flow(name="mixforge-build", persist_result=False, log_prints=False)
def build_flow(
    config_path: str, workspace: str | None = None, force: bool = False, strict: bool = False
) -> list[StageResult]:
    """ingest -> filter -> dedup for one config file (optionally into another workspace)."""
    cfg = load_config(config_path, workspace=workspace)
    ingested = ingest_task(cfg, force, strict)
    filtered = filter_task(cfg, ingested, force, strict)
    deduped = dedup_task(cfg, filtered, force, strict)
    return [ingested, filtered, deduped]
