"""Proxy and search commands: `proxy train`, `proxy sweep`, `search` (run), `search verify` and
`search fit`. Each parses its options, calls the flow or function that does the work, and prints
what came back (tables.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from mixforge.cli import tables
from mixforge.cli.program import MAX_RUNS, MAX_SEED, app, console, quiet_prefect
from mixforge.errors import MixforgeError

proxy_app = typer.Typer(no_args_is_help=True, help="Train small proxy models on mixtures of the components.")
app.add_typer(proxy_app, name="proxy")
search_app = typer.Typer(no_args_is_help=True, help="Search for the mixture that best serves a target: "
                         "`mixforge search CONFIG`, `search verify CONFIG`, `search fit --runs TABLE --target COLUMN`.")
app.add_typer(search_app, name="search")


@proxy_app.command("train")
def proxy_train(
    config: Path = typer.Argument(..., help="Config file (the build must have run)."),
    mixture: Path = typer.Option(..., "--mixture", help="YAML mapping of component -> weight, a search's proposal.json, or `search fit --json` output (a schedule trains phase by phase)."),
    seed: Optional[int] = typer.Option(None, min=0, max=MAX_SEED, help="Seed of this run (default: the config's)."),
    run_id: Optional[str] = typer.Option(None, help="Name of the run (default: a hash of mixture and settings)."),
) -> None:
    """Train one proxy on a mixture and record it in the runs table."""
    from mixforge.config import load_config
    from mixforge.mixers.mixture_file import read_schedule
    from mixforge.progress import progress_bar
    from mixforge.proxy_training.proxy import run_proxy
    from mixforge.workspace_lock import writer_lock

    cfg = load_config(config)
    phases, provenance = read_schedule(mixture, _built_components(cfg))  # a bad mixture fails here, before training
    weights = phases if len(phases) > 1 else phases[0]  # a schedule trains phase by phase, to the ends it records
    ends = [phase["end_fraction"] for phase in provenance["schedule"]] if len(phases) > 1 else None
    with writer_lock(cfg.workspace_dir, "proxy train"), progress_bar() as bar:
        task = bar.add_task("proxy", total=None, rate="")
        row = run_proxy(cfg, weights, seed=seed, run_id=run_id, phase_ends=ends,
                        progress=lambda step, steps, tps: bar.update(task, completed=step, total=steps, rate=f"{tps:,.0f} tokens/s"))
    tables.print_runs([row])


@proxy_app.command("sweep")
def proxy_sweep(
    config: Path = typer.Argument(..., help="Config file (the build must have run)."),
    runs: int = typer.Option(64, "--runs", min=1, max=MAX_RUNS, help="Proxies to train on random mixtures."),
    seed: Optional[int] = typer.Option(None, min=0, max=MAX_SEED, help="Seed of the mixtures (default: the config's)."),
    verbose: bool = typer.Option(False, help="Show Prefect's run logs."),
) -> None:
    """Train proxies on random mixtures (RegMix's Dirichlet recipe) as a Prefect flow; finished
    runs are skipped on a rerun."""
    quiet_prefect(verbose)
    from mixforge.config import load_config

    cfg = load_config(config)
    from mixforge.flows.proxy import sweep_flow
    from mixforge.processes import proxy_children

    with proxy_children(cfg.workspace_dir, "sweep", console.print):
        rows = sweep_flow(str(config), runs, seed)
    tables.print_runs(rows)


@search_app.command("run")
def search_run(
    config: Path = typer.Argument(..., help="Config file (the build must have run)."),
    strategy: Optional[str] = typer.Option(None, help="regmix | climb | influence | bayesopt | bayesopt_mf | merge | aioli | cmr (default: search.strategy)."),
    target: Optional[str] = typer.Option(None, help="Metric to optimise, or METRIC=W,METRIC=W (default: search.target)."),
    runs: Optional[int] = typer.Option(None, min=2, max=MAX_RUNS, help="Proxy runs the search may train (default: search.runs)."),
    verbose: bool = typer.Option(False, help="Show Prefect's run logs."),
) -> None:
    """Propose a mixture (`mixforge search CONFIG`): train proxies, fit, simulate, report."""
    objective = _parse_target(target)  # a bad --target fails first, like the other options
    quiet_prefect(verbose)
    from mixforge.config import load_config

    cfg = load_config(config)  # a bad config fails here, before Prefect starts
    from mixforge.flows.search import search_flow
    from mixforge.processes import proxy_children

    with proxy_children(cfg.workspace_dir, "search", console.print):
        out = search_flow(str(config), strategy, objective, runs)
    tables.print_proposal(out["proposal"], None)
    Console().print(f"report: {Path(out['folder']) / 'report.md'}\nnext: mixforge search verify {config}")


@search_app.command("verify")
def search_verify(
    config: Path = typer.Argument(..., help="Config file of the search."),
    seeds: Optional[int] = typer.Option(None, min=1, max=1_000, help="Fresh proxies per mixture (default: search.verify_seeds)."),
    folder: Optional[Path] = typer.Option(None, help="A search folder (default: the latest search)."),
    preset: Optional[str] = typer.Option(None, help="Verify at this proxy preset (tiny | small | base) instead of proxy.preset, "
                                         "with the rank agreement between the two sizes (writes verify-<preset>.json)."),
    verbose: bool = typer.Option(False, help="Show Prefect's run logs."),
) -> None:
    """Train fresh proxies on the proposal and on uniform, natural and best-observed mixtures."""
    quiet_prefect(verbose)
    from mixforge.config import load_config
    from mixforge.flows.search import verify_flow
    from mixforge.mixers.search import latest_folder
    from mixforge.processes import proxy_children
    from mixforge.workspace import read_json

    cfg = load_config(config)
    if preset is not None:
        load_config(config, overrides={"proxy": {"preset": preset}})  # an unknown preset fails here, naming the choices
    folder = folder or latest_folder(cfg)
    with proxy_children(cfg.workspace_dir, "verify", console.print):
        result = verify_flow(str(config), str(folder), seeds, preset)
    tables.print_proposal(read_json(folder / "proposal.json"), result)
    sizes = result.get("sizes")
    if sizes:
        agreement = "too few runs" if sizes["spearman"] is None else f"Spearman {sizes['spearman']:.3f}"
        Console().print(f"measured at preset {result['preset']} (the search used {result['search_preset']}); rank agreement "
                        f"between the sizes on {sizes['mixtures']} of the search's mixtures: {agreement}")
    Console().print(f"report: {folder / 'report.md'}")


@search_app.command("fit")
def search_fit(
    runs: Path = typer.Option(..., "--runs", help="Runs table (.parquet, .csv or .tsv)."),
    target: str = typer.Option(..., "--target", help="Metric column to optimise."),
    eval_runs: Optional[Path] = typer.Option(None, "--eval", help="Held-out runs table to score the predictor on."),
    metrics: Optional[Path] = typer.Option(None, help="Metrics in a second table, joined on --id-column (RegMix's layout: on `index`)."),
    eval_metrics: Optional[Path] = typer.Option(None, "--eval-metrics", help="Metrics of the --eval runs in a second table."),
    id_column: str = typer.Option("run_id", help="Run id column (for --metrics joins and reports; `index` is found by itself)."),
    weight_prefix: str = typer.Option("w_", help="Weight columns start with this (with --metrics and none matching: every number in the runs table)."),
    weights: Optional[str] = typer.Option(None, help="Weight columns by name, comma-separated (instead of the prefix)."),
    predictor: str = typer.Option("auto", help="auto | lightgbm | mixing_law | linear | law_boost | ensemble | stacked."),
    maximize: Optional[bool] = typer.Option(None, "--maximize/--minimize", help="Direction (default: from the name)."),
    seed: int = typer.Option(0, min=0, max=MAX_SEED, help="Seed of the folds and candidates."),
    candidates: int = typer.Option(100_000, min=100, max=10_000_000, help="Simulated mixtures the predictor scores."),
    phase_ends: Optional[str] = typer.Option(None, "--phase-ends", help="Where a schedule's phases end, as shares of training, e.g. 0.8,1.0 (default: equal phases)."),
    as_json: bool = typer.Option(False, "--json", help="Print the fit report and proposal as JSON."),
) -> None:
    """Fit a predictor on any runs table (produced anywhere), report rank correlation, propose a mixture."""
    from mixforge.mixers.predictors import PREDICTORS
    from mixforge.mixers.fit_table import fit_table
    from mixforge.progress import progress_lines

    if predictor not in PREDICTORS:
        raise MixforgeError(f"--predictor {predictor!r}: choose one of {', '.join(PREDICTORS)}")
    out = fit_table(runs, target, eval_runs=eval_runs, metrics=metrics, eval_metrics=eval_metrics, id_column=id_column, weight_prefix=weight_prefix,
                    weight_columns=[w.strip() for w in weights.split(",")] if weights else None, predictor=predictor,
                    maximize=maximize, seed=seed, candidates=candidates, progress=progress_lines(),
                    phase_ends=_fractions("--phase-ends", phase_ends))
    if as_json:
        print(json.dumps(out, indent=2))
        return
    tables.print_table_fit(out)


def _parse_target(target: Optional[str]):
    """'bpb_mean' or 'bpb_mean=1,acc_next_line=0.5' (a weighted combination)."""
    if not target or "=" not in target:
        return target
    out = {}
    for part in target.split(","):
        name, _, weight = part.partition("=")
        try:
            out[name.strip()] = float(weight)
        except ValueError:
            raise MixforgeError(f"--target {target!r}: expected METRIC or METRIC=WEIGHT,METRIC=WEIGHT") from None
        if not abs(out[name.strip()]) < 1e300:  # nan, inf and overflow are no weights
            raise MixforgeError(f"--target {target!r}: the weight of {name.strip()!r} is {weight.strip()}, not a finite number")
    return out


def _fractions(option: str, text: str | None) -> list[float] | None:
    """A comma-separated list of numbers (e.g. 0.8,1.0); what they must be is checked by the caller."""
    if text is None:
        return None
    try:
        return [float(part) for part in text.split(",")]
    except ValueError:
        raise MixforgeError(f"{option} {text[:80]!r}: expected numbers separated by commas, e.g. 0.8,1.0") from None


def _built_components(cfg) -> Optional[list[str]]:
    """The components the tokens stage wrote (what a mixture may name), or None before the build."""
    from mixforge.workspace import Workspace

    record = Workspace(cfg.workspace_dir).stage_record("tokens")
    return sorted(record["counts"]["components"]) if record else None
