"""Where shard work runs: in this process (`executor: local`) or as Ray tasks (`executor: ray`).

A stage hands `map_shards` a top-level function and one argument tuple per shard (or group of
shards); each call writes its shard's outputs atomically and returns a small summary. On Ray each
call is a task with the stage's resource request; a task whose worker dies is rerun
(`ray.max_retries`), which is safe because a rerun rewrites the same files. A stage that asks for
GPUs (embed with `ray.gpus_per_embed_task`) runs on one actor per GPU instead, so each GPU loads
its model once and is handed the next shard as soon as it finishes one. The global steps
(k-means fit, components, tokens) stay in the driver.

`ray_session` connects to `ray.address` or starts a local Ray bound to 127.0.0.1 for the build,
and shuts down only what it started. Ray decides at import whether to bind loopback (it reads
RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER into a module constant), so a local Ray is started only through
`import_ray_for_local`, which sets it first; Ray's authentication stays as Ray defaults it.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator, Sequence

from mixforge.config import MixforgeConfig
from mixforge.errors import ConfigError, MixforgeError
from mixforge.progress import progress_bar

LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}
LOOPBACK = ("127.0.0.1", "::1", "localhost")


def uses_ray(cfg: MixforgeConfig) -> bool:
    return cfg.executor == "ray"


@contextlib.contextmanager
def ray_session(cfg: MixforgeConfig) -> Iterator[None]:
    """Ray connected for the duration (nothing for the local executor)."""
    if not uses_ray(cfg):
        yield
        return
    ray = _import_ray() if cfg.ray.address else import_ray_for_local()
    if ray.is_initialized():  # a caller (a notebook, a test) already connected
        yield
        return
    try:
        if cfg.ray.address:
            ray.init(address=cfg.ray.address, log_to_driver=False, logging_level="ERROR")
        else:
            # "local": a new Ray of its own; without it, ray.init() attaches to a cluster already running on the
            # machine (a user's `ray start`) and refuses the resources asked for
            ray.init(address="local", num_cpus=cfg.workers or None, include_dashboard=False, log_to_driver=False,
                     logging_level="ERROR")
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise ConfigError(f"ray.address: cannot connect to Ray at {cfg.ray.address or '(a new local Ray)'}: {e}") from None
    try:
        if not cfg.ray.address:
            _check_loopback(ray)
        yield
    finally:
        ray.shutdown()


def _import_ray():
    try:
        import ray
    except ImportError:
        raise ConfigError("executor: ray needs Ray installed: pip install 'mixforge[ray]'") from None
    return ray


def import_ray_for_local():
    """Ray, ready to start a local cluster that listens on 127.0.0.1 only. The setting goes into
    the environment before the import (Ray reads it then, and the processes Ray starts inherit
    it); where this process imported Ray earlier (a notebook), Ray's constant is set as well."""
    os.environ.update(LOOPBACK_ENV)
    ray = _import_ray()
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False
    return ray


def _check_loopback(ray) -> None:
    """The local Ray just started must be on loopback: else stop it rather than expose it."""
    address = ray.util.get_node_ip_address()
    if address not in LOOPBACK:
        ray.shutdown()
        raise MixforgeError(f"the local Ray started on {address}, not on loopback (127.0.0.1): refusing to run a cluster "
                            "that others can reach; set ray.address to a cluster you started yourself")


def map_shards(cfg: MixforgeConfig, fn: Callable, calls: Sequence[tuple], description: str,
               sizes: Sequence[int] | None = None, gpus: float = 0, unit: str = "docs",
               on_result: Callable[[int, object], None] | None = None) -> list:
    """`fn(*args)` for every args tuple in `calls`, results in the same order, with a progress
    bar (`sizes`: work per call). Ray tasks when `executor: ray`, else one after another here.
    `on_result(i, result)` is called in this process as each call's result comes back."""
    sizes = list(sizes or [1] * len(calls))
    results: list = [None] * len(calls)
    t0 = time.perf_counter()
    with progress_bar() as progress:
        bar = progress.add_task(description, total=len(calls), rate="")
        done_work = 0

        def advance(i: int) -> None:
            nonlocal done_work
            if on_result is not None:
                on_result(i, results[i])
            done_work += sizes[i]
            rate = done_work / max(time.perf_counter() - t0, 1e-9)
            progress.update(bar, advance=1, rate=f"{rate:,.0f} {unit}/s" if rate >= 10 else f"{rate:.2f} {unit}/s")

        if not uses_ray(cfg) or not calls:
            for i, args in enumerate(calls):
                results[i] = fn(*args)
                advance(i)
            return results
        import ray

        if gpus:
            _on_actors(cfg, fn, calls, gpus, description, results, advance)
            return results
        task = ray.remote(fn).options(num_cpus=cfg.ray.cpus_per_task, num_gpus=gpus, max_retries=cfg.ray.max_retries,
                                      memory=int(cfg.ray.memory_per_task_gb * 2**30), retry_exceptions=False)
        pending = {task.remote(*args): i for i, args in enumerate(calls)}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=10)
            for ref in ready:
                i = pending.pop(ref)
                try:
                    results[i] = ray.get(ref)
                except ray.exceptions.RayTaskError as e:  # the function raised: the stage's own error, not Ray's
                    raise e.as_instanceof_cause() from None
                except ray.exceptions.RayError as e:
                    raise MixforgeError(f"{description}: a Ray task failed after {cfg.ray.max_retries} retries: {e}") from None
                advance(i)
    return results


def _on_actors(cfg: MixforgeConfig, fn: Callable, calls: Sequence[tuple], gpus: float, description: str,
               results: list, advance: Callable[[int], None]) -> None:
    """GPU stages: one long-lived actor per GPU slot of the cluster (at most one per call), each
    handed the next call when it finishes one, so every GPU loads its model once and stays busy.
    An actor whose process dies is restarted and its call rerun (`ray.max_retries`)."""
    import ray
    from ray.util import ActorPool

    @ray.remote
    class ShardWorker:
        def run(self, i: int, args: tuple):
            return i, fn(*args)

    slots = int(ray.cluster_resources().get("GPU", 0) // gpus)
    if slots < 1:
        raise ConfigError(f"{description}: {gpus} GPUs per task (ray.gpus_per_embed_task, ray.gpus_per_proxy), but the "
                          f"Ray cluster has {ray.cluster_resources().get('GPU', 0):g}; set it to 0 for CPU nodes")
    options = dict(num_cpus=cfg.ray.cpus_per_task, num_gpus=gpus, memory=int(cfg.ray.memory_per_task_gb * 2**30),
                   max_restarts=cfg.ray.max_retries, max_task_retries=cfg.ray.max_retries)
    actors = [ShardWorker.options(**options).remote() for _ in range(min(slots, len(calls)))]
    pool = ActorPool(actors)
    try:
        for i, args in enumerate(calls):
            pool.submit(lambda actor, job: actor.run.remote(*job), (i, args))
        while pool.has_next():
            try:
                i, result = pool.get_next_unordered()
            except ray.exceptions.RayTaskError as e:  # the function raised: the stage's own error
                raise e.as_instanceof_cause() from None
            except ray.exceptions.RayError as e:
                raise MixforgeError(f"{description}: a Ray actor failed after {cfg.ray.max_retries} restarts: {e}") from None
            results[i] = result
            advance(i)
    finally:
        for actor in actors:
            ray.kill(actor)
