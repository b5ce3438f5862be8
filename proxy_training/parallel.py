"""Proxies trained at once in separate processes. On a CPU a tiny proxy cannot keep every core
busy from one process (small matmuls scale poorly across threads, and Python's per-step work is
serial), so N processes with cores / N threads each train N proxies faster than one process
training them one after another. Each worker loads the config once and trains whole runs;
results come back as runs-table rows (each run writes its own row, atomically, as always)."""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import Future, ProcessPoolExecutor

_worker_cfg = None


def cpu_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _start_worker(config_path: str, threads: int, overrides: dict | None = None) -> None:
    global _worker_cfg
    import torch

    from mixforge.config import load_config

    torch.set_num_threads(threads)
    _worker_cfg = load_config(config_path, overrides=overrides)


def _run(weights: dict[str, float] | list[dict[str, float]], seed: int | None, checkpoints: int) -> dict:
    from mixforge.proxy_training.proxy import run_proxy

    return run_proxy(_worker_cfg, weights, seed=seed, checkpoints=checkpoints)


class ProxyPool:
    """`processes` workers, each with cores // processes torch threads (at least 1).

        with ProxyPool("mixforge.yaml", processes=2) as pool:
            rows = [f.result() for f in [pool.submit(w, seed=i) for i, w in enumerate(mixtures)]]
    """

    def __init__(self, config_path: str, processes: int, overrides: dict | None = None):
        threads = max(cpu_cores() // processes, 1)
        # spawn: a fork of a process holding torch's thread pool (or Prefect's threads) can deadlock
        self._executor = ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_start_worker, initargs=(str(config_path), threads, overrides))

    def submit(self, weights: dict[str, float] | list[dict[str, float]], seed: int | None = None, checkpoints: int = 0) -> Future:
        return self._executor.submit(_run, weights, seed, checkpoints)

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> "ProxyPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
