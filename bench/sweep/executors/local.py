"""The ``local`` executor: specs one after another in this process, or ``--jobs N`` worker processes."""
from __future__ import annotations

import concurrent.futures as cf
import contextlib
import multiprocessing
import os
from typing import Dict, Iterator, Sequence

from bench.core.allocator import keep_freed_memory
from bench.core.threads import limit_threads, thread_env, threads_per_worker
from bench.sweep.executors.base import EXECUTORS, Executor, JobResult, SweepJob, run_job


def _init_worker(threads: int) -> None:
    """Worker-process setup: its share of the CPU cores for torch (the math libraries got it from the environment)
    and the allocator keeping freed memory (bench/core/allocator.py)."""
    limit_threads(threads)
    keep_freed_memory()


@contextlib.contextmanager
def _child_env(env: Dict[str, str]) -> Iterator[None]:
    """Spawned workers inherit ``env``: TQDM_DISABLE=1 (tqdm reads it at import, so only the sweep's bar shows) and
    each one's thread counts (OpenMP and MKL read theirs when torch loads, before any initializer runs).

    The variables are restored when the pool is gone; this process's libraries are already loaded.
    """
    old = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for name, value in old.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class LocalExecutor(Executor):
    """Runs jobs on this machine: in-process when ``jobs == 1``, else a spawn-context process pool."""

    def run(self, jobs: Sequence[SweepJob]) -> Iterator[JobResult]:
        """Yield each job's result as it finishes."""
        if not jobs:
            return
        # One job at a time: run in this process (simplest to debug, no start-up cost).
        if self.jobs == 1:
            for job in jobs:
                yield run_job(job)
            return
        # Several at once: fresh interpreters (spawn), each with its share of the cores.
        threads = threads_per_worker(min(self.jobs, len(jobs)))
        ctx = multiprocessing.get_context("spawn")
        with _child_env({"TQDM_DISABLE": "1", **thread_env(threads)}), cf.ProcessPoolExecutor(max_workers=min(self.jobs, len(jobs)), mp_context=ctx,
                                                       initializer=_init_worker, initargs=(threads,)) as pool:
            futures = {pool.submit(run_job, job): job for job in jobs}
            for future in cf.as_completed(futures):
                job = futures[future]
                # run_job never raises; a dead worker process does, and fails only its job.
                try:
                    yield future.result()
                except cf.process.BrokenProcessPool as exc:
                    yield JobResult(job.index, job.spec.run_id, "failed", 0.0, error=f"worker process died: {exc}")


EXECUTORS.add("local", LocalExecutor, "this machine: one run after another, or --jobs N worker processes")
