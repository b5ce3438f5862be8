"""The data-build stages as plain functions a notebook can call, and their fingerprints.

The Prefect flow (flows/build.py) wraps exactly these; `status` uses the fingerprints to tell
done / stale / missing without running anything.
"""

from __future__ import annotations

from typing import Callable

from mixforge.config import MixforgeConfig
from mixforge.errors import MixforgeError
from mixforge.pipelines.builds import finish_build, open_build
from mixforge.pipelines.cluster import cluster_fingerprint, run_cluster
from mixforge.pipelines.components import components_fingerprint, run_components
from mixforge.pipelines.dedup import dedup_fingerprint, run_dedup
from mixforge.pipelines.embed import embed_fingerprint, run_embed
from mixforge.pipelines.engine import ray_session
from mixforge.pipelines.filters import filter_fingerprint, run_filter
from mixforge.pipelines.ingest import ingest_fingerprint, run_ingest
from mixforge.pipelines.prune import prune_fingerprint, run_prune
from mixforge.pipelines.quality import quality_fingerprint, run_quality
from mixforge.pipelines.tokens import run_tokens, tokens_fingerprint
from mixforge.stage_files import adopt, check_stage, damage_report
from mixforge.stage_runner import StageResult
from mixforge.workspace import STAGES, Workspace


def check_until(until: str | None) -> str:
    if until is None:
        return STAGES[-1]
    if until not in STAGES:
        raise MixforgeError(f"--until {until!r}: not a stage; stages: {', '.join(STAGES)}")
    return until


STAGE_FUNCTIONS = {
    "ingest": run_ingest,
    "filter": run_filter,
    "dedup": run_dedup,
    "embed": run_embed,
    "cluster": run_cluster,
    "quality": run_quality,
    "prune": run_prune,
    "components": run_components,
    "tokens": run_tokens,
}


def _arguments(stage: str, cfg: MixforgeConfig, done: dict[str, StageResult], force: bool, strict: bool,
               allow_changed: bool = False) -> tuple:
    previous = list(done.values())[-1] if done else None
    if stage == "ingest":
        return cfg, force, strict, allow_changed
    if stage in ("filter", "dedup"):
        return cfg, previous, force, strict
    if stage == "prune":  # prunes the dedup output with what the side stages learned about it
        return cfg, previous, done["dedup"], force, strict
    return cfg, previous, force


def build(
    cfg: MixforgeConfig, force: bool = False, strict: bool = False, until: str | None = None, run: Callable | None = None,
    allow_changed: bool = False,
) -> list[StageResult]:
    """Every stage in order up to `until`, each skipped when done for its inputs and settings, or
    extended with only what is new since the last build (see mixforge/layers.py). The build gets
    a record in `builds/` (see pipelines/builds.py). `run(stage, *args)` calls the stage function
    (the Prefect flow passes its tasks here)."""
    run = run or (lambda stage, *args: STAGE_FUNCTIONS[stage](*args))
    done: dict[str, StageResult] = {}
    ws = Workspace(cfg.workspace_dir)
    stages = STAGES[: STAGES.index(check_until(until)) + 1]
    damaged = None if force else first_damaged(ws, stages, cfg.check_outputs)
    build_id = open_build(ws)["id"]
    with ray_session(cfg):  # executor: ray connects (or starts a local Ray) once for the build
        for stage in stages:
            redo = force or (damaged is not None and stages.index(stage) >= stages.index(damaged))
            done[stage] = run(stage, *_arguments(stage, cfg, done, redo, strict, allow_changed))
    finish_build(ws, build_id)
    return list(done.values())


def first_damaged(ws: Workspace, stages: list[str], depth: str = "digest") -> str | None:
    """The first stage whose published files fail their check (`check_outputs`), named in a
    warning: it and every stage after it are redone in full, as after a change of its settings (a
    stage's later layers and the stages after it may have been computed from the damaged files)."""
    import warnings

    for stage in stages:
        adopt(ws, stage)
        problems = check_stage(ws, stage, depth)
        if problems:
            warnings.warn(f"{damage_report(ws, stage, problems)}: redoing {stage} and the stages after it")
            return stage
    return None


def stage_fingerprints(cfg: MixforgeConfig) -> dict[str, str]:
    """What each stage's fingerprint would be now (from the inputs and the config)."""
    fps = {"ingest": ingest_fingerprint(cfg)}
    chain = [("filter", filter_fingerprint), ("dedup", dedup_fingerprint), ("embed", embed_fingerprint),
             ("cluster", cluster_fingerprint), ("quality", quality_fingerprint), ("prune", prune_fingerprint),
             ("components", components_fingerprint), ("tokens", tokens_fingerprint)]
    previous = fps["ingest"]
    for stage, fingerprint in chain:
        fps[stage] = previous = fingerprint(cfg, previous)
    return fps


def stage_states(cfg: MixforgeConfig) -> dict[str, str]:
    """done / stale / missing per stage."""
    ws = Workspace(cfg.workspace_dir)
    fps = stage_fingerprints(cfg)
    return {stage: ws.stage_state(stage, fps[stage]) for stage in STAGES}
