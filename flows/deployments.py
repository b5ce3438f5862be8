"""Scheduled deployments of the build (`mixforge deploy`) on the Prefect server in
PREFECT_API_URL: check the server, serve or deploy to a process work pool, list, delete.

A scheduled deployment needs a server that outlives this process, so there is no fallback to
Prefect's temporary (ephemeral) server: no reachable server is an error.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable

import httpx
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    DeploymentFilter, DeploymentFilterId, FlowFilter, FlowFilterName, FlowRunFilter, FlowRunFilterStartTime,
    FlowRunFilterState, FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.client.schemas.schedules import CronSchedule, IntervalSchedule
from prefect.client.schemas.sorting import FlowRunSort
from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError
from prefect.schedules import Cron, Interval, Schedule
from prefect.settings import PREFECT_API_KEY, PREFECT_API_URL
from prefect.types.entrypoint import EntrypointType
from pydantic import ValidationError

from mixforge.errors import MixforgeError
from mixforge.flows.then import FLOW_NAME

HEALTH_TIMEOUT_S = 5
START_SERVER = "start one with `prefect server start --host 127.0.0.1` and `export PREFECT_API_URL=http://127.0.0.1:4200/api`"


def server_url() -> str:
    """PREFECT_API_URL (environment or Prefect profile), once its /health answers."""
    url = PREFECT_API_URL.value()
    if not url:
        raise MixforgeError(f"PREFECT_API_URL is not set: a scheduled deployment needs a Prefect server that stays up; {START_SERVER}")
    key = PREFECT_API_KEY.value()
    headers = {"Authorization": f"Bearer {key.get_secret_value()}"} if key else {}
    try:
        answer = httpx.get(f"{url.rstrip('/')}/health", timeout=HEALTH_TIMEOUT_S, headers=headers)
    except httpx.HTTPError as e:
        raise MixforgeError(f"no Prefect server answers at PREFECT_API_URL={url} ({type(e).__name__}); {START_SERVER}") from None
    if answer.status_code != 200:
        raise MixforgeError(f"the Prefect server at PREFECT_API_URL={url} is not healthy: /health answered HTTP {answer.status_code}")
    return url


def make_schedule(cron: str | None, interval: int | None, timezone: str) -> tuple[Schedule, str]:
    """The schedule and its description; a bad cron expression or timezone is an error naming it."""
    if (cron is None) == (interval is None):
        raise MixforgeError("give exactly one of --cron EXPR or --interval SECONDS")
    try:
        if cron is not None:
            CronSchedule(cron=cron, timezone=timezone)
            return Cron(cron, timezone=timezone), f'cron "{cron}" ({timezone})'
        IntervalSchedule(interval=interval, timezone=timezone)
        return Interval(interval, timezone=timezone), f"every {interval} s"
    except ValidationError as e:
        what = f"--cron {cron!r}" if cron is not None else f"--interval {interval}"
        raise MixforgeError(f"{what} --timezone {timezone!r}: {e.errors()[0]['msg'].removeprefix('Value error, ')}") from None


def serve(name: str, schedule: Schedule, parameters: dict[str, Any]) -> None:
    """Register the deployment and run its scheduled runs from this process, one at a time,
    until interrupted (then Prefect pauses its schedule)."""
    from mixforge.flows.scheduled import scheduled_build_flow  # the flow and the build: heavy imports

    # Prefect 3.8's runner leaves a coroutine unawaited when it stops on SIGTERM (harmless)
    warnings.filterwarnings("ignore", message="coroutine 'Runner.astop' was never awaited")
    scheduled_build_flow.serve(name=name, schedule=schedule, parameters=parameters, limit=1, pause_on_shutdown=True,
                               print_starting_message=False, entrypoint_type=EntrypointType.MODULE_PATH)


def deploy_to_pool(name: str, pool: str, schedule: Schedule, parameters: dict[str, Any]) -> None:
    """Register the deployment on an existing process work pool; its workers run the runs (one
    at a time), importing the flow from the installed mixforge package."""
    with get_client(sync_client=True) as client:
        try:
            kind = client.read_work_pool(pool).type
        except ObjectNotFound:
            raise MixforgeError(f"--work-pool {pool!r}: no such work pool on {PREFECT_API_URL.value()}; "
                                f"create it with `prefect work-pool create {pool} --type process`") from None
    from mixforge.flows.scheduled import scheduled_build_flow

    if kind != "process":
        raise MixforgeError(f"--work-pool {pool!r} is a {kind!r} pool; mixforge deploys to process pools "
                            f"(`prefect work-pool create NAME --type process`)")
    scheduled_build_flow.deploy(name=name, work_pool_name=pool, schedule=schedule, parameters=parameters,
                                concurrency_limit=1, entrypoint_type=EntrypointType.MODULE_PATH, build=False,
                                push=False, print_next_steps=False, ignore_warnings=True)


def delete(name: str) -> None:
    with get_client(sync_client=True) as client:
        try:
            deployment = client.read_deployment_by_name(f"{FLOW_NAME}/{name}")
        except ObjectNotFound:
            raise MixforgeError(f"no deployment named {name!r} on {PREFECT_API_URL.value()}: "
                                "`mixforge deploy --list` shows the deployments") from None
        client.delete_deployment(deployment.id)


def _describe(schedule) -> str:
    if isinstance(schedule, CronSchedule):
        return f'cron "{schedule.cron}" ({schedule.timezone or "UTC"})'
    if isinstance(schedule, IntervalSchedule):
        return f"every {schedule.interval.total_seconds():g} s"
    return type(schedule).__name__


def _when(run) -> str:
    at = run.start_time or run.expected_start_time
    return at.strftime("%Y-%m-%d %H:%M:%S %Z") if at else ""


def deployment_rows() -> list[dict[str, str]]:
    """mixforge's deployments: name, schedule, where runs run, last run and its state, next run."""
    rows = []
    with get_client(sync_client=True) as client:
        for d in client.read_deployments(flow_filter=FlowFilter(name=FlowFilterName(any_=[FLOW_NAME]))):
            only_this = DeploymentFilter(id=DeploymentFilterId(any_=[d.id]))
            started = FlowRunFilter(start_time=FlowRunFilterStartTime(is_null_=False))
            last = client.read_flow_runs(deployment_filter=only_this, flow_run_filter=started,
                                         sort=FlowRunSort.START_TIME_DESC, limit=1)
            scheduled = FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED])))
            upcoming = client.read_flow_runs(deployment_filter=only_this, flow_run_filter=scheduled,
                                             sort=FlowRunSort.EXPECTED_START_TIME_ASC, limit=1)
            schedules = [_describe(s.schedule) + ("" if s.active else ", paused") for s in d.schedules]
            rows.append({
                "name": d.name,
                "schedule": "; ".join(schedules) + (" (deployment paused)" if d.paused else ""),
                "runs on": f"work pool {d.work_pool_name}" if d.work_pool_name else "served",
                "last run": _when(last[0]) if last else "never",
                "state": (last[0].state_name or "") if last else "",
                "next run": _when(upcoming[0]) if upcoming else "",
                "config": str(d.parameters.get("config_path", "")),
            })
    return rows


def run_safely(action: Callable[[], Any]) -> Any:
    """`action()`, with a server that stops answering (or refuses a request) as one clear error."""
    try:
        return action()
    except (httpx.HTTPError, PrefectHTTPStatusError) as e:
        raise MixforgeError(f"the Prefect server at {PREFECT_API_URL.value()} failed a request: {e}") from None
