"""Proxy runs on Ray (`executor: ray`): a sweep's, a search's or a verification's runs sent to the
cluster's workers, one task per run (or per group of runs trained together where `proxy.batched`),
each with `ray.gpus_per_proxy` GPUs (0.25: four runs share a GPU).

Workers only train and measure: the driver alone writes the runs table, one row at a time as rows
come back (atomic, as every row is). A task whose worker dies is rerun (`ray.max_retries`); the
run resumes from its last checkpoint on the shared workspace where it saves them
(`proxy.checkpoint_every`, or the checkpoints a strategy asks for), else trains again. Either way
its row is the one it would have had (same seed, same batches), and the table holds one row per run id.
"""

from __future__ import annotations

from mixforge.config import MixforgeConfig, load_config
from mixforge.pipelines.run import map_shards, ray_session
from mixforge.proxy_training.proxy import batch_group, batched_proxies, run_proxies, run_proxy, tokens_summary
from mixforge.proxy_training.runs_table import RunsTable
from mixforge.workspace import Workspace


def _train_run(config_path: str, overrides: dict | None, weights, seed: int, checkpoints: int) -> list[dict]:
    """A Ray task: one run trained and measured; its row (in a list, as a group's), not written."""
    return [run_proxy(load_config(config_path, overrides=overrides), weights, seed=seed, checkpoints=checkpoints, record=False)]


def _train_group(config_path: str, overrides: dict | None, mixtures: list, seeds: list[int], checkpoints: int) -> list[dict]:
    """A Ray task: a group of runs trained together (`train_many`); their rows, not written."""
    return run_proxies(load_config(config_path, overrides=overrides), mixtures, seeds, checkpoints, record=False)


def train_on_ray(cfg: MixforgeConfig, config_path: str, mixtures: list, seeds: list[int], checkpoints: int = 0,
                 overrides: dict | None = None, label: str = "proxy runs") -> list[dict]:
    """The runs of `mixtures` (with `seeds`) on Ray; rows in the order of `mixtures`. `cfg`: the
    config loaded from `config_path` with `overrides`."""
    table = RunsTable(Workspace(cfg.workspace_dir))

    def write(_: int, rows: list[dict]) -> None:
        for row in rows:
            if not table.has(row["run_id"]):  # a run already in the table came back as it is
                table.append(row)

    if batched_proxies(cfg):
        size = batch_group(cfg, tokens_summary(Workspace(cfg.workspace_dir))["tokenizer"]["vocab_size"])
        fn, calls = _train_group, [(config_path, overrides, mixtures[i : i + size], seeds[i : i + size], checkpoints)
                                   for i in range(0, len(mixtures), size)]
    else:
        fn, calls = _train_run, [(config_path, overrides, w, s, checkpoints) for w, s in zip(mixtures, seeds)]
    with ray_session(cfg):
        results = map_shards(cfg, fn, calls, label, [len(c[2]) if fn is _train_group else 1 for c in calls],
                             gpus=cfg.ray.gpus_per_proxy, unit="runs", on_result=write)
    return [row for rows in results for row in rows]
