"""A search on a workspace: the context a strategy needs (components, token counts, target,
checkpoint access for influence), the strategy run, and its results written under
`<workspace>/search/<strategy>-<target>/` (proposal.json, report.md, PNG plots); `verify` trains
fresh proxies on the proposal and on baselines and adds measured figures beside predicted ones.
`train` is how proxies get trained: the flows pass Prefect tasks, a notebook can pass a loop."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from mixforge.config import MixforgeConfig
from mixforge.errors import ConfigError, MixforgeError
from mixforge.mixers.model_choice import interval_around
from mixforge.mixers.mixture_file import current_verify, latest_search, proposal_digest
from mixforge.mixers.objective import Objective
from mixforge.mixture import phase_ends as phase_ends_of
from mixforge.mixers.report import write_report
from mixforge.proxy_training.runs_table import RunsTable
from mixforge.mixers.bayesopt import bayesopt, bayesopt_mf
from mixforge.mixers.carry import attach_carried, today_of
from mixforge.mixers.cmr_strategy import cmr, verified_forgetting
from mixforge.mixers.content_space import content_space
from mixforge.mixers.context import Proposal, SearchContext, TrainFn
from mixforge.mixers.fitting import fit, run_phases
from mixforge.mixers.aioli_strategy import aioli
from mixforge.mixers.merge_strategy import merge
from mixforge.mixers.model_inputs import aioli_inputs, checkpoint_figures, influence_inputs, merge_inputs
from mixforge.mixers.strategies import climb, influence, regmix
from mixforge.pipelines.outputs import next_line_file
from mixforge.workspace import Workspace, atomic_write_json, read_json

STRATEGIES = {"regmix": regmix, "climb": climb, "influence": influence, "bayesopt": bayesopt, "bayesopt_mf": bayesopt_mf,
              "merge": merge, "aioli": aioli, "cmr": cmr}
VERIFY_SEED = 1_000_000  # verification seeds start here: never a seed a search run used


def known_metrics(cfg: MixforgeConfig, summary: dict) -> list[str]:
    """The metric columns every run of this workspace gets."""
    names = sorted(summary["components"]) + ["mean"] + sorted(summary.get("eval_texts", {}))
    out = [f"{kind}_{n}" for n in names for kind in ("loss", "bpb")] + ["train_loss"]
    ws = Workspace(cfg.workspace_dir)
    tasks = ["next_line"] if next_line_file(ws).exists() else []
    return out + [f"acc_{t}" for t in tasks + [Path(t).name.split(".")[0] for t in cfg.proxy.tasks]]


def objective_for(cfg: MixforgeConfig, summary: dict, target=None) -> Objective:
    objective = Objective.parse(target or cfg.search.target, cfg.search.maximize)
    known = known_metrics(cfg, summary)
    unknown = [t for t in objective.targets if t not in known]
    if unknown:
        raise ConfigError(f"search target {', '.join(unknown)} is not a metric of this workspace's runs; "
                          f"known: {', '.join(known)}")
    objective.sign  # noqa: B018 - fails early when the direction cannot be inferred
    return objective


def search_folder(ws: Workspace, strategy: str, objective: Objective) -> Path:
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", objective.label)[:80]
    return ws.root / "search" / f"{strategy}-{slug}"


def context(cfg: MixforgeConfig, train: TrainFn, target=None, train_cheap: TrainFn | None = None) -> SearchContext:
    """`train_cheap` (bayesopt_mf): trains at search.cheap_proxy; the context then carries the
    same search at that fidelity (ctx.cheap) and a cheap run's cost in runs (FLOPs)."""
    from mixforge.proxy_training.proxy import run_flops, tokens_summary

    ws = Workspace(cfg.workspace_dir)
    summary = tokens_summary(ws)
    counts = {c: v["train_tokens"] for c, v in summary["components"].items() if v["train_tokens"] > 0}
    objective = objective_for(cfg, summary, target)

    def at(c: MixforgeConfig, trainer: TrainFn) -> SearchContext:
        return SearchContext(sorted(counts), counts, c.proxy.tokens, c.proxy.max_epochs, cfg.search, objective, cfg.seed, trainer,
                             target_tokens=cfg.search.target_tokens or cfg.export.tokens or sum(counts.values()))

    ctx = at(cfg, train)
    ctx.today = today_of(cfg, ws)  # once per search: it reads the cells and hashes the centroids
    ctx.content = content_space(ws, ctx.today, ctx.components)  # None without centroids or cells
    ctx.influence_inputs = lambda run_id: influence_inputs(cfg, ws, run_id, objective)
    ctx.merge_inputs = lambda metric: merge_inputs(cfg, ctx.components, metric)
    ctx.aioli_inputs = lambda *args: aioli_inputs(cfg, ctx.components, *args)
    ctx.cmr_inputs = lambda run_id: checkpoint_figures(cfg, run_id)
    if train_cheap is not None:
        cheap = cheap_config(cfg)
        vocab = summary["tokenizer"]["vocab_size"]
        ctx.cheap, ctx.cheap_proxy = at(cheap, train_cheap), cheap_proxy(cfg)
        ctx.cheap_cost = run_flops(cheap, vocab) / run_flops(cfg, vocab)
        if ctx.cheap_cost >= 1:
            raise ConfigError(f"search.cheap_proxy {ctx.cheap_proxy} costs {ctx.cheap_cost:.2f}x a run at proxy's own settings: "
                              "the cheap fidelity must be cheaper (a smaller preset or fewer tokens)")
    return ctx


SMALLER_PRESET = {"small": "tiny", "base": "small"}


def cheap_proxy(cfg: MixforgeConfig) -> dict:
    """search.cheap_proxy, or by default one preset smaller (a quarter of the tokens at tiny)."""
    if cfg.search.cheap_proxy is not None:
        return dict(cfg.search.cheap_proxy)
    smaller = SMALLER_PRESET.get(cfg.proxy.preset)
    return {"preset": smaller} if smaller else {"tokens": max(cfg.proxy.tokens // 4, 1)}


def cheap_config(cfg: MixforgeConfig) -> MixforgeConfig:
    """The config at the cheap fidelity; ConfigError naming search.cheap_proxy when it is not valid."""
    from pydantic import ValidationError

    from mixforge.config import ProxyConfig

    values = cheap_proxy(cfg)
    try:
        proxy = ProxyConfig.model_validate({**cfg.proxy.model_dump(), **values})
    except ValidationError as e:
        raise ConfigError("search.cheap_proxy: " + "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}"
                                                             for err in e.errors())) from None
    return cfg.model_copy(update={"proxy": proxy})


def _remeasured(ws: Workspace, run_ids: set[str]) -> int:
    """How many of `run_ids` were measured with an earlier build's model (a merge's component
    models whose tokens did not change), not trained."""
    rows = RunsTable(ws).load()
    if not run_ids or "trained_by" not in rows.columns:
        return 0
    return rows.filter(rows["run_id"].is_in(sorted(run_ids)) & rows["trained_by"].is_not_null()).height


def run_search(cfg: MixforgeConfig, train: TrainFn, strategy: str | None = None, target=None,
               train_cheap: TrainFn | None = None) -> tuple[Proposal, Path]:
    """Run a strategy; write proposal.json, report.md and the plots. Returns the proposal and its
    folder. `train_cheap`: how to train at search.cheap_proxy (`cheap_proxy`), for bayesopt_mf."""
    strategy = strategy or cfg.search.strategy
    if strategy not in STRATEGIES:
        raise ConfigError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    if cfg.search.phases > 1 and strategy not in ("regmix", "influence"):
        raise ConfigError(f"search.phases {cfg.search.phases} (a multi-phase schedule) is searched by regmix and influence; "
                          f"{strategy} proposes one mixture: set search.phases: 1 or choose one of those")
    if strategy == "cmr" and cfg.proxy.init == "scratch":
        raise ConfigError("the cmr strategy is for continual pretraining: its proxies continue a model. Set proxy.init: base "
                          "(one trained on the natural mixture) or the path of your own checkpoint")
    if strategy == "bayesopt_mf" and train_cheap is None:
        raise MixforgeError("bayesopt_mf trains at two fidelities: pass train_cheap (training at search.cheap_proxy)")
    ctx = context(cfg, train, target, train_cheap if strategy == "bayesopt_mf" else None)
    ws = Workspace(cfg.workspace_dir)
    table = RunsTable(ws).load()
    before = set(table["run_id"].to_list()) if table.height else set()
    carried = attach_carried(cfg, ws, ctx, ctx.today) if strategy == "regmix" and cfg.search.refresh_runs != "off" else {}
    from mixforge.proxy_training.base import bases_trained  # torch: imported when a search runs
    from mixforge.proxy_training.cost import training_flops

    bases_before = bases_trained(ws)
    proposal = STRATEGIES[strategy](ctx)
    used = set(proposal.runs_used)
    remeasured = _remeasured(ws, used - before)
    trained = len(used - before) - remeasured
    proposal.evidence = {"trained": trained, "reused": len(used & before), "carried": len(ctx.carried),
                         "refresh_runs": ctx.refresh if ctx.carried else None, **carried,
                         "flops": training_flops(cfg, ws, trained, bases_before, proposal.online,
                                                 uses_base=cfg.proxy.init == "base" or strategy == "merge")}
    if remeasured:
        proposal.evidence["remeasured"] = remeasured
    folder = search_folder(ws, strategy, ctx.objective)
    atomic_write_json(folder / "proposal.json", proposal.to_dict())
    atomic_write_json(ws.root / "search" / "latest.json", {"folder": folder.name})
    write_report(folder, proposal.to_dict(), current_verify(folder, proposal.to_dict()),
                 stale=(folder / "verify.json").exists())
    return proposal, folder


def latest_folder(cfg: MixforgeConfig) -> Path:
    return latest_search(Workspace(cfg.workspace_dir).root / "search")


RANK_RUNS = 8  # search runs retrained at a larger preset to measure the rank agreement between sizes


def verify(cfg: MixforgeConfig, train: TrainFn, folder: Path | None = None, seeds: int | None = None,
           preset: str | None = None, train_preset: TrainFn | None = None) -> dict:
    """Fresh proxies (`seeds` each, new seeds) on the proposal, uniform, natural and the best observed
    run's mixture (and a multi-phase schedule, phase by phase); measured target mean and spread
    beside the predicted value. Writes verify.json.

    With `preset` (and `train_preset`, training at that proxy preset): the candidates are trained
    at that size instead, and RANK_RUNS of the search's runs (spread over its measured range)
    again, for the rank agreement between the search's size and this one on the same mixtures
    (Olmix: 1M-parameter proxies rank 1B targets at only 0.73). Writes verify-<preset>.json."""
    train, preset = _verify_trainer(cfg, train, preset, train_preset)
    folder = folder or latest_folder(cfg)
    proposal = read_json(folder / "proposal.json")
    if not proposal:
        raise MixforgeError(f"{folder}/proposal.json not found: run the search first")
    ctx = context(cfg, train, proposal["targets"])
    fidelity = proposal.get("fidelity")  # bayesopt_mf: only the runs at the search's own proxy are in its units
    used = _search_runs(cfg, proposal)
    value = _run_value(ctx, used)
    candidates = _verify_candidates(cfg, folder, proposal, ctx, used, value)
    P = run_phases(used)  # a predictor over schedules when the search's runs trained schedules
    if (proposal.get("evidence") or {}).get("carried"):  # the same evidence the search fitted on
        attach_carried(cfg, Workspace(cfg.workspace_dir), ctx, ctx.today)
    fitted = len(used) >= 4 and not fidelity and proposal["strategy"] != "merge"  # merge's runs: one component each
    predictor, report = fit(used, ctx, P, ctx.carried)[:2] if fitted else (None, None)
    n_seeds = seeds or cfg.search.verify_seeds
    starts = _starts(cfg, used)  # (the search runs', verify's) when they differ: other units
    results, skipped, trained = {}, {}, {}
    for name, weights in candidates.items():
        phases = weights if isinstance(weights, list) else [weights]
        w = ctx.shares(np.ravel([[ph.get(c, 0.0) for c in ctx.components] for ph in phases]))  # overall token shares
        if not ctx.trainable(w[None, :])[0]:
            skipped[name] = f"repeats a component more than proxy.max_epochs ({ctx.max_epochs:g}) times in {ctx.budget:,} tokens"
            continue
        rows = trained[name] = train([weights] * n_seeds, [VERIFY_SEED + s for s in range(n_seeds)], f"verify {name}")
        predicted, interval = _verify_prediction(ctx, name, phases, w, predictor, report, P, preset, proposal)
        interval = None if starts else interval
        results[name] = _verify_result(weights, [value(r) for r in rows], predicted, interval, rows)
    out = {"objective": ctx.objective.label, "lower_is_better": ctx.objective.sign > 0, "seeds": n_seeds,
           "results": results, "skipped": skipped, "proposal_sha256": proposal_digest(proposal)}
    if starts:
        out["search_start"], out["start"] = starts
    if "proposal" in results and "uniform" in results:
        gain = ctx.objective.sign * (results["uniform"]["mean"] - results["proposal"]["mean"])
        out["gain_over_uniform"] = float(gain)
    if proposal.get("cmr") and {"proposal", "general only"} <= set(trained):
        out["cmr"] = verified_forgetting(proposal["cmr"], ctx.components, trained)
    if preset is not None:
        out["preset"], out["search_preset"] = preset, cfg.proxy.preset
        out["sizes"] = size_agreement(ctx, used, value, train)
        atomic_write_json(folder / f"verify-{preset}.json", out)
        write_report(folder, proposal, current_verify(folder, proposal))
        return out
    atomic_write_json(folder / "verify.json", out)
    write_report(folder, proposal, out)
    return out


def _verify_trainer(cfg: MixforgeConfig, train: TrainFn, preset: str | None,
                    train_preset: TrainFn | None) -> tuple[TrainFn, str | None]:
    """(how verify trains, the other preset or None): `train_preset` when verifying at a preset
    other than the search's; the search's own preset counts as none."""
    if preset is not None and preset != cfg.proxy.preset:
        if train_preset is None:
            raise MixforgeError("verify at another preset needs a way to train at it (train_preset)")
        return train_preset, preset
    return train, None


def _starts(cfg: MixforgeConfig, used: list[dict]) -> tuple[list[str], str] | None:
    """(where the search's runs started, where verify's start: "scratch" or a base id) when they
    differ, else None. A run continued from a base has seen the base's tokens too, so the search's
    figures and a predictor fitted on them are in other units than verify's (no interval compares)."""
    from mixforge.proxy_training.proxy import ready_base

    searched = sorted({r.get("base") or "scratch" for r in used})
    mine = (ready_base(cfg) or "scratch") if used else None
    return (searched, mine) if used and searched != [mine] else None


def _search_runs(cfg: MixforgeConfig, proposal: dict) -> list[dict]:
    """The runs the search fitted on, in the search's order (so the same folds); for bayesopt_mf
    only those at the search's own proxy, the ones in its units."""
    runs = RunsTable(Workspace(cfg.workspace_dir)).load()
    fidelity = proposal.get("fidelity")
    order = {r: i for i, r in enumerate(fidelity["main_run_ids"] if fidelity else proposal["runs_used"])}  # the search's order:
    return sorted((r for r in runs.to_dicts() if r["run_id"] in order), key=lambda r: order[r["run_id"]])  # the same folds


def _run_value(ctx: SearchContext, used: list[dict]):
    """value(row): the objective of one run: the metric itself, or for a combination the same
    weighted z-score sum the predictor learned (means and spreads of the search's runs `used`)."""
    from mixforge.mixers.objective import direction

    stats = {m: (np.mean([r[m] for r in used]), np.std([r[m] for r in used]) or 1.0) for m in ctx.objective.targets} if used else {}

    def value(row: dict) -> float:
        if ctx.objective.single:
            return float(row[ctx.objective.single])
        return float(sum(w * direction(m, ctx.objective.maximize) * (row[m] - stats[m][0]) / stats[m][1]
                         for m, w in ctx.objective.targets.items()))

    return value


def _verify_candidates(cfg: MixforgeConfig, folder: Path, proposal: dict, ctx: SearchContext, used: list[dict],
                       value) -> dict[str, dict | list[dict]]:
    """What verify trains, by name: the proposal, uniform, natural, the best observed run's mixture
    and a multi-phase schedule as it is (a list of phases; its phase ends checked first)."""
    comps = ctx.components
    candidates = {"proposal": proposal["weights"], "uniform": {c: 1 / len(comps) for c in comps},
                  "natural": proposal["natural"]}
    if used:
        y = np.array([value(r) for r in used])
        best = used[int(np.argmin(ctx.objective.sign * y))]
        candidates["best observed"] = {c: best[f"w_{c}"] for c in comps}
    if proposal.get("cmr"):  # the reference its forgetting is measured against
        candidates["general only"] = proposal["cmr"]["general_only"]
    schedule = proposal.get("schedule")
    if schedule:  # the multi-phase schedule itself, beside its static average ("proposal")
        check_schedule_ends(cfg, folder, schedule)
        candidates["schedule"] = [phase["weights"] for phase in schedule]
    return candidates


def _verify_prediction(ctx: SearchContext, name: str, phases: list[dict], w: np.ndarray, predictor, report, P: int,
                       preset: str | None, proposal: dict) -> tuple[float | None, dict | None]:
    """(predicted, interval) for one candidate: the search's predictor refitted on its runs (no
    interval at another preset: other units), or bayesopt_mf's calibrated prediction for its proposal
    (merge's: its merged model's figure)."""
    if predictor is None or len(phases) not in (1, P):
        predicted = None
    else:  # a schedule phase by phase; a single mixture is the same mixture in every phase
        x = np.ravel([[ph.get(c, 0.0) for c in ctx.components] for ph in phases]) if len(phases) == P else np.tile(w, P)
        predicted = float(predictor.predict(x[None, :])[0])
    interval = interval_around(predicted, report) if predicted is not None and preset is None else None  # other sizes: other units
    if (proposal.get("fidelity") or proposal["strategy"] == "merge") and name == "proposal" and preset is None:  # the search's own
        predicted, interval = proposal["predicted"], proposal["predicted_interval"]
    return predicted, interval


def _verify_result(weights, values: list[float], predicted: float | None, interval: dict | None, rows: list[dict]) -> dict:
    """One candidate's entry in verify.json: what it measured beside what was predicted."""
    return {"weights": weights, "measured": values, "mean": float(np.mean(values)),
            "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0, "predicted": predicted,
            "interval": interval, "inside": None if interval is None or interval["low"] is None
            else bool(interval["low"] <= np.mean(values) <= interval["high"]),
            "run_ids": [r["run_id"] for r in rows]}


def check_schedule_ends(cfg: MixforgeConfig, folder: Path, schedule: list[dict]) -> None:
    """Proxies train a schedule with search.phase_ends: verify refuses a proposal whose phases end elsewhere."""
    wanted = [phase["end_fraction"] for phase in schedule]
    have = cfg.search.phase_ends or phase_ends_of(None, len(schedule))
    if len(have) != len(wanted) or not np.allclose(have, wanted, rtol=0, atol=1e-6):
        raise ConfigError(f"{folder}/proposal.json: its schedule's phases end at {wanted} of training; proxies would train "
                          f"them ending at {have} (search.phase_ends): set search.phase_ends: {wanted} to verify it")


def size_agreement(ctx: SearchContext, used: list[dict], value, train: TrainFn) -> dict:
    """Spearman between the search runs' measured values and the same mixtures retrained at the
    larger preset (RANK_RUNS of them, at evenly spaced ranks of the measured values)."""
    from mixforge.mixers.model_choice import agreement

    if len(used) < 3:
        return {"mixtures": 0, "spearman": None}
    order = np.argsort([value(r) for r in used], kind="stable")
    picked = [used[i] for i in order[np.unique(np.linspace(0, len(used) - 1, min(RANK_RUNS, len(used))).round().astype(int))]]
    mixtures = [json.loads(r["phases"]) if r.get("phases") else {c: r[f"w_{c}"] for c in ctx.components} for r in picked]
    rows = train(mixtures, [VERIFY_SEED + 100 + i for i in range(len(mixtures))], "verify: search runs at the larger preset")
    small, large = np.array([value(r) for r in picked]), np.array([value(r) for r in rows])
    return {"mixtures": len(picked), "spearman": round(agreement(small, large)["spearman"], 4),
            "search_values": small.tolist(), "values": large.tolist(), "run_ids": [r["run_id"] for r in rows]}
