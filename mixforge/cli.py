"""The `mixforge` command line. Heavy libraries (torch, datatrove, prefect) load inside the
commands that need them, so `mixforge --help` stays instant."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from mixforge.errors import MixforgeError, first_few

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Filter, deduplicate and mix pretraining data.")
console = Console(stderr=True, soft_wrap=True)  # never break paths in messages
DEMO_WORKSPACE = "mixforge-demo"
# Bounds of numeric options: past them a value is a typo (nan, inf and overflow included), refused
# as a usage error naming the option before any work starts.
MAX_SEED, MAX_RUNS, MAX_TOKENS = 2**32 - 1, 100_000, 10**15


def _positive_float(value):
    """Callback of float options: 0 or less (a cap of 0 epochs), nan and inf mean nothing."""
    if value is not None and not 0 < value <= 1e6:
        raise typer.BadParameter(f"{value}: expected a number above 0 and at most 1e6")
    return value


def main() -> None:
    import warnings

    # user-facing warnings (e.g. weights normalised) as one line, not with a source excerpt
    warnings.formatwarning = lambda message, category, *args, **kwargs: f"warning: {message}\n"
    signal.signal(signal.SIGTERM, _terminated)  # `kill PID` unwinds like Ctrl-C: pools, servers, children stop
    # `mixforge search CONFIG ...` runs a search; `search fit` and `search verify` are subcommands
    args = sys.argv[1:]
    if len(args) >= 2 and args[0] == "search" and args[1] not in ("run", "fit", "verify", "--help", "-h"):
        args = ["search", "run"] + args[1:]
    try:
        code = app(args, prog_name="mixforge", standalone_mode=False)  # click returns typer.Exit's code instead of exiting
        if code == 130:  # typer turns Ctrl-C (and SIGTERM, see _terminated) into exit code 130
            console.print("interrupted: rerun the same command to resume where it stopped")
        if isinstance(code, int) and code:
            sys.exit(code)
    except MixforgeError as e:
        console.print(f"[bold red]error:[/] {e}", highlight=False)
        sys.exit(2)
    except KeyboardInterrupt:
        console.print("interrupted: rerun the same command to resume where it stopped")
        sys.exit(130)
    except (typer.Abort, typer.Exit) as e:
        sys.exit(getattr(e, "exit_code", 1))
    except typer.TyperException as e:  # usage errors: typer raises its own (vendored) click classes, exit code 2
        e.show() if hasattr(e, "show") else console.print(f"[bold red]error:[/] {e.format_message()}", highlight=False)
        sys.exit(e.exit_code)
    except Exception as e:  # click usage errors (a typer that uses click itself) carry their own exit code
        import click

        from mixforge.write_errors import write_error

        if isinstance(e, click.ClickException):
            e.show()
            sys.exit(e.exit_code)
        if _interrupted(e):  # Ctrl-C also stopped Prefect's temporary server: reporting the crash to it failed
            console.print("interrupted: rerun the same command to resume where it stopped")
            sys.exit(130)
        if (err := write_error(e, None)) is not None:  # a full disk or a read-only folder, wrapped or not
            console.print(f"[bold red]error:[/] {err}", highlight=False)
            sys.exit(2)
        raise


def _interrupted(e: BaseException | None) -> bool:
    """Whether `e` was raised while handling a KeyboardInterrupt (Ctrl-C or SIGTERM)."""
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, KeyboardInterrupt):
            return True
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return False


def _terminated(signum, frame) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends the process at once
    raise KeyboardInterrupt


@app.command()
def init(
    source: List[str] = typer.Option([], "--source", "-s", help="Input file, folder or glob (repeatable)."),
    workspace: str = typer.Option("./mixforge-work", help="Workspace folder for all outputs."),
    out: Path = typer.Option(Path("mixforge.yaml"), help="Config file to write."),
    label_field: Optional[str] = typer.Option(None, help="Take each record's label from this field (default: file name)."),
    force: bool = typer.Option(False, help="Overwrite an existing config file."),
) -> None:
    """Write a commented default config that reads the given sources, with each source's kind
    guessed from a seeded sample of its records (the evidence is written beside it)."""
    from mixforge.config_template import default_config, render_config
    from mixforge.workspace import atomic_write_text

    if out.exists() and not force:
        raise MixforgeError(f"{out} exists; pass --force to overwrite it")
    if not source:
        raise MixforgeError("give at least one --source PATH")
    base = out.resolve().parent
    missing = [s for s in source if "*" not in s and not Path(s).exists()]
    if missing:
        raise MixforgeError(f"--source not found: {', '.join(missing)}")
    cfg = default_config([str(Path(s).resolve()) for s in source], workspace, label_field, base)
    from mixforge.pipelines.filter_preview import suggest_source_settings

    cfg._base_dir = base  # the guesses read the sources as the build will

    def done(i: int, note: dict) -> None:
        relaxed = f"; filters: {note['filters']}" if "filters" in note else ""
        console.print(f"sources[{i}] {cfg.sources[i].path}: kind {cfg.sources[i].kind} ({note['kind']}){relaxed}", highlight=False)

    notes = suggest_source_settings(cfg, done=done)  # each source's kind (and filter overrides) from a sample
    atomic_write_text(out, render_config(cfg, notes))
    console.print(f"wrote {out} ({len(source)} source(s)); check the guessed kinds, then: mixforge filter-preview {out}; mixforge build {out}")


@app.command()
def build(
    config: Optional[Path] = typer.Argument(None, help="Config file (see `mixforge init`)."),
    demo: bool = typer.Option(False, help="Build the built-in demo corpus (config ignored)."),
    workspace: Optional[str] = typer.Option(None, help="Override the config's workspace."),
    force: bool = typer.Option(False, help="Redo every stage even if its inputs are unchanged."),
    strict: bool = typer.Option(False, help="Fail on malformed records instead of counting them."),
    until: Optional[str] = typer.Option(None, help="Stop after this stage (e.g. dedup)."),
    allow_changed: bool = typer.Option(False, help="Rebuild when input files changed or were deleted since the last build, retracting their old documents."),
    verbose: bool = typer.Option(False, help="Show Prefect's run logs."),
) -> None:
    """Run the data build as a Prefect flow: ingest, filter, dedup, embed, cluster, quality,
    prune, components, tokens. Finished stages are skipped; after a build, files added to the
    sources are processed alone and appended."""
    config_path = _config_path(config, demo, workspace)
    _quiet_prefect(verbose)
    from mixforge.config import load_config
    from mixforge.pipelines.ingest import plan_work

    workspace = str(Path(workspace).resolve()) if workspace and not demo else None
    cfg = load_config(config_path, workspace=workspace)
    plan_work(cfg)  # fail fast on missing sources and bad options, before Prefect starts
    from mixforge.pipelines.build import check_until

    check_until(until)
    from mixforge.flows.build import build_flow
    from mixforge.processes import ChildTracker, reap_leftovers
    from mixforge.workspace_lock import writer_lock

    record = cfg.workspace_dir / ".build.pid"  # this build's child processes, for a rerun after a SIGKILL
    with writer_lock(cfg.workspace_dir, "build"):  # one writer per workspace, refused at once
        reap_leftovers(record, "build", console.print)
        with ChildTracker(record):
            results = build_flow(str(config_path), workspace=workspace, force=force, strict=strict, until=until,
                                 allow_changed=allow_changed)
    _print_summary(cfg, results)


@app.command()
def status(
    config: Path = typer.Argument(..., help="Config file."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts."),
    check: bool = typer.Option(False, "--check", help="Reread every published file and compare its digest with the "
                               "stage record (without it: sizes only). Exit 1 when any is damaged."),
) -> None:
    """Show each stage (done / stale / missing / damaged), the ledger, and sources filtering mostly removed."""
    from mixforge.config import load_config
    from mixforge.pipelines.filter_report import filter_warnings
    from mixforge.pipelines.build import stage_states
    from mixforge.pipelines.builds import list_builds
    from mixforge.proxy_training.runs import run_freshness
    from mixforge.stage_files import check_workspace
    from mixforge.workspace import Workspace

    cfg = load_config(config)
    states = stage_states(cfg)
    ws = Workspace(cfg.workspace_dir)
    damage = check_workspace(ws, "digest" if check else "size")
    states |= {stage: "damaged" for stage in damage}
    ledger = ws.ledger()
    if as_json:
        payload = {"workspace": str(ws.root), "stages": {s: {"state": st, "ledger": ledger.get(s), "problems": damage.get(s, []),
                   "summary": (ws.stage_record(s) or {}).get("counts") if s not in ledger else None} for s, st in states.items()}}
        payload["filter_warnings"] = filter_warnings(cfg)
        payload["proxy_runs"] = run_freshness(cfg, ws)
        payload["builds"] = [{k: b.get(k) for k in ("id", "started", "finished", "sources_added", "sources_changed",
                                                  "sources_deleted", "retracted", "stages", "ledger")} for b in list_builds(ws)]
        typer.echo(json.dumps(payload, indent=2))
        raise typer.Exit(1 if damage and check else 0)
    out = Console()
    out.print(f"workspace: {ws.root}")
    out.print(_ledger_table(states, ledger))
    for stage, problems in damage.items():
        console.print(f"[bold red]damaged:[/] {first_few(problems)}: "
                      f"`mixforge build {config}` redoes {stage} and the stages after it", highlight=False)
    if ledger:
        out.print(_reasons_table(ledger))
    builds = list_builds(ws)
    if len(builds) > 1:
        out.print(_builds_table(builds))
    runs = run_freshness(cfg, ws)
    if runs["stale"]:
        console.print(f"[bold yellow]note:[/] {runs['stale']} of {runs['total']} proxy runs were trained on data a later build changed: "
                      "they are not reused as results; a regmix search carries them over today's components as evidence "
                      "and trains only search.refresh_runs new runs", highlight=False)
    for line in filter_warnings(cfg):
        console.print(f"[bold yellow]warning:[/] {line}", highlight=False)
    if damage and check:
        raise typer.Exit(1)


@app.command("filter-preview")
def filter_preview(
    config: Path = typer.Argument(..., help="Config file."),
    sample: int = typer.Option(200, "--sample", min=1, max=10_000_000, help="Records sampled per source (seeded by the config's seed)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts."),
) -> None:
    """Show what each source's filters would remove, on a seeded sample of its records, with
    examples per reason. Runs before any build and writes nothing."""
    from mixforge.config import load_config
    from mixforge.pipelines.filter_preview import preview_source
    from mixforge.pipelines.filter_report import removal_warning
    from mixforge.pipelines.ingest import plan_work

    cfg = load_config(config)
    plan_work(cfg)  # a missing source fails here, naming it
    if as_json:
        typer.echo(json.dumps([preview_source(cfg, i, sample) for i in range(len(cfg.sources))], indent=2))
        return
    out = Console()
    for p in (preview_source(cfg, i, sample) for i in range(len(cfg.sources))):  # each source as it is done
        table = Table(title=f"sources[{p['index']}] {p['source']} (kind {p['kind']}): {p['kept']} of {p['sample']} sampled records kept")
        for col in ("reason", "docs", "share", "examples"):
            table.add_column(col, justify="right" if col in ("docs", "share") else "left", overflow="fold")
        for r in p["reasons"]:
            table.add_row(r["reason"], str(r["documents"]), f"{r['share']:.0%}", "\n".join(r["examples"]))
        out.print(table)
        line = removal_warning(cfg, p["source"], p["sample"], {r["reason"]: r["documents"] for r in p["reasons"]},
                               what="on this sample, the filters would remove")
        if line:
            console.print(f"[bold yellow]warning:[/] {line}", highlight=False)


@app.command()
def clusters(
    config: Path = typer.Argument(..., help="Config file."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts."),
) -> None:
    """Show the components (merged clusters): size, quality, top terms, source mix."""
    from mixforge.config import load_config
    from mixforge.pipelines.components import load_components
    from mixforge.workspace import Workspace

    cfg = load_config(config)
    ws = Workspace(cfg.workspace_dir)
    data = load_components(ws)
    if data is None:
        raise MixforgeError(f"no components in {ws.root} yet: run `mixforge build {config}` first")
    if as_json:
        keys = ("component", "documents", "tokens", "quality_mean", "top_terms", "sources")
        payload = {"summary": data["summary"], "components": [{k: c[k] for k in keys} for c in data["components"]]}
        typer.echo(json.dumps(payload, indent=2))
        return
    out = Console()
    out.print(_components_table(data))
    out.print(f"report: {ws.stage_dir('components') / 'extra' / 'report.md'}")


def _components_table(data: dict) -> Table:
    summary = data["summary"]
    title = f"{summary['components']} components from {summary['clusters']} clusters"
    agreement = summary.get("vs_source_labels")
    if agreement:
        title += f" (vs source labels: NMI {agreement['components']['nmi']:.2f}, purity {agreement['components']['purity']:.2f})"
    table = Table(title=title)
    for col in ("component", "docs", "tokens", "quality", "top terms", "sources"):
        table.add_column(col, justify="right" if col in ("docs", "tokens", "quality") else "left")
    for c in data["components"]:
        quality = "" if c["quality_mean"] is None else f"{c['quality_mean']:.2f}"
        top = sorted(c["sources"].items(), key=lambda kv: (-kv[1], kv[0]))[:3]  # JSON keeps keys sorted by name
        sources = ", ".join(f"{k} {v}" for k, v in top)
        table.add_row(c["component"], f"{c['documents']:,}", f"{c['tokens']:,}", quality, " ".join(c["top_terms"][:5]), sources)
    return table


proxy_app = typer.Typer(no_args_is_help=True, help="Train small proxy models on mixtures of the components.")
app.add_typer(proxy_app, name="proxy")


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
    _print_runs([row])


@proxy_app.command("sweep")
def proxy_sweep(
    config: Path = typer.Argument(..., help="Config file (the build must have run)."),
    runs: int = typer.Option(64, "--runs", min=1, max=MAX_RUNS, help="Proxies to train on random mixtures."),
    seed: Optional[int] = typer.Option(None, min=0, max=MAX_SEED, help="Seed of the mixtures (default: the config's)."),
    verbose: bool = typer.Option(False, help="Show Prefect's run logs."),
) -> None:
    """Train proxies on random mixtures (RegMix's Dirichlet recipe) as a Prefect flow; finished
    runs are skipped on a rerun."""
    _quiet_prefect(verbose)
    from mixforge.config import load_config

    load_config(config)
    from mixforge.flows.proxy import sweep_flow

    with _proxy_children(config, "sweep"):
        rows = sweep_flow(str(config), runs, seed)
    _print_runs(rows)


@contextlib.contextmanager
def _proxy_children(config: Path, what: str):
    """Holds the workspace's writer lock (refused at once while another command writes it) and
    records this command's child processes (Prefect's server, proxy workers) under
    <workspace>/.runs/ for as long as it runs, after stopping what killed runs left there."""
    from mixforge.config import load_config
    from mixforge.processes import ChildTracker, reap_dead_runs
    from mixforge.workspace_lock import writer_lock

    folder = load_config(config).workspace_dir / ".runs"
    with writer_lock(folder.parent, {"sweep": "proxy sweep", "verify": "search verify"}.get(what, what)):
        reap_dead_runs(folder, console.print)
        with ChildTracker(folder / f"{what}-{os.getpid()}.json"):
            yield


def _print_runs(rows: list[dict]) -> None:
    table = Table(title="proxy runs (held-out loss, nats/token)")
    for col in ("run", "mixture", "loss mean", "bits/byte", "tokens", "tokens/s", "wall s"):
        table.add_column(col, justify="left" if col in ("run", "mixture") else "right")
    for r in rows:
        mix = ", ".join(f"{k[2:]} {v:.2f}" for k, v in sorted(r.items()) if k.startswith("w_") and v > 0)
        table.add_row(r["run_id"], mix, f"{r['loss_mean']:.3f}", f"{r['bpb_mean']:.3f}", f"{r['tokens']:,}",
                      f"{r['tokens_per_s']:,.0f}", f"{r['wall_s']:.1f}")
    Console().print(table)


search_app = typer.Typer(no_args_is_help=True, help="Search for the mixture that best serves a target: "
                         "`mixforge search CONFIG`, `search verify CONFIG`, `search fit --runs TABLE --target COLUMN`.")
app.add_typer(search_app, name="search")


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


@search_app.command("run")
def search_run(
    config: Path = typer.Argument(..., help="Config file (the build must have run)."),
    strategy: Optional[str] = typer.Option(None, help="regmix | climb | influence | bayesopt | bayesopt_mf (default: search.strategy)."),
    target: Optional[str] = typer.Option(None, help="Metric to optimise, or METRIC=W,METRIC=W (default: search.target)."),
    runs: Optional[int] = typer.Option(None, min=2, max=MAX_RUNS, help="Proxy runs the search may train (default: search.runs)."),
    verbose: bool = typer.Option(False, help="Show Prefect's run logs."),
) -> None:
    """Propose a mixture (`mixforge search CONFIG`): train proxies, fit, simulate, report."""
    objective = _parse_target(target)  # a bad --target fails first, like the other options
    _quiet_prefect(verbose)
    from mixforge.config import load_config

    load_config(config)  # a bad config fails here, before Prefect starts
    from mixforge.flows.search import search_flow

    with _proxy_children(config, "search"):
        out = search_flow(str(config), strategy, objective, runs)
    _print_proposal(out["proposal"], None)
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
    _quiet_prefect(verbose)
    from mixforge.config import load_config
    from mixforge.flows.search import verify_flow
    from mixforge.mixers.search import latest_folder
    from mixforge.workspace import read_json

    cfg = load_config(config)
    if preset is not None:
        load_config(config, overrides={"proxy": {"preset": preset}})  # an unknown preset fails here, naming the choices
    folder = folder or latest_folder(cfg)
    with _proxy_children(config, "verify"):
        result = verify_flow(str(config), str(folder), seeds, preset)
    _print_proposal(read_json(folder / "proposal.json"), result)
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
    from mixforge.mixers.search import fit_table
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
    fit = out["fit"]
    console = Console()
    for note in out["notes"]:
        console.print(f"note: {note}")
    _print_fit(fit, f"{out['target']}: {_predictor_label(fit)} on {out['runs']} runs")
    _print_mixture(out["prior"], out["proposal"], "runs' mean mixture")
    if out["schedule"]:
        _print_schedule(out["schedule"])
    interval = out["predicted_interval"]
    bounds = (f"{interval['level']:.0%} interval {interval['low']:.4f} to {interval['high']:.4f}" if interval["low"] is not None
              else "too few runs for an interval")
    console.print(f"predicted {out['target']} of the proposal: {out['predicted']:.4f} ({bounds}); best observed run "
                  f"{out['best_observed']['run_id']}: {out['best_observed']['value']:.4f} (predicted {out['best_observed']['predicted']:.4f})")
    if out["fallback"]:
        console.print(f"[bold]fallback:[/] {out['fallback']}")
    if out["warning"]:
        console.print(f"[bold yellow]warning:[/] {out['warning']}")


def _fractions(option: str, text: str | None) -> list[float] | None:
    """A comma-separated list of numbers (e.g. 0.8,1.0); what they must be is checked by the caller."""
    if text is None:
        return None
    try:
        return [float(part) for part in text.split(",")]
    except ValueError:
        raise MixforgeError(f"{option} {text[:80]!r}: expected numbers separated by commas, e.g. 0.8,1.0") from None


def _print_schedule(schedule: list[dict]) -> None:
    table = Table(title="proposed schedule (share of training tokens)")
    table.add_column("component")
    for phase in schedule:
        table.add_column(f"{phase['start_fraction']:.0%}-{phase['end_fraction']:.0%}", justify="right")
    for c in schedule[0]["weights"]:
        table.add_row(c, *(f"{phase['weights'][c]:.3f}" for phase in schedule))
    Console().print(table)


def _predictor_label(fit: dict) -> str:
    return f"auto (chose {fit['chosen']})" if fit["predictor"] == "auto" else fit["predictor"]


def _print_fit(fit: dict, title: str) -> None:
    """The fit report: CV (nested for auto), held-out runs, and auto's candidates."""
    table = Table(title=title)
    for col in ("check", "runs", "Spearman", "Pearson", "Kendall", "MAE"):
        table.add_column(col, justify="left" if col == "check" else "right")
    cv = f"{fit['folds']}-fold {'nested ' if fit['predictor'] == 'auto' else ''}CV"
    table.add_row(cv, str(fit["runs"]), *(f"{fit[k]:.3f}" for k in ("spearman", "pearson", "kendall", "mae")))
    if fit["eval"]:
        e = fit["eval"]
        table.add_row("held-out runs", str(e["runs"]), *(f"{e[k]:.3f}" for k in ("spearman", "pearson", "kendall", "mae")))
    Console().print(table)
    if fit["candidates"]:
        Console().print("candidates (out-of-fold Spearman): " + ", ".join(
            f"{'[bold]' if c == fit['chosen'] else ''}{c} {v['spearman']:.3f}{'[/]' if c == fit['chosen'] else ''}"
            for c, v in fit["candidates"].items()))
    if fit["eval"] and "regret" in fit["eval"]:
        e = fit["eval"]
        Console().print("held-out: " + ", ".join(f"best of predicted {k} is {v:.4g} worse than the true best" for k, v in e["regret"].items())
                        + (f"; {e['coverage']:.0%} inside the {fit['interval']['level']:.0%} interval" if "coverage" in e else ""))


def _print_mixture(reference: dict, proposal: dict, reference_name: str) -> None:
    table = Table(title="proposed mixture")
    for col in ("component", reference_name, "proposal"):
        table.add_column(col, justify="left" if col == "component" else "right")
    for c, w in proposal.items():
        table.add_row(c, f"{reference[c]:.3f}", f"{w:.3f}")
    Console().print(table)


def _print_proposal(proposal: dict, verify: Optional[dict]) -> None:
    from mixforge.mixers.model_choice import trust_warning

    out = Console()
    _print_mixture(proposal["natural"], proposal["weights"], "natural")
    if proposal.get("schedule"):
        _print_schedule(proposal["schedule"])
    runs = proposal.get("evidence")
    if runs:
        out.print(f"proxy runs: {runs['trained']} trained, {runs['reused']} reused exactly, {runs['carried']} carried from "
                  f"earlier builds" + (f" ({', '.join(runs['carried_from'])})" if runs.get("carried_from") else ""))
    fit = proposal.get("fit")
    if fit:
        out.print(f"predictor {_predictor_label(fit)}: {fit['folds']}-fold CV Spearman {fit['spearman']:.3f} over {fit['runs']} runs")
        carried = fit.get("evidence")
        if carried:
            out.print(f"carried runs: CV Spearman {carried['cv_spearman_with_carried']:.3f} with, "
                      + ("n/a" if carried["cv_spearman_without_carried"] is None else f"{carried['cv_spearman_without_carried']:.3f}")
                      + f" without: {carried['why']}")
        warning = trust_warning(fit, len(proposal["weights"]))
        if warning:
            out.print(f"[bold yellow]warning:[/] {warning}")
    fidelity = proposal.get("fidelity")
    if fidelity:
        cal = fidelity["calibration"]
        out.print(f"multi-fidelity: {fidelity['cheap_runs']} cheap runs ({fidelity['cheap_cost']:.3f} of a run each) + "
                  f"{fidelity['main_runs']} at the search's proxy = {fidelity['cost_in_runs']:g} runs' compute; "
                  f"measured = {cal['rho']:.3f} x cheap prediction {cal['offset']:+.4f}; predictions are in the search proxy's units")
    if proposal.get("fallback"):
        out.print(f"[bold]fallback:[/] {proposal['fallback']}")
    free = proposal.get("unconstrained")
    if free and proposal.get("predicted") is not None:
        out.print(f"without pins, bounds and repetition caps: largest share {free['largest_share']:.1%} (proposal "
                  f"{max(proposal['weights'].values()):.1%}), predicted {free['predicted']:.4f} (proposal {proposal['predicted']:.4f})")
    table = Table(title=f"{proposal['objective']} ({'lower' if proposal['lower_is_better'] else 'higher'} is better)")
    for col in ("mixture", "predicted", "measured mean", "std", "seeds", "inside interval"):
        table.add_column(col, justify="left" if col == "mixture" else "right")
    if verify:
        for name, r in verify["results"].items():
            pred = "" if r["predicted"] is None else f"{r['predicted']:.4f}"
            inside = {True: "yes", False: "no", None: ""}[r.get("inside")]
            table.add_row(name, pred, f"{r['mean']:.4f}", f"{r['std']:.4f}", str(len(r["measured"])), inside)
        for name, why in verify.get("skipped", {}).items():
            table.add_row(name, "", f"not trained: {why}", "", "", "")
    else:
        pred = "" if proposal["predicted"] is None else f"{proposal['predicted']:.4f}"
        table.add_row("proposal", pred, "not verified yet", "", "", "")
    out.print(table)


@app.command()
def export(
    mixture: Path = typer.Argument(..., help="A search folder (or the workspace's search/ for the latest), its proposal.json, or a YAML/JSON mapping component -> weight."),
    config: Path = typer.Option(..., "--config", "-c", help="Config file of the workspace (the build must have run)."),
    out: Path = typer.Option(..., "--out", help="Export folder to create."),
    fmt: Optional[str] = typer.Option(None, "--format", help="parquet | jsonl | megatron | datatrove | numpy | mds (default: export.format)."),
    tokens: Optional[int] = typer.Option(None, "--tokens", min=1, max=MAX_TOKENS, help="Token budget (default: export.tokens, else all with no component repeated)."),
    mode: str = typer.Option("materialised", help="materialised (mixed, shuffled shards) | reference (per-component shards + weights)."),
    shard_tokens: int = typer.Option(50_000_000, min=1, max=MAX_TOKENS, help="Target tokens per shard."),
    max_epochs: float = typer.Option(15, callback=_positive_float, help="Repetition cap per component."),
    overwrite: bool = typer.Option(False, help="Replace an existing export folder (only once the new one is complete)."),
    force_replace: bool = typer.Option(False, "--force-replace", help="With --overwrite: also delete files in the old export that its manifest does not list."),
) -> None:
    """Write a mixture as sharded data a trainer reads directly, with manifest.json and a dataset card."""
    from mixforge.config import load_config
    from mixforge.mixers.mixture_file import read_mixture
    from mixforge.pipelines.export_schedule import export_mixture

    cfg = load_config(config)
    weights, provenance = read_mixture(mixture)  # components checked by the export (its documents, held-out ones too)
    kind, record = export_mixture(cfg, weights, provenance, out, fmt, tokens, mode=mode, shard_tokens=shard_tokens,
                                  max_epochs=max_epochs, overwrite=overwrite, force_replace=force_replace)
    if kind == "schedule":
        table = Table(title=f"schedule export: {len(record['phases'])} phases, {record['format']}")
        for col in ("phase", "folder", "training share", "tokens", "mixture"):
            table.add_column(col, justify="left" if col in ("folder", "mixture") else "right")
        for ph in record["phases"]:
            table.add_row(str(ph["phase"]), ph["folder"], f"{ph['start_fraction']:.0%}-{ph['end_fraction']:.0%}",
                          f"{ph['tokens']:,}", ph["mixture_id"])
        Console().print(table)
        Console().print(f"{record['tokens']:,} tokens: {out} (schedule.json names the phases in order)", soft_wrap=True)
        return
    m = record
    table = Table(title=f"export {m['mixture_id']}: {m['format']}, {m['mode']}")
    for col in ("component", "weight", "share", "tokens", "documents", "epochs"):
        table.add_column(col, justify="left" if col == "component" else "right")
    for c, s in m["components"].items():
        table.add_row(c, f"{s['weight']:.3f}", f"{s['share']:.3f}", f"{s['tokens']:,}", f"{s['documents']:,}", f"{s['epochs']:.2f}")
    Console().print(table)
    Console().print(f"{m['tokens']:,} tokens in {len(m['shards'])} shard(s): {out} (manifest.json, README.md, trainer/)",
                    soft_wrap=True)  # paths stay whole for copying
    loaders = sorted(p.name for p in (out / "trainer").iterdir())
    Console().print("trainer fragments and loaders: " + ", ".join(f"trainer/{n}" for n in loaders), soft_wrap=True)


@app.command("verify")
def verify_cmd(folder: Path = typer.Argument(..., help="An export folder.")) -> None:
    """Check every path in manifest.json, re-hash every file, re-count each shard's documents and
    tokens. Exit 1 on any mismatch, 2 when the folder has no readable manifest."""
    from mixforge.pipelines.export import verify_export
    from mixforge.pipelines.export_schedule import SCHEDULE_FILE, verify_schedule

    problems = verify_schedule(folder) if (folder / SCHEDULE_FILE).is_file() else verify_export(folder)
    if problems:
        for p in problems:
            console.print(f"[red]mismatch:[/] {p}", highlight=False)
        raise typer.Exit(1)
    Console().print(f"{folder}: every shard matches its manifest", soft_wrap=True)


@app.command()
def deploy(
    config: Optional[Path] = typer.Argument(None, help="Config file of the build to schedule."),
    name: Optional[str] = typer.Option(None, "--name", help="Name of the deployment (mixforge-scheduled-build/NAME in Prefect)."),
    cron: Optional[str] = typer.Option(None, "--cron", help='Cron schedule, e.g. "0 3 * * *" (03:00 every day).'),
    interval: Optional[int] = typer.Option(None, "--interval", min=1, max=10 * 365 * 86400, help="Run every SECONDS instead of on a cron schedule."),
    timezone: str = typer.Option("UTC", "--timezone", help="IANA timezone of the schedule, e.g. Europe/Berlin."),
    then: Optional[str] = typer.Option(None, "--then", help="After a build that changed the components: search, or search,export."),
    export_out: Optional[Path] = typer.Option(None, "--export-out", help="Export folder of --then search,export, replaced by each new export (default: <workspace>/export)."),
    serve: bool = typer.Option(False, "--serve", help="Serve the deployment from this process until Ctrl-C (the default)."),
    work_pool: Optional[str] = typer.Option(None, "--work-pool", help="Deploy to this existing process work pool and return; its workers run the builds."),
    list_: bool = typer.Option(False, "--list", help="List mixforge's deployments: schedule, last run and its state, next run."),
    delete: Optional[str] = typer.Option(None, "--delete", metavar="NAME", help="Delete the deployment NAME."),
) -> None:
    """Schedule the data build as a Prefect deployment on the server in PREFECT_API_URL (never a
    temporary server). Each run builds like `mixforge build`: finished stages are skipped."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    if list_ or delete:
        if list_ and delete or any(v is not None for v in (config, name, cron, interval, then, export_out, work_pool)) or serve:
            raise MixforgeError("--list and --delete NAME take nothing else (no CONFIG, schedule or other option)")
        return _list_or_delete_deployment(delete)
    if config is None or not name:
        raise MixforgeError("give a config file and --name NAME (or --list, or --delete NAME)")
    if "/" in name or not name.strip():
        raise MixforgeError(f"--name {name!r}: a deployment name must be non-empty and hold no '/'")
    if serve and work_pool:
        raise MixforgeError("give --serve or --work-pool POOL, not both")
    from mixforge.config import load_config
    from mixforge.flows import deployments as dep
    from mixforge.pipelines.ingest import plan_work

    cfg = load_config(config)
    plan_work(cfg)  # missing sources and bad options fail now, not at 3 a.m.
    stages = dep.check_then([s.strip() for s in then.split(",")] if then is not None else [], cfg)
    if export_out and "export" not in stages:
        raise MixforgeError("--export-out is the folder of --then search,export; it needs export in --then")
    schedule, when = dep.make_schedule(cron, interval, timezone)
    url = dep.server_url()
    parameters = {"config_path": str(config.resolve()), "workspace": str(cfg.workspace_dir), "then": stages,
                  "export_out": str(export_out.resolve()) if export_out else None}
    out = Console(soft_wrap=True, highlight=False)
    out.print(f"deployment {dep.FLOW_NAME}/{name} on {url}: {when}; builds {parameters['config_path']} into "
              f"{parameters['workspace']}" + (f", then {','.join(stages)} when the components changed" if stages else ""))
    if work_pool:
        dep.run_safely(lambda: dep.deploy_to_pool(name, work_pool, schedule, parameters))
        out.print(f"registered for work pool {work_pool}: a worker runs the builds (`prefect worker start --pool {work_pool}`, "
                  "in an environment where mixforge is installed); `mixforge deploy --list` shows the runs")
        return
    out.print(f"serving it from this process: scheduled runs start here, one at a time, while it runs. Stop with Ctrl-C "
              f"(its schedule is paused then); `mixforge deploy --delete {name}` removes it")
    dep.run_safely(lambda: dep.serve(name, schedule, parameters))

def _list_or_delete_deployment(delete: Optional[str]) -> None:
    """`mixforge deploy --list` (a table) or `--delete NAME`."""
    from mixforge.flows import deployments as dep

    url = dep.server_url()
    if delete:
        dep.run_safely(lambda: dep.delete(delete))
        Console().print(f"deleted deployment {dep.FLOW_NAME}/{delete} from {url}", highlight=False)
        return
    rows = dep.run_safely(dep.deployment_rows)
    table = Table(title=f"deployments of {dep.FLOW_NAME} on {url}")
    for col in ("name", "schedule", "runs on", "last run", "state", "next run", "config"):
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(*row.values())
    Console().print(table if rows else f"no deployments of {dep.FLOW_NAME} on {url}", highlight=False)

def _built_components(cfg) -> Optional[list[str]]:
    """The components the tokens stage wrote (what a mixture may name), or None before the build."""
    from mixforge.workspace import Workspace

    record = Workspace(cfg.workspace_dir).stage_record("tokens")
    return sorted(record["counts"]["components"]) if record else None


def _config_path(config: Optional[Path], demo: bool, workspace: Optional[str]) -> Path:
    if demo:
        from mixforge.demo import write_demo_config

        if workspace and Path(workspace).exists() and not Path(workspace).is_dir():
            raise MixforgeError(f"--workspace: {Path(workspace).resolve()} is a file, not a folder; point it at a folder (made if missing)")
        return write_demo_config(Path(workspace or DEMO_WORKSPACE))
    if config is None:
        raise MixforgeError("give a config file (mixforge init writes one) or --demo")
    return config


def _quiet_prefect(verbose: bool) -> None:
    """Prefect's run logs (and the tracebacks it logs for failed tasks) stay out of the terminal
    unless --verbose; mixforge prints its own progress and errors."""
    if not verbose:
        os.environ["PREFECT_LOGGING_LEVEL"] = "CRITICAL"
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    if not os.environ.get("PREFECT_API_URL"):
        # Prefect's temporary server is in this command's process group, so Ctrl-C stops it too; the
        # run's crash report would then retry the dead server for a minute (2+4+...+32 s) per request
        os.environ.setdefault("PREFECT_CLIENT_MAX_RETRIES", "2")


def _ledger_table(states: dict[str, str], ledger: dict) -> Table:
    table = Table(title="ledger: documents (characters)")
    for col in ("stage", "state", "in", "out", "removed", "chars in", "chars out", "chars trimmed"):
        table.add_column(col, justify="left" if col in ("stage", "state") else "right")
    for stage, state in states.items():
        row = ledger.get(stage)
        if row is None:
            table.add_row(stage, state, *[""] * 6)
            continue
        table.add_row(
            stage, state, f"{row['docs_in']:,}", f"{row['docs_out']:,}", f"{row['docs_removed']:,}",
            f"{row['chars_in']:,}", f"{row['chars_out']:,}", f"{row['chars_trimmed']:,}",
        )
    return table


def _builds_table(builds: list[dict]) -> Table:
    from mixforge.workspace import STAGES

    table = Table(title="builds: what each added")
    for col in ("build", "finished", "files +", "changed", "ingested", "kept", "stages run"):
        table.add_column(col, no_wrap=True)
    for b in builds:
        ledger = b.get("ledger") or {}
        stages = b.get("stages") or []
        table.add_row(b["id"], (b.get("finished") or "unfinished")[:16].replace("T", " "), str(len(b.get("sources_added") or [])),
                      str(len(b.get("sources_changed") or []) + len(b.get("sources_deleted") or [])),
                      str((ledger.get("ingest") or {}).get("docs_in", "-")), str((ledger.get("prune") or {}).get("docs_out", "-")),
                      "all" if stages == STAGES else ",".join(stages) or "-")
    return table


def _reasons_table(ledger: dict) -> Table:
    table = Table(title="removed, by reason (kept under removed/<reason>/)")
    for col in ("stage", "reason", "docs", "chars"):
        table.add_column(col, justify="left" if col in ("stage", "reason") else "right")
    for stage, row in ledger.items():
        for reason, v in sorted(row["removed"].items(), key=lambda kv: -kv[1]["docs"]):
            table.add_row(stage, reason, f"{v['docs']:,}", f"{v['chars']:,}")
    return table


def _sources_table(first_docs: Path, last_docs: Path) -> Table:
    from mixforge.ledger import docs_per_source

    before, after = docs_per_source(first_docs), docs_per_source(last_docs)
    table = Table(title="kept per source label")
    for col in ("source", "ingested", "kept", "kept %"):
        table.add_column(col, justify="left" if col == "source" else "right")
    for label, n in sorted(before.items()):
        k = after.get(label, 0)
        table.add_row(label, f"{n:,}", f"{k:,}", f"{k / max(n, 1):.0%}")
    return table


def _print_summary(cfg, results) -> None:
    from mixforge.pipelines.components import load_components
    from mixforge.workspace import DOC_STAGES, Workspace

    ws = Workspace(cfg.workspace_dir)
    out = Console()
    doc_results = [r for r in results if r.stage in DOC_STAGES]
    states = {r.stage: ("done" if r.status == "ran" else "unchanged") for r in doc_results}
    ledger = {r.stage: r.counts for r in doc_results}
    out.print(_ledger_table(states, ledger))
    out.print(_reasons_table(ledger))
    out.print(_sources_table(Path(doc_results[0].docs_dir), Path(doc_results[-1].docs_dir)))
    from mixforge.pipelines.filter_report import filter_warnings

    for line in filter_warnings(cfg) if any(r.stage == "filter" for r in results) else []:
        console.print(f"[bold yellow]warning:[/] {line}", highlight=False)  # a source filtering mostly removed
    if any(r.stage == "components" for r in results):
        out.print(_components_table(load_components(ws)))
        out.print(f"cluster report: {ws.stage_dir('components') / 'extra' / 'report.md'}")
    first, last = doc_results[0].counts, doc_results[-1].counts
    kept = last["docs_out"]
    out.print(
        f"kept {kept:,} of {first['docs_in']:,} records ({kept / max(first['docs_in'], 1):.1%}), "
        f"{last['chars_out']:,} characters"
    )
    out.print(f"documents: {doc_results[-1].docs_dir}")
    out.print(f"removed (by reason): {ws.removed_dir}")
    out.print(f"ledger: {ws.ledger_path}")


if __name__ == "__main__":
    main()
