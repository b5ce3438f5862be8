"""Running datatrove pipelines: datatrove's LocalPipelineExecutor (task completion markers give
resume-by-task), datatrove's chatty logs sent to per-task files, and a progress bar with rates.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

from datatrove.executor import LocalPipelineExecutor
from datatrove.utils.logging import logger

from mixforge.config import MixforgeConfig
from mixforge.errors import MixforgeError
from mixforge.progress import progress_bar
from mixforge.write_errors import find_write_error, writing_to


def default_workers(workers: int) -> int:
    return workers if workers > 0 else (os.cpu_count() or 1)


class QuietExecutor(LocalPipelineExecutor):
    """LocalPipelineExecutor whose tasks log to their files only (errors still reach stderr)."""

    def _run_for_rank(self, rank: int, local_rank: int = 0, node_rank: int = -1):
        # datatrove prints INFO to stderr for local_rank 0 only; every other rank logs errors only.
        # A write failure (a full disk) is reported once, by the CLI, naming the folder
        # (mixforge/write_errors.py): not by datatrove's log of it, nor by loguru for every record
        # the task's log file (on the same disk) cannot take.
        logger.configure(patcher=_write_failures_to_task_log)  # in each worker process
        stderr, sys.stderr = sys.stderr, _WithoutLogFileWriteFailures(sys.stderr)
        try:
            with writing_to(self._output_path()):
                return super()._run_for_rank(rank, local_rank=1, node_rank=node_rank)
        finally:
            sys.stderr = stderr
            quiet_logs()  # datatrove re-adds a DEBUG stderr sink after each task

    def _output_path(self) -> Path:
        """The folder the pipeline writes (its last step with an output folder), else its logs."""
        folders = [step.output_folder.path for step in self.pipeline if hasattr(getattr(step, "output_folder", None), "path")]
        return Path(folders[-1] if folders else self.logging_dir.path)


def _write_failures_to_task_log(record) -> None:
    """datatrove logs a failed task's traceback at ERROR (to stderr and the task's log). A write
    failure is reported once, as one message, by the CLI: its traceback goes to the log only."""
    if record["exception"] is not None and record["level"].no >= 40 and find_write_error(record["exception"].value):
        record["level"] = type(record["level"])("DEBUG", 10, record["level"].icon)


class _WithoutLogFileWriteFailures:
    """sys.stderr during a task, less loguru's reports of a sink that failed with a write error
    (a block from HEAD to END per record); all else is written through."""

    HEAD, END = "--- Logging error in Loguru Handler", "--- End of logging error ---"

    def __init__(self, stream):
        self.stream, self.block = stream, None

    def write(self, text: str) -> int:
        if self.block is None and not text.startswith(self.HEAD):
            return self.stream.write(text)
        self.block = (self.block or "") + text
        if self.END in text:
            block, self.block = self.block, None
            if not find_write_error(OSError(block)):
                self.stream.write(block)
        return len(text)

    def __getattr__(self, name):
        return getattr(self.stream, name)


def quiet_logs() -> None:
    logger.remove()
    logger.add(sys.stderr, level="ERROR")


def run_pipeline(
    cfg: MixforgeConfig,
    pipeline: list,
    tasks: int,
    workers: int,
    logging_dir: Path,
    description: str,
    task_sizes: list[int] | None = None,
    unit: str = "docs",
) -> None:
    """Run `pipeline` as `tasks` datatrove tasks, with datatrove's local executor or, for
    `executor: ray`, its RayPipelineExecutor. Finished tasks (completion markers under
    `logging_dir`) are skipped, so an interrupted stage resumes where it stopped.

    `task_sizes` (work per task, in `unit`) drives the progress bar's rate.
    """
    if tasks <= 0:
        return
    quiet_logs()
    sizes = task_sizes or [1] * tasks
    if cfg.executor == "ray":
        from datatrove.executor import RayPipelineExecutor

        executor = RayPipelineExecutor(
            pipeline=pipeline, tasks=tasks, workers=-1, logging_dir=str(logging_dir), cpus_per_task=cfg.ray.cpus_per_task,
            mem_per_cpu_gb=cfg.ray.memory_per_task_gb / cfg.ray.cpus_per_task,
        )
    else:
        workers = min(default_workers(workers), tasks) if _workers_can_start() else 1
        if workers > 1:
            forkserver_with_this_environment()
        executor = QuietExecutor(
            pipeline=pipeline,
            tasks=tasks,
            workers=workers,
            logging_dir=str(logging_dir),
            start_method="forkserver" if workers > 1 else "spawn",
        )
    with _TaskProgress(logging_dir / "completions", sizes, description, unit):
        executor.run()
    incomplete = executor.get_incomplete_ranks(range(tasks))
    if incomplete:  # RayPipelineExecutor returns normally when tasks fail
        raise MixforgeError(f"{description}: {len(incomplete)} of {tasks} tasks did not complete (ranks {incomplete[:10]}); "
                            f"their logs are under {logging_dir}/logs. Rerun the build: finished tasks are kept.")


_FORKSERVER_ENV: dict[str, str] | None = None  # os.environ when this process's forkserver was last used


def forkserver_with_this_environment() -> None:
    """multiprocess forks every pool worker from one server process, started at its first use
    with the environment of that moment: credentials set since (AWS_ACCESS_KEY_ID for an s3://
    source, set in a notebook between two builds) would never reach the workers. Restart it when
    the environment has changed since it was last used."""
    global _FORKSERVER_ENV
    from multiprocess import forkserver

    env = dict(os.environ)
    if env != _FORKSERVER_ENV:  # (or one started before this process tracked it)
        forkserver._forkserver._stop()  # no-op when none runs; the next pool starts one with this environment
    _FORKSERVER_ENV = env


def _workers_can_start() -> bool:
    """Worker processes re-import the main script; one read from stdin (`python - <<EOF`) cannot
    be, and the pool would hang. Such runs use one in-process worker instead."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    return path is None or os.path.exists(path)


class _TaskProgress:
    """Polls datatrove's completion markers and shows tasks done and throughput."""

    def __init__(self, completions: Path, sizes: list[int], description: str, unit: str):
        self.completions, self.sizes, self.description, self.unit = completions, sizes, description, unit
        self._stop = threading.Event()

    def _done(self) -> tuple[int, int]:
        if not self.completions.exists():
            return 0, 0
        ranks = [int(p.name) for p in self.completions.iterdir() if p.name.isdigit()]
        return len(ranks), sum(self.sizes[r] for r in ranks if r < len(self.sizes))

    def __enter__(self):
        self.progress = progress_bar()
        self.progress.start()
        self.task = self.progress.add_task(self.description, total=len(self.sizes), rate="")
        self.already = self._done()[1]  # work finished by an earlier, interrupted run
        self.start = time.perf_counter()
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()
        return self

    def _update(self) -> None:
        n, work = self._done()
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        rate = (work - self.already) / elapsed
        self.progress.update(self.task, completed=n, rate=f"{rate:,.0f} {self.unit}/s")

    def _poll(self) -> None:
        while not self._stop.wait(0.5):
            self._update()

    def __exit__(self, *exc):
        self._stop.set()
        self.thread.join()
        self._update()
        self.progress.stop()
        return False


def stat_total(logging_dir: Path, step_name: str, key: str) -> int:
    """Sum one counter of one step over all finished tasks (datatrove's stats/<rank>.json)."""
    total = 0
    for path in sorted((logging_dir / "stats").glob("*.json")):
        for step in json.loads(path.read_text()):
            if not step["name"].endswith(step_name):  # stored as "<type>: <name>"
                continue
            value = step["stats"].get(key, 0)
            total += value["total"] if isinstance(value, dict) else value
    return int(total)
