"""What every stage works out before it runs: its fingerprint, its base and the layer it adds.

`fingerprint`: the stage's settings and its upstream stage's fingerprint (a change of either
reruns it). `base`: the settings alone; a run with the same base may extend the published layers
with only what is new upstream (see pipelines/run/increments.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from mixforge.config import MixforgeConfig
from mixforge.pipelines.run.increments import LayerPlan, plan_layer
from mixforge.ledger import parquet_files
from mixforge.pipelines.run.build_records import current_build
from mixforge.pipelines.run.stage import StageResult
from mixforge.workspace import Workspace


@dataclass
class StagePlan:
    ws: Workspace
    fingerprint: str
    base: str
    layer: LayerPlan
    inputs_dir: Path  # the upstream documents the stage reads or describes

    @property
    def files(self) -> list[Path]:
        """The upstream shards this run reads (after a build: only the new ones)."""
        return [self.inputs_dir / name for name in self.layer.inputs]


def plan_stage(cfg: MixforgeConfig, stage: str, fingerprint: Callable[[MixforgeConfig, str], str], upstream: StageResult,
               force: bool, inputs_dir: str | None = None) -> StagePlan:
    """The plan of `stage` over `upstream`'s layers; its inputs are the shards of `inputs_dir`
    (default: the upstream documents)."""
    ws = Workspace(cfg.workspace_dir)
    folder = Path(inputs_dir or upstream.docs_dir)
    own, base = fingerprint(cfg, upstream.fingerprint), fingerprint(cfg, "")
    layer = plan_layer(ws, stage, own, base, current_build(ws), upstream.layers, [f.name for f in parquet_files(folder)], force)
    return StagePlan(ws, own, base, layer, folder)
