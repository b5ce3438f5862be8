"""Export, verify and deploy commands: `export` (a mixture or a schedule as sharded data),
`verify` (an export against its manifest) and `deploy` (the build on a schedule in Prefect).
Each parses its options, calls the function that does the work, and prints what came back."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from mixforge.cli import tables
from mixforge.cli.program import MAX_TOKENS, app, console, positive_float
from mixforge.errors import MixforgeError


@app.command()
def export(
    mixture: Path = typer.Argument(..., help="A search folder (or the workspace's search/ for the latest), its proposal.json, or a YAML/JSON mapping component -> weight."),
    config: Path = typer.Option(..., "--config", "-c", help="Config file of the workspace (the build must have run)."),
    out: str = typer.Option(..., "--out", help="Export folder to create, or an fsspec URL (s3://bucket/mixes/web-v3) to upload it to."),
    fmt: Optional[str] = typer.Option(None, "--format", help="parquet | jsonl | megatron | datatrove | numpy | mds (default: export.format)."),
    tokens: Optional[int] = typer.Option(None, "--tokens", min=1, max=MAX_TOKENS, help="Token budget (default: export.tokens, else all with no component repeated)."),
    mode: str = typer.Option("materialised", help="materialised (mixed, shuffled shards) | reference (per-component shards + weights)."),
    shard_tokens: int = typer.Option(50_000_000, min=1, max=MAX_TOKENS, help="Target tokens per shard."),
    max_epochs: float = typer.Option(15, callback=positive_float, help="Repetition cap per component."),
    overwrite: bool = typer.Option(False, help="Replace an existing export folder (only once the new one is complete)."),
    force_replace: bool = typer.Option(False, "--force-replace", help="With --overwrite: also delete files in the old export that its manifest does not list."),
) -> None:
    """Write a mixture as sharded data a trainer reads directly, with manifest.json and a dataset card."""
    from mixforge.config import load_config
    from mixforge.mixers.mixture_file import read_mixture
    from mixforge.pipelines.export import export_mixture

    cfg = load_config(config)
    out = location(out, "--out")
    weights, provenance = read_mixture(mixture)  # components checked by the export (its documents, held-out ones too)
    kind, record = export_mixture(cfg, weights, provenance, out, fmt, tokens, mode=mode, shard_tokens=shard_tokens,
                                  max_epochs=max_epochs, overwrite=overwrite, force_replace=force_replace)
    if kind == "schedule":
        tables.print_schedule_export(record, out)
    else:
        tables.print_export(record, out)


@app.command("verify")
def verify_cmd(folder: str = typer.Argument(..., help="An export folder, or the fsspec URL of one (s3://...).")) -> None:
    """Check every path in manifest.json, re-hash every file, re-count each shard's documents and
    tokens. Exit 1 on any mismatch, 2 when the folder has no readable manifest."""
    from mixforge.pipelines.export import verify_export
    from mixforge.pipelines.export import SCHEDULE_FILE, verify_schedule

    folder = location(folder, "FOLDER")
    schedule = isinstance(folder, Path) and (folder / SCHEDULE_FILE).is_file()
    problems = verify_schedule(folder) if schedule else verify_export(folder)
    if problems:
        for p in problems:
            console.print(f"[red]mismatch:[/] {p}", highlight=False)
        raise typer.Exit(1)
    Console().print(f"{folder}: every shard matches its manifest", soft_wrap=True)


def location(spelt: str, where: str) -> Path | str:
    """A local path, or a URL checked like a source's (a protocol fsspec opens, no credentials in it)."""
    from mixforge.urls import check_url, is_url

    if is_url(spelt):
        check_url(spelt, where)
        return spelt.rstrip("/")
    return Path(spelt)


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
    from mixforge.flows.then import check_then
    from mixforge.pipelines.ingest import plan_work

    cfg = load_config(config)
    plan_work(cfg)  # missing sources and bad options fail now, not at 3 a.m.
    stages = check_then([s.strip() for s in then.split(",")] if then is not None else [], cfg)
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
    tables.print_deployments(dep.run_safely(dep.deployment_rows), dep.FLOW_NAME, url)
