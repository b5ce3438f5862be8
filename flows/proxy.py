"""Proxy sweeps as a Prefect flow: one task per proxy run. Finished run ids are skipped (the
runs table is the cache), so a rerun after an interruption trains only what is missing."""

from __future__ import annotations

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from mixforge.config import load_config
from mixforge.progress import progress_bar
from mixforge.mixers.sampling import random_mixtures
from mixforge.proxy_training.proxy import run_proxy, tokens_summary
from mixforge.workspace import Workspace

proxy_task = task(run_proxy, name="proxy", cache_policy=NO_CACHE, persist_result=False)


@flow(name="mixforge-proxy-sweep", persist_result=False, log_prints=False)
def sweep_flow(config_path: str, runs: int, seed: int | None = None) -> list[dict]:
    """Train `runs` proxies on random mixtures (RegMix's Dirichlet recipe) over the components."""
    cfg = load_config(config_path)
    seed = cfg.seed if seed is None else seed
    summary = tokens_summary(Workspace(cfg.workspace_dir))
    counts = {c: v["train_tokens"] for c, v in summary["components"].items()}
    mixtures = random_mixtures(counts, runs, seed, cfg.proxy.tokens, cfg.proxy.max_epochs)
    rows = []
    with progress_bar() as bar:
        done = bar.add_task("proxy runs", total=runs, rate="")
        for i, weights in enumerate(mixtures):
            rows.append(proxy_task(cfg, weights, seed=seed + i))
            bar.update(done, completed=i + 1, rate=f"last run {rows[-1]['tokens_per_s']:,.0f} tokens/s")
    return rows
