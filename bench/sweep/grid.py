"""Sweeps: a YAML grid over run-spec fields, expanded into specs and run by an executor.

A sweep file has ``fixed`` fields shared by every run and a ``grid`` (a
mapping of field -> list of values, or a list of such mappings whose
products are concatenated); method hyperparameters go under ``hparams:`` in
either. Every expanded spec is a validated :class:`RunSpec`, so unknown keys
and bad values are errors before anything runs. A run is *done* when its
ticket exists and ``runs.csv`` has an ``ok`` row for each requested attack;
done runs are skipped, so an interrupted sweep resumes where it stopped.

Executors live in ``bench/sweep/executors/`` (one module each, discovered
automatically; their base class and registry in ``bench/sweep/executors/base.py``);
``local`` runs specs in this process or in a process pool.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Set, Tuple, Union

import pandas as pd

from bench.attacks import ATTACKS
from bench.core import paths
from bench.core.config import load_yaml
from bench.core.io import atomic_with
from bench.core.progress import bar
from bench.core.results import read_rows_file
from bench.core.rows import counted
from bench.spec import RunSpec
from bench.sweep.executors.base import Executor, JobResult, SweepJob

SWEEP_KEYS = ("name", "description", "fixed", "grid")
STATUS_COLUMNS = ("run_id", "status", "seconds", "error", "method", "dataset", "arch", "width", "sparsity", "seed")


@dataclass(frozen=True)
class Sweep:
    """A named list of run specs (expanded from a sweep file)."""

    name: str
    specs: Tuple[RunSpec, ...]
    description: str = ""


@dataclass
class SweepSummary:
    """Counts and wall time of a finished sweep."""

    name: str
    total: int
    done: int = 0
    skipped: int = 0
    failed: int = 0
    wall_seconds: float = 0.0
    failures: List[Tuple[str, str]] = field(default_factory=list)

    def text(self) -> str:
        """One summary line, plus one line per failed run."""
        head = (f"sweep {self.name}: {self.total} run(s): {self.done} done, {self.skipped} skipped (already done), "
                f"{self.failed} failed; wall time {self.wall_seconds:.1f} s")
        return "\n".join([head] + [f"  FAILED {rid}: {err}" for rid, err in self.failures])


# ---------------------------------------------------------------------------
# Expansion of a sweep file into specs.
# ---------------------------------------------------------------------------

# The most grid points a sweep file may expand to unless the caller allows more (--max-runs).
MAX_RUNS = 10_000


def _spec_fields() -> Set[str]:
    """Names of every RunSpec field."""
    return {f.name for f in dataclasses.fields(RunSpec)}


def _check_grid(grid: Any, where: str) -> List[Tuple[str, List[Any]]]:
    """Validate one grid mapping; returns (key, values) axes, hparams as ``hparams.NAME``."""
    if not isinstance(grid, Mapping) or not grid:
        raise ValueError(f"{where} must be a non-empty mapping of field -> list of values")
    names = _spec_fields()
    axes: List[Tuple[str, List[Any]]] = []
    for key, values in grid.items():
        # Method hyperparameters: a nested mapping of name -> list of values.
        if key == "hparams":
            if not isinstance(values, Mapping) or not values:
                raise ValueError(f"{where}.hparams must be a mapping of hyperparameter -> list of values")
            for hp, hp_values in values.items():
                if not isinstance(hp_values, list) or not hp_values:
                    raise ValueError(f"{where}.hparams.{hp} must be a non-empty list of values, got {hp_values!r}")
                axes.append((f"hparams.{hp}", hp_values))
            continue
        if key not in names:
            raise ValueError(f"unknown run spec key {key!r} in {where}; allowed: {', '.join(sorted(names))}")
        if not isinstance(values, list) or not values:
            raise ValueError(f"{where}.{key} must be a non-empty list of values, got {values!r}")
        axes.append((str(key), values))
    return axes


def _merge(fixed: Mapping[str, Any], combo: Sequence[Tuple[str, Any]]) -> Dict[str, Any]:
    """Fixed fields overridden by one grid point (hparams merged key by key)."""
    data: Dict[str, Any] = {k: v for k, v in fixed.items() if k != "hparams"}
    hparams: Dict[str, Any] = dict(fixed.get("hparams") or {})
    for key, value in combo:
        if key.startswith("hparams."):
            hparams[key[len("hparams."):]] = value
        else:
            data[key] = value
    if hparams:
        data["hparams"] = hparams
    return data


def expand(fixed: Mapping[str, Any], grid: Union[Mapping[str, Any], Sequence[Mapping[str, Any]], None],
           where: str = "sweep", max_runs: int = MAX_RUNS) -> List[RunSpec]:
    """Every spec of ``fixed`` x the grid product(s), validated, duplicates dropped, in file order."""
    if not isinstance(fixed, Mapping):
        raise ValueError(f"{where}.fixed must be a mapping of run spec fields")
    unknown = sorted(set(fixed) - _spec_fields())
    if unknown:
        raise ValueError(f"unknown run spec key(s) in {where}.fixed: {', '.join(map(str, unknown))}; "
                         f"allowed: {', '.join(sorted(_spec_fields()))}")
    if fixed.get("hparams") is not None and not isinstance(fixed["hparams"], Mapping):
        raise ValueError(f"{where}.fixed.hparams must be a mapping of hyperparameter -> value")
    # A missing grid is a single run of the fixed fields; a list of grids is a union.
    grids = [{}] if grid is None else ([grid] if isinstance(grid, Mapping) else list(grid))
    if not grids:
        raise ValueError(f"{where}.grid must not be an empty list")
    # Count the grid points before building any (a 4 x 30-value grid is 810 000 specs).
    checked = [(g_index, g, _check_grid(g, f"{where}.grid" if len(grids) == 1 else f"{where}.grid[{g_index}]")
                if g else []) for g_index, g in enumerate(grids)]
    total = sum(math.prod(len(values) for _, values in axes) for _, _, axes in checked)
    if total > max_runs:
        raise ValueError(f"{where}: the grid has {total:,} points, more than the {max_runs:,} allowed; split the "
                         f"sweep, or pass --max-runs {total} if you mean it")
    specs: List[RunSpec] = []
    seen: Dict[str, RunSpec] = {}
    for g_index, _g, axes in checked:
        g_where = f"{where}.grid" if len(grids) == 1 else f"{where}.grid[{g_index}]"
        for values in itertools.product(*[v for _, v in axes]):
            combo = list(zip([k for k, _ in axes], values))
            try:
                spec = RunSpec.from_dict(_merge(fixed, combo)).resolve()
            except ValueError as exc:
                point = ", ".join(f"{k}={v}" for k, v in combo) or "fixed fields only"
                raise ValueError(f"{g_where} point ({point}): {exc}") from None
            # The same run twice is one run; the same run with other runtime fields is a conflict.
            previous = seen.get(spec.run_id)
            if previous is not None:
                if previous.to_dict() != spec.to_dict():
                    raise ValueError(f"{g_where}: two grid points give run {spec.run_id} with different evaluation "
                                     f"settings (eval_attacks/n_eval/n_eval_aa/device); make them equal")
                continue
            seen[spec.run_id] = spec
            specs.append(spec)
    return specs


def load_sweep(path: Union[str, Path], max_runs: int = MAX_RUNS) -> Sweep:
    """Read and expand a sweep YAML file (safe loader; unknown keys are errors; at most ``max_runs`` grid points)."""
    data = load_yaml(str(path))
    unknown = sorted(set(data) - set(SWEEP_KEYS))
    if unknown:
        raise ValueError(f"unknown sweep key(s) in {path}: {', '.join(map(str, unknown))}; allowed: {', '.join(SWEEP_KEYS)}")
    name = str(data.get("name") or Path(path).stem)
    if not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise ValueError(f"sweep name {name!r} may only contain letters, digits, '-', '_' and '.'")
    specs = expand(data.get("fixed") or {}, data.get("grid"), where=Path(path).name, max_runs=max_runs)
    return Sweep(name, tuple(specs), str(data.get("description") or ""))


# ---------------------------------------------------------------------------
# Which runs are done.
# ---------------------------------------------------------------------------

def finished_pairs(out: Union[str, Path]) -> Set[Tuple[str, str, str]]:
    """(run_id, attack, n_eval) triples with an ``ok`` row in ``<out>/runs.csv``; a row on the whole test set
    (its ``n_eval`` equals its ``n_test``) also gives ``whole:<n_test>``."""
    df = read_rows_file(paths.runs_csv(out))
    if df.empty:
        return set()
    df = counted(df)
    blank = pd.Series([""] * len(df), index=df.index)
    n_eval = df["n_eval"] if "n_eval" in df else blank
    n_test = df["n_test"] if "n_test" in df else blank
    pairs = set(zip(df["run_id"], df["attack"], n_eval))
    pairs |= {(r, a, f"{WHOLE}{t}") for r, a, n, t in zip(df["run_id"], df["attack"], n_eval, n_test) if t and n == t}
    return pairs


# Prefix of a finished_pairs count that covered the whole test set.
WHOLE = "whole:"


def _covers(seen: Set[str], n_eval: int) -> bool:
    """Rows of these counts satisfy a request for ``n_eval`` examples: that count, or the whole test set when
    it holds no more (``--n-eval 100000`` on 10 000 test images ran 10 000, and resumes)."""
    whole = [int(s[len(WHOLE):]) for s in seen if s.startswith(WHOLE) and s[len(WHOLE):].isdigit()]
    return str(n_eval) in seen or any(n_eval >= n for n in whole)


def is_done(spec: RunSpec, out: Union[str, Path], pairs: Optional[Set[Tuple[str, str, str]]] = None) -> bool:
    """A run is done when runs.csv has a row for every requested attack, on the spec's ``n_eval`` examples
    for the attacks evaluated on ``n_eval`` (any count for the cascade-only ones, whose subset depends on
    the device, and with ``n_eval`` 0, the whole test set; a larger ``n_eval`` than the test set holds is
    satisfied by its whole test set).

    The rows are what a sweep produces, so a run whose rows are committed but whose run folder is not
    there (a fresh clone: tickets are not committed) is done, not retrained.
    ``pairs`` (from :func:`finished_pairs`) saves re-reading runs.csv for each spec.
    """
    spec = spec.resolve()
    pairs = finished_pairs(out) if pairs is None else pairs
    counts: Dict[Tuple[str, str], Set[str]] = {}
    for run_id, attack, n in pairs:
        counts.setdefault((run_id, attack), set()).add(n)
    for attack in spec.eval_attacks:
        seen = counts.get((spec.run_id, attack), set())
        if not seen:
            return False
        if spec.n_eval > 0 and not ATTACKS.get(attack)(1.0).cascade_only and not _covers(seen, spec.n_eval):
            return False
    return True


# ---------------------------------------------------------------------------
# The driver.
# ---------------------------------------------------------------------------

def _status_path(out: Path, name: str) -> Path:
    """Where a sweep's per-run status table lives."""
    return out / "sweeps" / f"{name}.csv"


def _write_status(path: Path, table: Dict[str, Dict[str, Any]]) -> None:
    """Atomically rewrite the sweep status CSV."""
    frame = pd.DataFrame(list(table.values()), columns=list(STATUS_COLUMNS))
    atomic_with(path, lambda tmp: frame.to_csv(tmp, index=False))


def _status_row(spec: RunSpec, status: str, seconds: float = 0.0, error: str = "") -> Dict[str, Any]:
    """One line of the status table."""
    return {"run_id": spec.run_id, "status": status, "seconds": round(seconds, 3), "error": error,
            "method": spec.method, "dataset": spec.dataset, "arch": spec.arch, "width": spec.width,
            "sparsity": spec.sparsity, "seed": spec.seed}


def read_status(path: Path) -> pd.DataFrame:
    """A sweep's status table (``sweeps/<name>.csv``), its columns checked."""
    table = pd.read_csv(path, dtype={"run_id": str, "error": str}, keep_default_na=False)
    if not set(STATUS_COLUMNS) <= set(table.columns):
        raise ValueError(f"{path}: not a sweep status file (columns {', '.join(STATUS_COLUMNS)} expected)")
    return table


def ran_before(path: Path) -> Tuple[Dict[str, Dict[str, Any]], Dict[str, float]]:
    """What an existing status file says jobs did: its ``done`` lines by run id (a resumed sweep keeps how long
    each run took; a rerun used to overwrite them with ``skipped``, 0 s, losing the sweep's cost), and the
    seconds jobs spent on each run (a re-queued run's line carries them)."""
    if not path.exists():
        return {}, {}
    old = read_status(path)
    seconds = pd.to_numeric(old["seconds"], errors="coerce").fillna(0.0)
    done = old[old["status"] == "done"]
    lines = {str(r["run_id"]): {c: r[c] for c in STATUS_COLUMNS} for _, r in done.iterrows()}
    return lines, {str(run_id): float(s) for run_id, s in zip(old["run_id"], seconds) if s > 0}


def run_sweep(sweep: Sweep, out: Union[str, Path], executor: Executor, data_root: Optional[str] = None,
              progress: bool = True, on_result: Optional[Callable[[JobResult], None]] = None) -> SweepSummary:
    """Run every spec of ``sweep`` that is not done; record status; return the summary.

    Status per run goes to ``<out>/sweeps/<name>.csv`` (rewritten after each
    result); a failed run's traceback goes to its run folder's ``error.txt``.
    """
    out = Path(out)
    t0 = time.perf_counter()
    summary = SweepSummary(sweep.name, len(sweep.specs))
    pairs = finished_pairs(out)
    status_file = _status_path(out, sweep.name)
    earlier, spent = ran_before(status_file)
    table: Dict[str, Dict[str, Any]] = {}
    jobs: List[SweepJob] = []
    # Skip what is done (a run this sweep ran before stays done, with its seconds); queue the rest, carrying the
    # seconds earlier jobs spent on a run (a finished sweep asked for one more attack re-queues its runs).
    for i, spec in enumerate(sweep.specs):
        if is_done(spec, out, pairs):
            summary.skipped += 1
            table[spec.run_id] = earlier.get(spec.run_id, _status_row(spec, "skipped"))
        else:
            table[spec.run_id] = _status_row(spec, "pending", spent.get(spec.run_id, 0.0))
            jobs.append(SweepJob(i, spec, str(out), data_root))
    _write_status(status_file, table)
    # Run the queue, recording each result as it arrives.
    pbar = bar(total=len(jobs), desc=f"sweep {sweep.name}", unit="run", disable=not progress or not jobs)
    try:
        for result in executor.run(jobs):
            spec = sweep.specs[result.index]
            table[spec.run_id] = _status_row(spec, result.status, result.seconds + spent.get(spec.run_id, 0.0),
                                             result.error)
            if result.status == "done":
                summary.done += 1
            else:
                summary.failed += 1
                summary.failures.append((result.run_id, result.error))
            _write_status(status_file, table)
            pbar.update(1)
            pbar.set_postfix(failed=summary.failed)
            if on_result is not None:
                on_result(result)
    finally:
        pbar.close()
    summary.wall_seconds = time.perf_counter() - t0
    return summary


def dry_run_table(sweep: Sweep, out: Union[str, Path]) -> pd.DataFrame:
    """One row per spec: run_id, done or todo, and every field that varies across the sweep."""
    pairs = finished_pairs(out)
    records = []
    for spec in sweep.specs:
        flat = {k: v for k, v in spec.to_dict().items() if k not in ("hparams", "eval_attacks")}
        flat["eval_attacks"] = ",".join(spec.eval_attacks)
        flat.update({f"hparams.{k}": v for k, v in dataclasses.asdict(spec.hparams).items()})
        records.append({"run_id": spec.run_id, "state": "done" if is_done(spec, out, pairs) else "todo", **flat})
    df = pd.DataFrame(records)
    if df.empty:
        return df
    # Always show the key fields; add any other column whose value varies.
    key = ["run_id", "state", "method", "dataset", "arch", "width", "sparsity", "seed"]
    varying = [c for c in df.columns if c not in key and df[c].astype(str).nunique() > 1]
    return df[key + varying]

