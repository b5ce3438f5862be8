"""The build: every stage of the stage table (pipelines/stages.py) in order, as plain Python a
notebook can call, and each stage's state (done / stale / missing) from its fingerprint.

The Prefect flow (flows/build.py) runs the same loop with one task per stage.
"""

from __future__ import annotations

from typing import Callable

from mixforge.config import MixforgeConfig
from mixforge.errors import MixforgeError
from mixforge.pipelines.run import StageOptions, StageResult, finish_build, open_build, ray_session
from mixforge.pipelines.run.build_records import clear_killed_writes
from mixforge.pipelines.stages import DOCUMENT_STAGES, STAGE_BY_NAME, STAGE_NAMES, stage_fingerprints, write_ledger
from mixforge.stage_files import check_stage, damage_report
from mixforge.workspace import Workspace


def check_until(until: str | None) -> str:
    if until is None:
        return STAGE_NAMES[-1]
    if until not in STAGE_NAMES:
        raise MixforgeError(f"--until {until!r}: not a stage; stages: {', '.join(STAGE_NAMES)}")
    return until


def build(
    cfg: MixforgeConfig, force: bool = False, strict: bool = False, until: str | None = None, run: Callable | None = None,
    allow_changed: bool = False,
) -> list[StageResult]:
    """Every stage in order up to `until`, each skipped when done for its inputs and settings, or
    extended with only what is new since the last build (see pipelines/run/increments.py). The build gets
    a record in `builds/` (see pipelines/run/build_records.py). `run(stage, cfg, inputs, options)` calls the
    stage (the Prefect flow passes its tasks here); each stage gets the results of those before it."""
    run = run or (lambda stage, *args: STAGE_BY_NAME[stage].run(*args))
    done: dict[str, StageResult] = {}
    ws = Workspace(cfg.workspace_dir)
    stages = STAGE_NAMES[: STAGE_NAMES.index(check_until(until)) + 1]
    damaged = None if force else first_damaged(ws, stages, cfg.check_outputs)
    clear_killed_writes(ws)
    build_id = open_build(ws)["id"]
    with ray_session(cfg):  # executor: ray connects (or starts a local Ray) once for the build
        for stage in stages:
            redo = force or (damaged is not None and stages.index(stage) >= stages.index(damaged))
            done[stage] = run(stage, cfg, dict(done), StageOptions(redo, strict, allow_changed))
            if stage in DOCUMENT_STAGES:  # also when skipped: repairs a ledger.json a kill left behind
                write_ledger(ws)
    finish_build(ws, build_id, STAGE_NAMES, DOCUMENT_STAGES)
    return list(done.values())


def first_damaged(ws: Workspace, stages: list[str], depth: str = "digest") -> str | None:
    """The first stage whose published files fail their check (`check_outputs`), named in a
    warning: it and every stage after it are redone in full, as after a change of its settings (a
    stage's later layers and the stages after it may have been computed from the damaged files)."""
    import warnings

    for stage in stages:
        ws.adopt(stage)
        problems = check_stage(ws, stage, depth)
        if problems:
            warnings.warn(f"{damage_report(ws, stage, problems)}: redoing {stage} and the stages after it")
            return stage
    return None


def stage_states(cfg: MixforgeConfig) -> dict[str, str]:
    """done / stale / missing per stage."""
    ws = Workspace(cfg.workspace_dir)
    fps = stage_fingerprints(cfg)
    return {stage: ws.stage_state(stage, fps[stage]) for stage in STAGE_NAMES}
