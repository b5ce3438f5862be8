"""The build machinery: running one stage resumably, its plan and layers, build records, file checks, shard tasks."""

# what the other packages use (they import it from here); the rest is internal

from mixforge.pipelines.run.build_records import (
    BUILDS,
    current_build,
    finish_build,
    list_builds,
    note_sources,
    open_build,
)
from mixforge.pipelines.run.datatrove_executor import default_workers, run_pipeline, stat_total
from mixforge.pipelines.run.increments import LayerPlan, full_layer, lineage, link_tree, resumed_plan
from mixforge.pipelines.run.plan import StagePlan, plan_stage
from mixforge.pipelines.run.shards import map_shards, ray_session
from mixforge.pipelines.run.stage import StageInputs, StageOptions, StageResult, run_side_stage, run_stage

__all__ = [
    "BUILDS", "LayerPlan", "StageInputs", "StageOptions", "StagePlan", "StageResult", "current_build",
    "default_workers", "finish_build", "full_layer", "lineage", "link_tree", "list_builds", "map_shards",
    "note_sources", "open_build", "plan_stage", "ray_session", "resumed_plan", "run_pipeline", "run_side_stage",
    "run_stage", "stat_total",
]
