"""Runs carried across builds: earlier proxy runs re-expressed over today's components.

A run's id covers the data it trained on, so after a build changes the components its row is no
longer a result (`proxy train` and a search retrain its mixture, as before). What it measured is
still evidence about today's data: its row records the share of its tokens from each cell (fine
cluster x source, pipelines/content.py), and today's components are unions of cells. Across a
refit of the centroids the cells go through the documents both versions assigned (fit.json's
transitions). A carried run keeps its measured metrics, says from which build it comes and what
share of its tokens came from cells still kept unchanged, and only ever feeds the predictor
(mixers/evidence.py); it is never returned as a run of today's data.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import polars as pl

from mixforge.config import MixforgeConfig
from mixforge.mixture import phase_ends as phase_ends_of, phase_lengths
from mixforge.workspace import Workspace

MIN_KEPT = 0.5  # a run with less than half of its tokens' cells left describes another corpus: not carried
CHANGED_SHARE = 0.25  # a component whose tokens are more than this share new or gone gets refresh runs of its own
SETTINGS = ("preset", "seq_len", "batch_size", "lr", "schedule")  # and the tokenizer, for targets counted in its tokens
PER_BYTE = ("bpb_", "acc_")  # targets a tokenizer does not change the units of (a full rebuild retrains the default one)


@dataclass
class Today:
    """What today's components are made of: their cells and tokens, and how cells map to them."""

    cells: pl.DataFrame  # component, cluster, source, tokens, docs
    key: str  # the cell field components are made of: "cluster" (merged clusters) or "source"
    mapping: dict  # key value -> component
    centroids: dict | None
    transitions: list[dict]
    data: str  # the data fingerprint of today's token shards

    def cell_sizes(self, measure: str = "docs") -> dict[tuple[int, str], int]:
        """Documents (or tokens) per cell: what is new or gone is counted in documents, which no
        tokenizer changes."""
        return {(c, s): n for c, s, n in self.cells.select("cluster", "source", measure).iter_rows()}


def today(ws: Workspace, data: str) -> Today | None:
    """Today's basis (None for a workspace without components or a document index)."""
    from mixforge.pipelines.content import cell_tokens, centroid_identity
    from mixforge.pipelines.outputs import cluster_fit, load_components

    cells = cell_tokens(ws, data)
    components = load_components(ws) or {}
    if cells is None or "mapping" not in components:
        return None
    key = components["mapping"]["key"]
    mapping = {(int(k) if key == "cluster" else k): c for k, c in components["mapping"]["rows"]}
    fit = cluster_fit(ws)
    return Today(cells, key, mapping, centroid_identity(ws), fit.get("transitions", []), data)


@dataclass
class Carried:
    """An earlier run over today's components."""

    row: dict  # its row as recorded (metrics, run id, build)
    phases: list[dict[str, float]]  # per phase, its shares over today's components
    kept: float  # share of its tokens from cells still in the corpus unchanged (appends keep them whole)
    build: str | None
    cells_then: dict[tuple[int, str], float]  # its cells' sizes when it trained, over today's clusters
    measure: str  # what those sizes count: "docs" (or "tokens", rows from before documents were recorded)
    clusters: dict[int, float]  # its tokens' share per today's cluster (phases weighed by length)

    @property
    def weights(self) -> dict[str, float]:
        names = sorted({c for ph in self.phases for c in ph})
        return {c: sum(ph.get(c, 0.0) for ph in self.phases) / len(self.phases) for c in names}


def _chain(start: str, end: str, transitions: list[dict]) -> list[dict] | None:
    """The transitions from centroids `start` to `end` (by digest), in order; None without a path."""
    out, at = [], start
    while at != end:
        step = next((t for t in transitions if t["from"] == at), None)
        if step is None or len(out) > len(transitions):
            return None
        out.append(step)
        at = step["to"]
    return out


def _through(cells: list[list], chain: list[dict]) -> dict[tuple[int, str], list[float]]:
    """{(cluster, source): [share, size then]} after following `chain` (each old cluster's share
    and size split by where its documents went). A cell is [cluster, source, share, tokens, docs]
    (docs missing in older rows: their tokens are the size)."""
    at = {(int(cell[0]), cell[1]): [cell[2], cell[-1]] for cell in cells}
    for step in chain:
        moves = defaultdict(dict)
        for old, new, tokens in step["tokens"]:
            moves[old][new] = tokens
        nxt: dict[tuple[int, str], list[float]] = defaultdict(lambda: [0.0, 0.0])
        for (cluster, source), (share, tokens) in at.items():
            dest = moves.get(cluster)
            if not dest:
                continue  # none of its documents were assigned by both versions: gone
            total = sum(dest.values())
            for new, t in dest.items():
                nxt[(new, source)][0] += share * t / total
                nxt[(new, source)][1] += tokens * t / total
        at = dict(nxt)
    return at


def carry(rows: list[dict], now: Today, settings: dict, phases: int, phase_ends: list[float] | None = None,
          targets: list[str] | None = None) -> tuple[list[Carried], dict[str, int]]:
    """The rows of earlier data that can be re-expressed over today's components, and how many
    others were left out, by reason. `settings`: today's proxy settings (SETTINGS, `tokens` and
    `tokenizer_sha256`); a run trained at others measured something else. With `targets` all per
    byte (or accuracies), runs of another tokenizer count too."""
    carried, skipped = [], defaultdict(int)
    sizes = {m: now.cell_sizes(m) for m in ("docs", "tokens")}
    per_byte = bool(targets) and all(t.startswith(PER_BYTE) for t in targets)
    for row in rows:
        if row.get("data") == now.data:
            continue  # a result of today's data (reused exactly when asked for again)
        reason = _unfit(row, settings, phases, phase_ends, per_byte)
        content = json.loads(row["content"]) if not reason else None
        chain = []
        if content and now.key == "cluster":
            start = (content.get("centroids") or {}).get("digest")
            chain = _chain(start, now.centroids["digest"], now.transitions) if start and now.centroids else None
            if chain is None:
                reason = "centroids refitted without a record of where their documents went"
        if reason:
            skipped[reason] += 1
            continue
        out, kept, then, clusters = [], [], {}, []
        measure = "docs" if all(len(cell) > 4 for ph in content["phases"] for cell in ph) else "tokens"
        now_sizes = sizes[measure]
        for cells in content["phases"]:
            mapped = _through(cells, chain)
            shares, unchanged, by_cluster = defaultdict(float), 0.0, defaultdict(float)
            for (cluster, source), (share, size) in mapped.items():
                comp = now.mapping.get(cluster if now.key == "cluster" else source)
                if comp is None:
                    continue  # its cluster was pruned or its source removed
                shares[comp] += share
                by_cluster[cluster] += share
                unchanged += share * min(1.0, now_sizes.get((cluster, source), 0) / size) if size else 0.0
                then[(cluster, source)] = max(then.get((cluster, source), 0), size)
            out.append(dict(shares))
            kept.append(unchanged)
            clusters.append(by_cluster)
        mass = min(sum(ph.values()) for ph in out)
        if mass < MIN_KEPT:
            skipped[f"less than {MIN_KEPT:.0%} of its tokens' data is still in the corpus"] += 1
            continue
        out = [{c: v / sum(ph.values()) for c, v in ph.items()} for ph in out]
        lengths = phase_lengths(phase_ends_of(phase_ends, len(out)))
        overall = defaultdict(float)
        for by_cluster, length in zip(clusters, lengths):
            for cluster, share in by_cluster.items():
                overall[cluster] += share * length
        carried.append(Carried(row, out, float(sum(k * w for k, w in zip(kept, lengths))), content.get("build"), then, measure,
                               dict(overall)))
    return carried, dict(skipped)


def _unfit(row: dict, settings: dict, phases: int, phase_ends: list[float] | None, per_byte: bool = False) -> str | None:
    """Why a row cannot be carried (None when it can)."""
    if not row.get("content"):
        return "no content recorded (trained before mixforge recorded it, or on a hand-made tokens stage)"
    if any(row.get(k) != settings.get(k) for k in SETTINGS):
        return "trained at other proxy settings"
    from mixforge.proxy_training.base import start_of  # torch: imported when a search carries runs

    if start_of(row.get("base")) != settings.get("start", "scratch"):
        return "trained from another starting point (proxy.init)"
    if not per_byte and row.get("tokenizer_sha256") != settings.get("tokenizer_sha256"):
        return "trained with another tokenizer, and the target is counted in its tokens (a loss)"
    trained = math.ceil(settings["tokens"] / settings["seq_len"]) * settings["seq_len"]
    if row.get("tokens") != trained:
        return "trained on another token budget"
    run_phases = len(json.loads(row["phases"])) if row.get("phases") else 1
    ends = json.loads(row["phase_ends"]) if row.get("phase_ends") else None
    if run_phases != phases or (phases > 1 and ends != phase_ends and ends is not None):
        return "trained another number or length of phases"
    return None


def changed_components(carried: list[Carried], now: Today) -> dict[str, float]:
    """Per component of today: the share of its documents (tokens, for runs recorded before
    documents were) that are new or gone since the latest build the carried runs come from (1.0
    for a component none of them saw)."""
    latest = max((c.build or "" for c in carried), default="")
    then: dict[tuple[int, str], float] = {}
    measure = "docs"
    for c in carried:
        if (c.build or "") == latest:
            then.update(c.cells_then)
            measure = c.measure
    now_sizes, totals, diff = now.cell_sizes(measure), defaultdict(int), defaultdict(float)
    for (cluster, source), size in now_sizes.items():
        comp = now.mapping.get(cluster if now.key == "cluster" else source)
        totals[comp] += size
        diff[comp] += abs(size - then.get((cluster, source), 0))
    for (cluster, source), size in then.items():  # cells gone since: their documents left the component
        comp = now.mapping.get(cluster if now.key == "cluster" else source)
        if (cluster, source) not in now_sizes and comp is not None:
            diff[comp] += size
    return {comp: min(1.0, diff[comp] / totals[comp]) for comp in sorted(c for c in totals if c is not None)}


MIN_CARRIED = 4  # fewer carried runs than a fit needs are no evidence worth a smaller budget


def today_of(cfg: MixforgeConfig, ws: Workspace) -> Today | None:
    """What today's components are made of (None without cells)."""
    from mixforge.proxy_training.runs_table import data_fingerprint

    return today(ws, data_fingerprint(cfg, ws))


def attach_carried(cfg: MixforgeConfig, ws: Workspace, ctx, now: Today | None) -> dict:
    """Earlier runs re-expressed over today's components onto ctx.carried, with
    how much each component changed since (ctx.changed); what was left out and why, for the record."""
    from mixforge.proxy_training.base import start_kind
    from mixforge.proxy_training.runs_table import RunsTable, tokens_summary

    rows = RunsTable(ws).load().to_dicts()
    if now is None or not rows:
        return {}
    rows = [r for r in rows if all(r.get(t) is not None for t in ctx.objective.targets)]
    settings = cfg.proxy.model_dump(include={"preset", "seq_len", "batch_size", "lr", "schedule", "tokens"})
    settings["tokenizer_sha256"] = tokens_summary(ws)["tokenizer"]["sha256"]
    settings["start"] = start_kind(cfg)
    carried, skipped = carry(rows, now, settings, cfg.search.phases, cfg.search.phase_ends, list(ctx.objective.targets))
    carried = [c for c in carried if all(comp in ctx.components for ph in c.phases for comp in ph)]
    if len(carried) < MIN_CARRIED:
        if carried:
            skipped[f"fewer than {MIN_CARRIED} runs could be carried"] = len(carried)
        return {"carried_skipped": skipped} if skipped else {}
    ctx.carried, ctx.changed = carried, changed_components(carried, now)
    builds = sorted({c.build or "unknown" for c in carried})
    return {"carried_from": builds, "carried_kept_share": round(float(np.mean([c.kept for c in carried])), 4),
            "carried_runs": [{"run_id": c.row["run_id"], "build": c.build, "kept_share": round(c.kept, 4),
                              "weights": ctx.as_dict(np.array([c.weights.get(comp, 0.0) for comp in ctx.components]))}
                             for c in carried],
            "changed_components": {c: round(v, 4) for c, v in ctx.changed.items()}, "carried_skipped": skipped}
