"""Layers: what each build added to a stage, so that a rebuild processes only what is new.

A stage's record lists its layers, oldest first: `{id, consumed, files, counts}`. `id` is the
build that wrote the layer, `consumed` the upstream layers it processed, `files` the document
shards it covers (a document stage's own new shards, or the upstream shards a side stage
described). A stage extends its published outputs with a new layer only when its own settings
(`base`: its fingerprint without the upstream part) are unchanged and the upstream layers it
already consumed are still the first upstream layers; otherwise it runs in full, as one layer.

An incremental layer's files are named `<build>-<name>` (removed rows `<stage>-<build>-<name>`),
so they never collide with earlier shards and sort after them (corpus order = build order).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from mixforge.workspace import Workspace, atomic_write_json, read_json

LAYER_PLAN = "_layer.json"  # the plan of a partial run, so a resumed run adds the same layer


@dataclass
class LayerPlan:
    """What this run of a stage does: add layer `id` over the upstream layers `consumed`, on top
    of the published `previous` layers (none: a full run)."""

    id: str
    consumed: list[str]
    previous: list[dict] = field(default_factory=list)
    inputs: list[str] = field(default_factory=list)  # upstream shard names this run processes

    @property
    def incremental(self) -> bool:
        return bool(self.previous)

    def name(self, file_name: str) -> str:
        """The name of a file this run writes: prefixed by the build when it adds a layer."""
        return f"{self.id}-{file_name}" if self.incremental else file_name

    def removed_prefix(self, stage: str) -> str:
        """What the names of this run's removed-row files start with: `<stage>`, or for a layer `<stage>-<build>`."""
        return f"{stage}-{self.id}" if self.incremental else stage


def lineage(layers: list[dict]) -> list[str]:
    return [layer["id"] for layer in layers]


def consumed(layers: list[dict]) -> list[str]:
    return [c for layer in layers for c in layer["consumed"]]


def layer_files(layers: list[dict], ids: list[str]) -> list[str]:
    """The shard names of the given layers, in layer order."""
    return [f for layer in layers if layer["id"] in ids for f in layer["files"]]


def plan_layer(ws: Workspace, stage: str, fingerprint: str, base: str, build: str,
               upstream_layers: list[dict], all_inputs: list[str], force: bool = False) -> LayerPlan:
    """Full or incremental: see the module's docstring. A partial run started for the same
    fingerprint keeps the plan it started with (its record is gone once it started)."""
    saved = resumed_plan(ws, stage, fingerprint)
    if saved and not force:
        return saved
    record = ws.stage_record(stage) or {}
    done = consumed(record.get("layers", []))
    upstream = lineage(upstream_layers)
    can_extend = (not force and record.get("base") == base and done and upstream[: len(done)] == done
                  and len(upstream) > len(done) and build not in lineage(record["layers"]))
    if can_extend:
        new = upstream[len(done):]
        return LayerPlan(build, new, record["layers"], layer_files(upstream_layers, new))
    return LayerPlan(build, upstream, [], list(all_inputs))


def resumed_plan(ws: Workspace, stage: str, fingerprint: str) -> LayerPlan | None:
    """The plan of a partial run started for `fingerprint`, if there is one."""
    saved = read_json(ws.partial_dir(stage) / LAYER_PLAN)
    if saved and saved.get("fingerprint") == fingerprint:
        return LayerPlan(saved["id"], saved["consumed"], saved["previous"], saved["inputs"])
    return None


def full_layer(build: str, upstream_layers: list[dict], all_inputs: list[str]) -> LayerPlan:
    """A run over every input (for stages whose every output depends on the whole corpus)."""
    return LayerPlan(build, lineage(upstream_layers), [], list(all_inputs))


def save_plan(partial: Path, plan: LayerPlan, fingerprint: str) -> None:
    atomic_write_json(partial / LAYER_PLAN, asdict(plan) | {"fingerprint": fingerprint})


def link_tree(src: Path, dest: Path) -> None:
    """Hard links in `dest` to every file under `src` (kept where one is already there)."""
    import os

    for f in sorted(src.rglob("*")) if src.exists() else []:
        if f.is_file():
            target = dest / f.relative_to(src)
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.exists():
                os.link(f, target)


def carry_over(ws: Workspace, stage: str, partial: Path) -> None:
    """Hard-link the stage's published outputs into `partial` (docs, extra, removed rows), so
    the run extends them and publishing replaces them as before: until then they stay in place."""
    import os

    for name in ("docs", "extra"):
        link_tree(ws.stage_dir(stage) / name, partial / name)
    for f in ws.removed_files(stage):
        target = partial / "removed" / f.relative_to(ws.removed_dir)
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            os.link(f, target)
