"""The build's stages, each declared once, in order.

Every stage runs as `run(cfg, inputs, options)`: `inputs` holds the results of the stages before it
(by name; a stage reads those it lists in `reads`), `options` how the build runs (force, strict,
allow_changed). A stage's fingerprint is `fingerprint(cfg, the previous stage's fingerprint)`, so
a change anywhere upstream reruns it. The stage lists, the fingerprint chain, the ledger's
document stages and the build loop (pipelines/build.py) all come from this table.

    ingest -> filter -> dedup -> embed -> cluster -> quality -> prune -> components -> tokens
    (documents)                 (vectors, clusters and scores of the dedup output)   (kept corpus)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from mixforge.config import MixforgeConfig
from mixforge.pipelines.cluster import cluster_fingerprint, run_cluster
from mixforge.pipelines.components import components_fingerprint, run_components
from mixforge.pipelines.dedup import dedup_fingerprint, run_dedup
from mixforge.pipelines.embed import embed_fingerprint, run_embed
from mixforge.pipelines.filter import filter_fingerprint, run_filter
from mixforge.pipelines.ingest import ingest_fingerprint, run_ingest
from mixforge.pipelines.prune import prune_fingerprint, run_prune
from mixforge.pipelines.quality import quality_fingerprint, run_quality
from mixforge.pipelines.tokens import run_tokens, tokens_fingerprint
from mixforge.stage_files import check_stage
from mixforge.pipelines.run import StageInputs, StageOptions, StageResult
from mixforge.workspace import Workspace, atomic_write_json, read_json


@dataclass(frozen=True)
class Stage:
    name: str
    run: Callable[[MixforgeConfig, StageInputs, StageOptions], StageResult]
    fingerprint: Callable[[MixforgeConfig, str], str]
    removes_documents: bool  # keeps or removes documents: the ledger counts it
    reads: tuple[str, ...]  # the earlier stages whose outputs it reads


STAGE_TABLE = (
    Stage("ingest", run_ingest, ingest_fingerprint, True, ()),
    Stage("filter", run_filter, filter_fingerprint, True, ("ingest",)),
    Stage("dedup", run_dedup, dedup_fingerprint, True, ("filter",)),
    Stage("embed", run_embed, embed_fingerprint, False, ("dedup",)),
    Stage("cluster", run_cluster, cluster_fingerprint, False, ("embed",)),
    Stage("quality", run_quality, quality_fingerprint, False, ("cluster",)),
    Stage("prune", run_prune, prune_fingerprint, True, ("quality", "dedup")),
    Stage("components", run_components, components_fingerprint, False, ("prune",)),
    Stage("tokens", run_tokens, tokens_fingerprint, False, ("components",)),
)
STAGE_BY_NAME = {s.name: s for s in STAGE_TABLE}
STAGE_NAMES = [s.name for s in STAGE_TABLE]
DOCUMENT_STAGES = [s.name for s in STAGE_TABLE if s.removes_documents]


def stage_fingerprints(cfg: MixforgeConfig) -> dict[str, str]:
    """What each stage's fingerprint would be now (from the inputs and the config)."""
    fps, previous = {}, ""
    for stage in STAGE_TABLE:
        fps[stage.name] = previous = stage.fingerprint(cfg, previous)
    return fps


def ledger(ws: Workspace) -> dict:
    """The ledger, per document stage, read from the published stage records: a stage's counts
    are in the record written last when it publishes, so they are never out of step with it."""
    return {stage: record["counts"] for stage in DOCUMENT_STAGES if (record := ws.stage_record(stage))}


def write_ledger(ws: Workspace) -> None:
    """ledger.json: a copy of the published records' counts for scripts. The records are the truth
    (`ledger`), so a kill before this write loses nothing and the next build repairs it."""
    counts = ledger(ws)
    if read_json(ws.ledger_path) != counts:
        atomic_write_json(ws.ledger_path, counts)


def check_workspace(ws: Workspace, depth: str = "size") -> dict[str, list[str]]:
    """Problems per published stage (only stages with some), for `mixforge status [--check]`."""
    return {stage: problems for stage in STAGE_NAMES if (problems := check_stage(ws, stage, depth))}
