"""A predictor fitted on a search's runs: the runs as a table (schedules phase by phase), the fit
(with carried runs and content features where the search has them), the KL penalty and the
score candidates are ranked by."""

from __future__ import annotations

import json

import numpy as np
import polars as pl

from mixforge.errors import MixforgeError
from mixforge.mixers.context import SearchContext
from mixforge.mixers.model_choice import fit_predictor
from mixforge.mixers.objective import kl_by_phase, trust_region_weight
from mixforge.mixers.runs_file import RunsData, load_runs


def rows_data(rows: list[dict], ctx: SearchContext, min_runs: int = 2, phases: int = 1) -> RunsData:
    """The runs as a RunsData; with `phases` > 1, their schedules (the rows' `phases`) as
    phase<p>_w_<c> columns, one block per phase (see `run_phases`)."""
    table = pl.DataFrame(rows).unique("run_id", maintain_order=True)
    if phases == 1:
        return load_runs("this search's runs", list(ctx.objective.targets), table=table,
                         weight_columns=[f"w_{c}" for c in ctx.components], min_runs=min_runs)
    schedules = [json.loads(r["phases"]) if r.get("phases") else [] for r in table.to_dicts()]
    if any(len(sch) != phases for sch in schedules):
        raise MixforgeError(f"this search's runs mix schedules of {sorted({len(sch) for sch in schedules})} phases; expected {phases}")
    columns = {f"phase{p}_w_{c}": [sch[p].get(c, 0.0) for sch in schedules] for p in range(phases) for c in ctx.components}
    table = table.drop([c for c in table.columns if c.startswith("w_")]).with_columns(pl.Series(k, v) for k, v in columns.items())
    return load_runs("this search's runs", list(ctx.objective.targets), table=table, min_runs=min_runs)


def run_phases(rows: list[dict]) -> int:
    """The phases of the runs' schedules when every run trained one of the same length (regmix
    with search.phases); else 1: their token shares (w_ columns) describe them."""
    lengths = {len(json.loads(r["phases"])) if r.get("phases") else 1 for r in rows}
    return lengths.pop() if len(lengths) == 1 else 1


def kl_weight(ctx: SearchContext, report, X: np.ndarray, phases: int = 1) -> float:
    """search.kl_weight, or for `auto` the cross-validated MAE per median KL of the runs from the
    prior: leaving the region the runs cover costs what the predictor typically gets wrong."""
    if ctx.settings.kl_weight != "auto":
        return float(ctx.settings.kl_weight)
    return trust_region_weight(report.mae, X, np.tile(ctx.prior, phases), phases)


def scores(predictor, W: np.ndarray, ctx: SearchContext, penalty: float, phases: int = 1) -> np.ndarray:
    """Lower is better: the predicted objective plus the KL penalty towards the prior (summed
    over the phases of schedules)."""
    return ctx.objective.sign * predictor.predict(W) + penalty * kl_by_phase(W, np.tile(ctx.prior, phases), phases)


def fit(rows: list[dict], ctx: SearchContext, phases: int = 1, carried: list | None = None):
    """Predictor fitted on the runs (on their schedules when `phases` > 1), its cross-validated
    report, the runs, their objective values and the KL penalty for scoring candidates. With
    `carried` runs (mixers/carry.py), they are evidence as mixers/evidence.py decides; the data
    and values returned are the runs' own."""
    if carried:
        return _fit_with_carried(rows, ctx, phases, carried)
    data = rows_data(rows, ctx, min_runs=4, phases=phases)  # CLIMB fits on its first batch; the fit report says how little that is
    y = ctx.objective.column(data)
    space = ctx.content if phases == 1 else None
    X = data.weights if space is None else np.hstack([data.weights, space.of_mixtures(data.weights)])
    predictor, report = fit_predictor(ctx.settings.predictor, X, y, folds=ctx.settings.folds, seed=ctx.seed,
                                      n_content=space.dims if space else 0)
    return _reading_weights(predictor, space), report, data, y, kl_weight(ctx, report, data.weights, phases)


def _reading_weights(model, space):
    """A model fitted with content features, as a predictor of mixtures (their weights alone)."""
    from mixforge.mixers.content_space import WithContent

    return model if space is None else WithContent(model, space)


def carried_rows(ctx: SearchContext, carried: list) -> list[dict]:
    """Carried runs as rows over today's components (their own w_ columns named older components)."""
    out = []
    for c in carried:
        row = {k: v for k, v in c.row.items() if not k.startswith("w_") and k not in ("phases", "phase_ends")}
        row.update({f"w_{comp}": c.weights.get(comp, 0.0) for comp in ctx.components})
        if len(c.phases) > 1:
            row["phases"] = json.dumps([{comp: ph.get(comp, 0.0) for comp in ctx.components} for ph in c.phases])
        out.append(row)
    return out


def _fit_with_carried(rows: list[dict], ctx: SearchContext, phases: int, carried: list):
    from mixforge.mixers.evidence import fit_with_carried

    extra = carried_rows(ctx, carried)
    data = rows_data(rows + extra, ctx, min_runs=2, phases=phases)
    y = ctx.objective.column(data)  # a combination's z-scores over every run used
    is_carried = np.isin(np.array(data.run_ids), [r["run_id"] for r in extra])
    by_id = {r["run_id"]: c for r, c in zip(extra, carried)}
    kept = np.array([by_id[i].kept if i in by_id else 1.0 for i in data.run_ids])
    space, X = ctx.content if phases == 1 else None, data.weights
    if space is not None:  # a carried run's content is its own, not that of its mixture over today's components
        X = np.hstack([X, np.array([space.of_clusters(by_id[i].clusters) if i in by_id else space.of_mixtures(w[None, :])[0]
                                    for i, w in zip(data.run_ids, data.weights)])])
    predictor, report = fit_with_carried(ctx.settings.predictor, X, y, is_carried, kept, ctx.settings.folds, ctx.seed,
                                         space.dims if space else 0)
    own = rows_data(rows, ctx, min_runs=2, phases=phases)
    return _reading_weights(predictor, space), report, own, y[~is_carried], kl_weight(ctx, report, data.weights, phases)
