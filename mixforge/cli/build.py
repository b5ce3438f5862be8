"""Build and data commands: `init` (a starter config), `build`, `status`, `filter-preview` and
`clusters`. Each parses its options, calls the function below it that does the work, and prints
what came back (tables.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

from mixforge.cli import tables
from mixforge.cli.program import app, console, quiet_prefect
from mixforge.errors import MixforgeError

DEMO_WORKSPACE = "mixforge-demo"


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
    from mixforge.pipelines.filter import write_starter_config

    def done(i: int, source, note: dict) -> None:
        relaxed = f"; filters: {note['filters']}" if "filters" in note else ""
        console.print(f"sources[{i}] {source.path}: kind {source.kind} ({note['kind']}){relaxed}", highlight=False)

    write_starter_config(source, workspace, out, label_field, force, done)
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
    quiet_prefect(verbose)
    from mixforge.config import load_config
    from mixforge.pipelines.ingest import plan_work

    workspace = str(Path(workspace).resolve()) if workspace and not demo else None
    cfg = load_config(config_path, workspace=workspace)
    plan_work(cfg)  # fail fast on missing sources and bad options, before Prefect starts
    from mixforge.pipelines.build import check_until

    check_until(until)
    from mixforge.flows.build import build_flow
    from mixforge.processes import build_children

    with build_children(cfg.workspace_dir, console.print):  # one writer per workspace; a killed build's leftovers stopped
        results = build_flow(str(config_path), workspace=workspace, force=force, strict=strict, until=until,
                             allow_changed=allow_changed)
    tables.print_summary(cfg, results)


def _config_path(config: Optional[Path], demo: bool, workspace: Optional[str]) -> Path:
    if demo:
        from mixforge.demo import write_demo_config

        if workspace and Path(workspace).exists() and not Path(workspace).is_dir():
            raise MixforgeError(f"--workspace: {Path(workspace).resolve()} is a file, not a folder; point it at a folder (made if missing)")
        return write_demo_config(Path(workspace or DEMO_WORKSPACE))
    if config is None:
        raise MixforgeError("give a config file (mixforge init writes one) or --demo")
    return config


@app.command()
def status(
    config: Path = typer.Argument(..., help="Config file."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts."),
    check: bool = typer.Option(False, "--check", help="Reread every published file and compare its digest with the "
                               "stage record (without it: sizes only). Exit 1 when any is damaged."),
) -> None:
    """Show each stage (done / stale / missing / damaged), the ledger, and sources filtering mostly removed."""
    from mixforge.config import load_config
    from mixforge.pipelines.filter import filter_warnings
    from mixforge.pipelines.build import stage_states
    from mixforge.pipelines.run import list_builds
    from mixforge.proxy_training.runs_table import run_freshness
    from mixforge.pipelines.stages import check_workspace, ledger as stage_ledger
    from mixforge.workspace import Workspace

    cfg = load_config(config)
    states = stage_states(cfg)
    ws = Workspace(cfg.workspace_dir)
    damage = check_workspace(ws, "digest" if check else "size")
    states |= {stage: "damaged" for stage in damage}
    ledger = stage_ledger(ws)
    if as_json:
        payload = {"workspace": str(ws.root), "stages": {s: {"state": st, "ledger": ledger.get(s), "problems": damage.get(s, []),
                   "summary": (ws.stage_record(s) or {}).get("counts") if s not in ledger else None} for s, st in states.items()}}
        payload["filter_warnings"] = filter_warnings(cfg)
        payload["proxy_runs"] = run_freshness(cfg, ws)
        payload["builds"] = [{k: b.get(k) for k in ("id", "started", "finished", "sources_added", "sources_changed",
                                                  "sources_deleted", "retracted", "stages", "ledger")} for b in list_builds(ws)]
        typer.echo(json.dumps(payload, indent=2))
        raise typer.Exit(1 if damage and check else 0)
    tables.print_status(ws.root, states, ledger, damage, list_builds(ws), run_freshness(cfg, ws), filter_warnings(cfg), config)
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
    from mixforge.pipelines.filter import preview_source
    from mixforge.pipelines.filter import removal_warning
    from mixforge.pipelines.ingest import plan_work

    cfg = load_config(config)
    plan_work(cfg)  # a missing source fails here, naming it
    if as_json:
        typer.echo(json.dumps([preview_source(cfg, i, sample) for i in range(len(cfg.sources))], indent=2))
        return
    for p in (preview_source(cfg, i, sample) for i in range(len(cfg.sources))):  # each source as it is done
        tables.print_filter_preview(p)
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
    out.print(tables.components_table(data))
    out.print(f"report: {ws.stage_dir('components') / 'extra' / 'report.md'}")
