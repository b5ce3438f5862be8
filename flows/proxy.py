"""Proxy sweeps as a Prefect flow: one task per proxy run. Finished run ids are skipped (the
runs table is the cache), so a rerun after an interruption trains only what is missing. With
`proxy.processes` > 1 the tasks run concurrently, each training its proxy in a worker process.
With `proxy.batched` (auto: on CUDA) one task trains a group of runs together (`train_many`).
With `executor: ray` the runs go to the Ray cluster's workers (proxy_training/on_ray.py)."""

from __future__ import annotations

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import as_completed

from mixforge.config import MixforgeConfig, load_config
from mixforge.mixers.sampling import random_mixtures
from mixforge.progress import progress_bar
from mixforge.pipelines.run.shards import uses_ray
from mixforge.proxy_training.on_ray import train_on_ray
from mixforge.proxy_training.parallel import ProxyPool
from mixforge.proxy_training.proxy import batch_group, batched_proxies, ready_base, run_proxies, run_proxy, tokens_summary
from mixforge.workspace import Workspace


@task(name="proxy", cache_policy=NO_CACHE, persist_result=False)
def proxy_task(config_path: str, weights: dict[str, float] | list[dict[str, float]], seed: int, pool_id: int = 0, checkpoints: int = 0,
               overrides: dict | None = None) -> dict:
    pool = _POOLS.get(pool_id)
    if pool:
        return pool.submit(weights, seed, checkpoints).result()
    return run_proxy(load_config(config_path, overrides=overrides), weights, seed=seed, checkpoints=checkpoints)


@task(name="proxy group", cache_policy=NO_CACHE, persist_result=False)
def proxy_group_task(config_path: str, mixtures: list, seeds: list[int], checkpoints: int = 0,
                     overrides: dict | None = None) -> list[dict]:
    return run_proxies(load_config(config_path, overrides=overrides), mixtures, seeds, checkpoints)


_POOLS: dict[int, ProxyPool] = {}  # tasks reach the flow's pool by id (a pool cannot be a task parameter)


def train_mixtures(config_path: str, mixtures: list, seeds: list[int], label: str = "proxy runs",
                   checkpoints: int = 0, overrides: dict | None = None) -> list[dict]:
    """One Prefect task per mixture, inside a running flow; rows in the order of `mixtures`.
    `overrides`: config keys replaced for these runs (a verification at another proxy preset)."""
    cfg = load_config(config_path, overrides=overrides)
    ready_base(cfg)  # trained once here, not by each worker
    if uses_ray(cfg):  # the runs go to the cluster's workers; this process writes their rows
        return train_on_ray(cfg, config_path, mixtures, seeds, checkpoints, overrides, label)
    if batched_proxies(cfg):  # one task per group of runs trained together
        size, rows = batch_group(cfg, tokens_summary(Workspace(cfg.workspace_dir))["tokenizer"]["vocab_size"]), []
        with progress_bar() as bar:
            done = bar.add_task(label, total=len(mixtures), rate="batched")
            for i in range(0, len(mixtures), size):
                group = proxy_group_task(config_path, mixtures[i : i + size], seeds[i : i + size], checkpoints, overrides)
                rows += group
                bar.update(done, advance=len(group), rate=f"batched, {group[-1]['tokens_per_s']:,.0f} tokens/s per run")
        return rows
    pool = ProxyPool(config_path, cfg.proxy.processes, overrides) if cfg.proxy.processes > 1 else None
    if pool:
        _POOLS[id(pool)] = pool
    try:
        with progress_bar() as bar:
            done = bar.add_task(label, total=len(mixtures), rate="")
            if not pool:  # one at a time, in this process
                rows = []
                for w, s in zip(mixtures, seeds):
                    rows.append(proxy_task(config_path, w, s, checkpoints=checkpoints, overrides=overrides))
                    bar.update(done, advance=1, rate=f"last run {rows[-1]['tokens_per_s']:,.0f} tokens/s")
                return rows
            futures = [proxy_task.submit(config_path, w, s, id(pool), checkpoints, overrides) for w, s in zip(mixtures, seeds)]
            for future in as_completed(futures):
                row = future.result()
                bar.update(done, advance=1, rate=f"last run {row['tokens_per_s']:,.0f} tokens/s per process")
            return [f.result() for f in futures]
    finally:
        if pool:
            _POOLS.pop(id(pool), None)
            pool.close()


def search_trainers(config_path: str, cfg: MixforgeConfig) -> dict:
    """run_search's trainers as Prefect tasks: `train` at the config's proxy, `train_cheap` at
    search.cheap_proxy (bayesopt_mf's cheap fidelity). `cfg`: the config loaded from config_path."""
    from functools import partial

    from mixforge.mixers.search import cheap_proxy

    cheap = {"proxy": cheap_proxy(cfg)}
    return {"train": partial(train_mixtures, config_path), "train_cheap": partial(train_mixtures, config_path, overrides=cheap)}


@flow(name="mixforge-proxy-sweep", persist_result=False, log_prints=False)
def sweep_flow(config_path: str, runs: int, seed: int | None = None) -> list[dict]:
    """Train `runs` proxies on random mixtures (RegMix's Dirichlet recipe) over the components."""
    cfg = load_config(config_path)
    seed = cfg.seed if seed is None else seed
    summary = tokens_summary(Workspace(cfg.workspace_dir))
    counts = {c: v["train_tokens"] for c, v in summary["components"].items()}
    mixtures = random_mixtures(counts, runs, seed, cfg.proxy.tokens, cfg.proxy.max_epochs)
    return train_mixtures(config_path, mixtures, [seed + i for i in range(runs)])
