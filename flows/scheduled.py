"""The flow a scheduled deployment runs (`mixforge deploy`): the data build, then optionally a
mixture search and an export of its proposal, when the build changed the components.

The build is `build_flow` as a subflow, so a scheduled run resumes and skips like
`mixforge build`: stages done for their inputs and settings are skipped.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from mixforge.config import load_config
from mixforge.errors import MixforgeError
from mixforge.flows.build import build_flow
from mixforge.flows.then import FLOW_NAME, check_then
from mixforge.flows.proxy import search_trainers
from mixforge.mixers.mixture_file import read_mixture
from mixforge.mixers.search import run_search
from mixforge.pipelines.export import export_mixture, exported
from mixforge.processes import ChildTracker, reap_leftovers
from mixforge.pipelines.stages import STAGE_NAMES
from mixforge.workspace_lock import writer_lock

COMPONENT_STAGES = ("components", "tokens")  # a rerun of either changes what a search trains on


@task(name="search", cache_policy=NO_CACHE, persist_result=False)
def search_task(config_path: str) -> str:
    """A search with the config's settings; its folder (proxy runs already trained are reused)."""
    cfg = load_config(config_path)
    _, folder = run_search(cfg, **search_trainers(config_path, cfg))
    return str(folder)


@task(name="export", cache_policy=NO_CACHE, persist_result=False)
def export_task(config_path: str, folder: str, out: str, force_replace: bool = False) -> str:
    """The search's proposal exported with the config's export settings, replacing the last one
    (the new export is put in place only once complete; only mixforge's own export, and files its
    manifest does not list only with `force_replace`)."""
    cfg = load_config(config_path)
    weights, provenance = read_mixture(Path(folder))
    export_mixture(cfg, weights, provenance, Path(out), overwrite=True, force_replace=force_replace)  # a schedule: a folder per phase
    return out


@flow(name=FLOW_NAME, persist_result=False, log_prints=False)
def scheduled_build_flow(
    config_path: str, workspace: str | None = None, then: list[str] | None = None, export_out: str | None = None,
    until: str | None = None, allow_changed: bool = False, force_replace: bool = False,
) -> dict:
    """Build (skipping finished stages); with `then`, search and export when the build reran
    the components or tokens, or when there is no search / export yet."""
    cfg = load_config(config_path, workspace=workspace)
    then = check_then(then or [], cfg)
    own = load_config(config_path).workspace_dir
    if then and cfg.workspace_dir != own:
        raise MixforgeError(f"workspace {workspace}: with search or export the build must use the config's workspace ({own}), "
                            "where the search reads and writes")
    with writer_lock(cfg.workspace_dir, "deploy (a scheduled build)"):  # as `mixforge build`, through the search
        return _build_then(config_path, cfg, workspace, then, export_out, until, allow_changed, force_replace)


def _build_then(config_path: str, cfg, workspace: str | None, then: list[str], export_out: str | None, until: str | None,
                allow_changed: bool, force_replace: bool) -> dict:
    record = cfg.workspace_dir / ".build.pid"  # as `mixforge build`: a killed run's workers are stopped first
    reap_leftovers(record, "build", print)
    with ChildTracker(record):
        results = build_flow(config_path=config_path, workspace=workspace, until=until, allow_changed=allow_changed)
    summary = {"build": {r.stage: r.status for r in results}, "search": None, "export": None}
    if not then or (until is not None and until != STAGE_NAMES[-1]):
        return summary
    changed = any(r.stage in COMPONENT_STAGES and r.status != "skipped" for r in results)
    latest = cfg.workspace_dir / "search" / "latest.json"
    if changed or not latest.exists():
        summary["search"] = search_task(config_path)
    out = export_out or str(cfg.workspace_dir / "export")
    if "export" in then and (summary["search"] or not exported(Path(out))):
        summary["export"] = export_task(config_path, summary["search"] or str(cfg.workspace_dir / "search"), out, force_replace)
    return summary
