"""Build records: one per `mixforge build` that ran a stage, `builds/<id>.json`, ids b0001, b0002...

A build is opened when it starts and finished when its last stage is done; a build interrupted
and rerun is the same build (its layers are named by its id, so a resumed stage adds the same
layer). The record holds what the build found in the sources and its own ledger: per document
stage, the counts of the layer it added (see pipelines/run/increments.py), each checked in = out + removed.
"""

from __future__ import annotations

import time

from mixforge.workspace import Workspace, atomic_write_json, read_json

BUILDS = "builds"


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def list_builds(ws: Workspace) -> list[dict]:
    """Every build record, oldest first."""
    folder = ws.root / BUILDS
    records = [read_json(f) for f in sorted(folder.glob("b[0-9][0-9][0-9][0-9].json"))] if folder.exists() else []
    return [r for r in records if r]


def clear_killed_writes(ws: Workspace) -> None:
    """Delete the temp files that a killed build's atomic writes left in builds/ and at the
    workspace's top (ledger.json's). Call as a build starts, holding the workspace's lock: no
    other build is writing them."""
    for stale in [*(ws.root / BUILDS).glob(".*.tmp"), *ws.root.glob(".*.tmp")]:
        if stale.is_file():
            stale.unlink(missing_ok=True)


def open_build(ws: Workspace) -> dict:
    """The unfinished build (an interrupted one is resumed), or a new one."""
    builds = list_builds(ws)
    if builds and builds[-1].get("finished") is None:
        return builds[-1]
    number = int(builds[-1]["id"][1:]) + 1 if builds else 1
    record = {"id": f"b{number:04d}", "started": _now(), "finished": None, "sources_added": [], "sources_changed": [],
              "sources_deleted": [], "retracted": None, "ledger": {}}
    atomic_write_json(ws.root / BUILDS / f"{record['id']}.json", record)
    return record


def current_build(ws: Workspace) -> str:
    return open_build(ws)["id"]


def note_sources(ws: Workspace, build: str, diff: dict, retracted: dict | None) -> None:
    """What this build's ingest found: files added, changed and deleted since the last build."""
    path = ws.root / BUILDS / f"{build}.json"
    record = read_json(path)
    record.update(sources_added=diff["added"], sources_changed=diff["changed"], sources_deleted=diff["deleted"],
                  retracted=retracted)
    atomic_write_json(path, record)


def build_ledger(ws: Workspace, build: str, document_stages: list[str]) -> dict:
    """Per document stage, the counts of the layer `build` added (absent: it ran no such stage)."""
    ledger = {}
    for stage in document_stages:
        for layer in (ws.stage_record(stage) or {}).get("layers", []):
            if layer["id"] == build:
                ledger[stage] = layer["counts"]
    return ledger


def finish_build(ws: Workspace, build: str, stages: list[str], document_stages: list[str]) -> dict | None:
    """Close the build with its ledger and the stages it ran (of `stages`, in order); a build that
    ran no stage (nothing had changed) leaves no record."""
    path = ws.root / BUILDS / f"{build}.json"
    record = read_json(path)
    if record is None:
        return None
    ran = [stage for stage in stages if any(layer["id"] == build for layer in (ws.stage_record(stage) or {}).get("layers", []))]
    if not ran:
        path.unlink(missing_ok=True)
        return None
    record.update(finished=_now(), stages=ran, ledger=build_ledger(ws, build, document_stages))
    atomic_write_json(path, record)
    return record
