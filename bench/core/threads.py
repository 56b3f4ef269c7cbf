"""Thread discipline: concurrent runs share the machine's cores instead of each taking all of them.

Two 2-thread runs on 2 cores took 3.8x as long as one (docs/performance.md).
Every executor that runs several jobs at once gives each worker
:func:`threads_per_worker` cores: :func:`thread_env` for the worker's
environment (OpenMP and MKL read it when torch loads) and
:func:`limit_threads` inside it.
"""
from __future__ import annotations

import contextlib
import os
from typing import Dict, Optional

import torch

# Thread-count variables of the math libraries under torch (OpenMP, MKL, OpenBLAS), read when a process starts.
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def threads_per_worker(workers: int, cores: Optional[int] = None) -> int:
    """The cores of this machine (or ``cores``) shared among ``workers`` concurrent runs: at least 1 each."""
    total = cores if cores is not None else (os.cpu_count() or 1)
    return max(1, total // max(1, workers))


def thread_env(threads: int) -> Dict[str, str]:
    """Environment for a worker process that may use ``threads`` cores (set before it imports torch)."""
    return {name: str(threads) for name in THREAD_ENV_VARS}


def limit_threads(threads: int) -> None:
    """Inside a worker: torch's intra-op pool to ``threads``, its inter-op pool to 1 (where still settable)."""
    torch.set_num_threads(threads)
    # The inter-op pool can be sized only before its first use; a reused worker keeps what it has.
    if torch.get_num_interop_threads() != 1:
        with contextlib.suppress(RuntimeError):
            torch.set_num_interop_threads(1)
