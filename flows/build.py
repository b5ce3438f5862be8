"""The data-build flow: one Prefect task per stage over the plain functions in pipelines/.

Tasks exchange StageResult records (paths and counts), never data. Caching is mixforge's own
(stage fingerprints in the workspace), so Prefect's result cache is off. Runs in Prefect's
ephemeral mode with no server, or against a running server when PREFECT_API_URL is set.
"""

from __future__ import annotations

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from mixforge.config import load_config
from mixforge.pipelines.build import build
from mixforge.pipelines.stages import STAGE_TABLE
from mixforge.pipelines.run import StageResult
from mixforge.workspace import Workspace
from mixforge.write_errors import writing_to

TASKS = {s.name: task(s.run, name=s.name, cache_policy=NO_CACHE, persist_result=False) for s in STAGE_TABLE}


@flow(name="mixforge-build", persist_result=False, log_prints=False)
def build_flow(
    config_path: str, workspace: str | None = None, force: bool = False, strict: bool = False, until: str | None = None,
    allow_changed: bool = False,
) -> list[StageResult]:
    """ingest -> filter -> dedup -> embed -> cluster -> quality -> prune -> components -> tokens."""
    cfg = load_config(config_path, workspace=workspace)
    ws = Workspace(cfg.workspace_dir)

    def run(stage: str, *args) -> StageResult:
        with writing_to(ws.partial_dir(stage)):  # a full disk, a read-only folder: one message naming where
            return TASKS[stage](*args)

    return build(cfg, force, strict, until, run=run, allow_changed=allow_changed)
