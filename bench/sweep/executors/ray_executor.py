"""The ``ray`` executor: every spec is one Ray task, on a laptop, a multi-GPU box or a cluster.

``bench sweep SWEEP.yaml --executor ray [--address auto|HOST:PORT] [--cpus-per-run N] [--gpus-per-run G]``.
Without ``--address`` a local Ray instance with every core of this machine is
started (and stopped at the end); with one, the driver joins that cluster.
Workers run :func:`bench.sweep.executors.base.run_job` and write their run folders and rows
straight to the output folder, which must therefore be a path every node sees
(a shared filesystem). Rows go through the locked, deduplicating writer
(:func:`bench.core.results.append_rows`), so a retried task never adds a row twice.
Ray is optional (``pip install -e '.[ray]'``); it is imported only when used.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Optional, Sequence

from bench.core import paths
from bench.core.allocator import keep_freed_memory
from bench.core.io import atomic_write
from bench.core.threads import limit_threads, thread_env
from bench.sweep.executors.base import EXECUTORS, Executor, JobResult, SweepJob, run_job

INSTALL_HINT = "--executor ray needs Ray, which is not installed; install it with: pip install -e '.[ray]'"

# Environment of every task: no inner progress bars (tqdm reads this at import); thread counts are added per task.
TASK_ENV = {"TQDM_DISABLE": "1"}


def import_ray() -> Any:
    """The ``ray`` module, or a one-line ValueError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ValueError(INSTALL_HINT) from None
    return ray


def run_in_worker(job: SweepJob, threads: int, runner: Callable[[SweepJob], JobResult]) -> JobResult:
    """Body of one Ray task: torch gets the task's cores and the allocator keeps freed memory, then the job runs
    (never raises)."""
    limit_threads(threads)
    keep_freed_memory()
    return runner(job)


def _one_line(exc: BaseException) -> str:
    """``Type: first line of the message``, the format of a failed local run."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


def _absolute(job: SweepJob) -> SweepJob:
    """The job with absolute paths (a worker's working directory is not the driver's)."""
    data_root = str(Path(job.data_root).resolve()) if job.data_root else None
    return dataclasses.replace(job, out=str(Path(job.out).resolve()), data_root=data_root)


class RayExecutor(Executor):
    """Runs each job as a Ray task with ``cpus_per_run`` CPUs and ``gpus_per_run`` GPUs."""

    @dataclass(frozen=True)
    class Options:
        """The ``bench sweep`` flags of the Ray executor."""

        address: Optional[str] = field(default=None, metadata={
            "help": "Ray cluster to join: 'auto' (the cluster started on this node with `ray start`) or HOST:PORT "
                    "[default: start a local Ray with every core of this machine]"})
        cpus_per_run: int = field(default=1, metadata={"help": "CPU cores reserved per run; also its torch thread count"})
        gpus_per_run: float = field(default=0.0, metadata={"help": "GPUs reserved per run (fractions share a GPU)"})
        max_retries: int = field(default=2, metadata={"help": "times Ray reruns a task whose worker process died"})

    @classmethod
    def from_options(cls, jobs: int, options: Any) -> "RayExecutor":
        """Build from checked options; fails early (exit 2) when Ray is missing. One task per run: --jobs is
        not used (Ray schedules by --cpus-per-run/--gpus-per-run)."""
        import_ray()
        return cls(address=options.address, cpus_per_run=options.cpus_per_run, gpus_per_run=options.gpus_per_run,
                   max_retries=options.max_retries)

    def __init__(self, address: Optional[str] = None, cpus_per_run: int = 1, gpus_per_run: float = 0.0,
                 max_retries: int = 2, runner: Callable[[SweepJob], JobResult] = run_job) -> None:
        super().__init__(jobs=1)
        if cpus_per_run < 1:
            raise ValueError(f"--cpus-per-run must be >= 1, got {cpus_per_run}")
        if gpus_per_run < 0:
            raise ValueError(f"--gpus-per-run must be >= 0, got {gpus_per_run}")
        if max_retries < 0:
            raise ValueError(f"--max-retries must be >= 0, got {max_retries}")
        self.address = address
        self.cpus_per_run = cpus_per_run
        self.gpus_per_run = gpus_per_run
        self.max_retries = max_retries
        self.runner = runner

    def _connect(self, ray: Any) -> bool:
        """Join or start Ray unless this process already did; True when this call started the connection."""
        if ray.is_initialized():
            return False
        if self.address is None:
            ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, logging_level=logging.WARNING)
        else:
            # An unreachable cluster: Ray retries for a while, then raises; report it as bad user input.
            try:
                ray.init(address=self.address, logging_level=logging.WARNING)
            except (ConnectionError, RuntimeError) as exc:
                raise ValueError(f"cannot connect to the Ray cluster at --address {self.address}: {_one_line(exc)}") from None
        return True

    def _failed(self, job: SweepJob, exc: BaseException) -> JobResult:
        """A task Ray itself could not finish (worker died past its retries): a failed run, traceback saved."""
        run_dir = paths.run_dir(job.out, job.spec.run_id)
        atomic_write(paths.error(run_dir), f"{type(exc).__name__}: {exc}\n")
        return JobResult(job.index, job.spec.run_id, "failed", 0.0, error=_one_line(exc))

    def run(self, jobs: Sequence[SweepJob]) -> Iterator[JobResult]:
        """Submit every job as a task, then yield results in the order they finish."""
        if not jobs:
            return
        ray = import_ray()
        started = self._connect(ray)
        task = ray.remote(run_in_worker).options(
            num_cpus=self.cpus_per_run, num_gpus=self.gpus_per_run, max_retries=self.max_retries,
            retry_exceptions=False, runtime_env={"env_vars": {**TASK_ENV, **thread_env(self.cpus_per_run)}})
        pending: Dict[Any, SweepJob] = {}
        try:
            # Submit all at once: Ray queues them until a worker with the resources is free.
            for job in map(_absolute, jobs):
                pending[task.remote(job, self.cpus_per_run, self.runner)] = job
            # Collect as they finish; run_job records its own failures, Ray errors become failed runs.
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    job = pending.pop(ref)
                    try:
                        result = ray.get(ref)
                    except ray.exceptions.RayError as exc:
                        result = self._failed(job, exc)
                    yield result
        finally:
            # Interrupted (Ctrl-C, an error on the driver): stop what is still queued or running.
            for ref in pending:
                ray.cancel(ref, force=True)
            if started:
                ray.shutdown()


EXECUTORS.add("ray", RayExecutor, "a Ray cluster (or local Ray): one task per run with --cpus-per-run/--gpus-per-run")
