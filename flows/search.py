"""Mixture search and verification as Prefect flows over the proxy tasks. Resumable: every
proxy run is a task whose result is the runs table's row, and finished run ids are never
retrained, so a rerun after an interruption picks up where it stopped."""

from __future__ import annotations

from functools import partial

from prefect import flow

from mixforge.config import load_config
from mixforge.flows.proxy import search_trainers, train_mixtures
from mixforge.mixers.search import run_search, verify


@flow(name="mixforge-search", persist_result=False, log_prints=False)
def search_flow(config_path: str, strategy: str | None = None, target=None, runs: int | None = None) -> dict:
    cfg = load_config(config_path)
    if runs is not None:
        cfg.search.runs = runs
    proposal, folder = run_search(cfg, strategy=strategy, target=target, **search_trainers(config_path, cfg))
    return {"proposal": proposal.to_dict(), "folder": str(folder)}


@flow(name="mixforge-search-verify", persist_result=False, log_prints=False)
def verify_flow(config_path: str, folder: str | None = None, seeds: int | None = None, preset: str | None = None) -> dict:
    from pathlib import Path

    cfg = load_config(config_path)
    larger = partial(train_mixtures, config_path, overrides={"proxy": {"preset": preset}}) if preset else None
    return verify(cfg, partial(train_mixtures, config_path), Path(folder) if folder else None, seeds, preset, larger)
