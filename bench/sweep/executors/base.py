"""What every sweep executor shares: the job and its result, :func:`run_job` (one spec, never raises), the
:class:`Executor` base class and the ``EXECUTORS`` registry.

An executor declares its own settings as a frozen dataclass (``Options``); ``bench sweep`` makes one flag per
field (``--cpus-per-run`` for ``cpus_per_run``), with the field's ``help`` metadata and default, and
:meth:`Executor.build` checks and converts the values. No executor sees argparse.
"""
from __future__ import annotations

import abc
import dataclasses
import time
import traceback
from dataclasses import dataclass
from typing import Any, ClassVar, Iterator, Mapping, Optional, Sequence, Type

from bench.core import paths
from bench.core.config import build_dataclass
from bench.core.io import atomic_write
from bench.core.registry import Registry
from bench.harness import run_spec
from bench.spec import RunSpec


@dataclass(frozen=True)
class SweepJob:
    """One spec to run, with where its results go."""

    index: int
    spec: RunSpec
    out: str
    data_root: Optional[str] = None


@dataclass(frozen=True)
class JobResult:
    """What happened to one job: ``done`` (ran now) or ``failed`` (with the error)."""

    index: int
    run_id: str
    status: str
    seconds: float
    rows_added: int = 0
    error: str = ""


def run_job(job: SweepJob) -> JobResult:
    """Run one spec through ``bench.harness.run_spec``; an exception becomes a ``failed`` result.

    The full traceback is written to ``<out>/runs/<run_id>/error.txt``.
    """
    t0 = time.perf_counter()
    run_id = job.spec.run_id
    try:
        rows = run_spec(job.spec, job.out, job.data_root, show=False)
    except Exception as exc:  # noqa: BLE001 - recorded as a failed run, the sweep goes on
        atomic_write(paths.error(paths.run_dir(job.out, run_id)), traceback.format_exc())
        message = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
        return JobResult(job.index, run_id, "failed", time.perf_counter() - t0, error=message)
    return JobResult(job.index, run_id, "done", time.perf_counter() - t0, rows_added=len(rows))


@dataclass(frozen=True)
class NoOptions:
    """An executor without settings of its own."""


class Executor(abc.ABC):
    """Runs sweep jobs and yields one :class:`JobResult` per job as each finishes."""

    # The executor's own settings (a frozen dataclass; one ``bench sweep`` flag per field).
    Options: ClassVar[Type[Any]] = NoOptions

    def __init__(self, jobs: int = 1) -> None:
        if jobs < 1:
            raise ValueError(f"--jobs must be >= 1, got {jobs}")
        self.jobs = jobs

    @classmethod
    def build(cls, jobs: int = 1, settings: Optional[Mapping[str, Any]] = None) -> "Executor":
        """An executor from ``--jobs`` and its own settings by field name (strings are converted; an unknown
        name or a bad value is a ``ValueError`` naming it)."""
        options = build_dataclass(cls.Options, dict(settings or {}), f"{cls.__name__} option")
        return cls.from_options(jobs, options)

    @classmethod
    def from_options(cls, jobs: int, options: Any) -> "Executor":
        """Construct from checked options (by default: ``cls(jobs=jobs, **options)``)."""
        return cls(jobs=jobs, **dataclasses.asdict(options))

    @abc.abstractmethod
    def run(self, jobs: Sequence[SweepJob]) -> Iterator[JobResult]:
        """Run every job; yield each result when it is known (any order)."""


EXECUTORS: Registry[Type[Executor]] = Registry("executor", plugins=("bench.sweep.executors",), entry_points="robust_tickets.executors")


def discover_executors() -> None:
    """Import every module of ``bench.sweep.executors`` (each registers its executor; once)."""
    EXECUTORS.discover()


def get_executor(name: str) -> Type[Executor]:
    """The executor class registered as ``name`` (ValueError listing choices)."""
    return EXECUTORS.get(name)
