"""Tidy result rows: one row per run x attack, built in one place and appended atomically under a file lock."""
from __future__ import annotations

import contextlib
import csv
import math
import subprocess
from dataclasses import dataclass, field
from datetime import datetime, timezone
from fractions import Fraction
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Sequence, Tuple

import pandas as pd
import torch
from filelock import FileLock, Timeout

from bench.core.devices import device_name
from bench.core.io import atomic_with

KEY_COLUMNS = ("run_id", "attack", "norm", "n_eval", "eps", "version", "scope", "eval_version")
LEADING_COLUMNS = (
    "run_id", "method", "dataset", "arch", "width", "target_sparsity", "measured_sparsity", "seed",
    "attack", "norm", "eps", "steps", "step_size", "restarts", "eot_samples", "version", "scope", "n_eval",
    "clean_acc", "robust_acc", "clean_ci_low", "clean_ci_high", "robust_ci_low", "robust_ci_high", "flags", "eval_version",
    "status", "seconds", "train_seconds", "train_passes", "created_at", "git_commit", "torch_version", "device",
    "device_name", "train_device_name",
)


# Version of the evaluation protocol: part of every cache key and row key, so results of an
# older protocol (v1, rows without the column: one random start shared by all attacks and
# chunks, early stopping on single draws of randomised models) are never reused or
# deduplicated against new ones.
EVAL_VERSION = 2
# Columns every reader of the rows (tables, plots, leaderboard, export) relies on.
TABLE_COLUMNS = ("run_id", "method", "dataset", "arch", "width", "target_sparsity", "attack", "eps", "n_eval",
                 "clean_acc", "robust_acc")

# The method of the rows of a model made outside this harness (bench eval --model).
EXTERNAL_METHOD = "external"
# Attacks whose rows are the points of a security curve (one row per eps, bench.evaluation.security), not fixed-eps
# evaluations: tables, plots of accuracy, exports and the leaderboard leave them out of their figures.
CURVE_ATTACKS = ("fmn", "fab")
# Row columns a rerun does not reproduce even on the same machine: times, measured latencies and provenance
# (rows are compared without them: a resumed or distributed run must equal an uninterrupted local one otherwise).
UNREPEATABLE_COLUMNS = ("seconds", "created_at", "train_seconds", "git_commit", "latency_b1_ms", "latency_b128_ms",
                        "speedup_b1", "speedup_b128", "latency_threads")
# Per-row statistics that become CSV columns when an evaluation provides them (randomised tickets; the median
# minimal perturbation of a security curve's rows).
ROW_STATS = ("draws", "clean_std", "robust_std", "randomized", "adaptive", "non_adaptive", "median_distance")


@dataclass
class AttackResult:
    """Outcome of one attack on the first ``n_eval`` test examples."""

    attack: str
    settings: Dict[str, Any]
    n_eval: int
    clean_acc: float
    robust_acc: float
    seconds: float
    robust: torch.Tensor
    scope: str = "alone"
    flags: Tuple[str, ...] = ()
    stats: Dict[str, Any] = field(default_factory=dict)
    eval_version: int = EVAL_VERSION


def result_rows(head: Mapping[str, Any], results: Sequence[AttackResult], tail: Mapping[str, Any],
                device: torch.device) -> List[Dict[str, Any]]:
    """One tidy row per result: ``head`` (identity columns), the attack's settings and accuracies, ``tail``, provenance.

    Tickets and zoo models both go through here, so their rows agree column for column.
    """
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    commit = git_commit()
    hardware = device_name(device)
    rows = []
    for r in results:
        s = r.settings
        rows.append({
            **head,
            "attack": r.attack, "norm": s.get("norm", "Linf"), "eps": s["eps"], "steps": s.get("steps", ""),
            "step_size": s.get("step_size", ""), "restarts": s.get("restarts", ""), "eot_samples": s.get("eot_samples", ""),
            "version": s.get("version", ""), "scope": r.scope, "n_eval": r.n_eval, "clean_acc": round(r.clean_acc, 6),
            "robust_acc": round(r.robust_acc, 6), **interval_columns(r.clean_acc, r.robust_acc, r.n_eval),
            **{k: r.stats[k] for k in ROW_STATS if k in r.stats},
            "flags": ";".join(r.flags), "eval_version": r.eval_version, "status": "ok", "seconds": round(r.seconds, 3),
            **tail,
            "created_at": now, "git_commit": commit, "torch_version": torch.__version__, "device": device.type,
            "device_name": hardware,
        })
    return rows


# Two-sided 95 % normal quantile of the Wilson score intervals in every row.
Z95 = 1.959963984540054


def wilson_interval(accuracy: float, n: int, z: float = Z95) -> Tuple[float, float]:
    """The Wilson score interval of an accuracy measured on ``n`` examples (95 % by default).

    Unlike the normal approximation it stays inside [0, 1] and is not empty at 0 or 1 correct; with ``n`` 0
    there is nothing to estimate: (nan, nan).
    """
    if n <= 0:
        return float("nan"), float("nan")
    p = min(1.0, max(0.0, accuracy))
    zz = z * z / n
    centre = (p + zz / 2) / (1 + zz)
    half = z * math.sqrt(p * (1 - p) / n + zz / (4 * n)) / (1 + zz)
    return max(0.0, centre - half), min(1.0, centre + half)


def interval_columns(clean_acc: float, robust_acc: float, n: int) -> Dict[str, float]:
    """A row's 95 % Wilson intervals of its clean and robust accuracy on its ``n`` examples."""
    out = {}
    for name, acc in (("clean", clean_acc), ("robust", robust_acc)):
        lo, hi = wilson_interval(acc, n)
        out[f"{name}_ci_low"], out[f"{name}_ci_high"] = round(lo, 6), round(hi, 6)
    return out


def format_eps(eps: float) -> str:
    """The one eps formatter: '8/255' when an L-inf-sized eps (at most 1) is a whole number of 1/255 steps, else
    the decimal ('0.1', an L2 budget '3')."""
    steps = eps * 255
    if eps <= 1 and abs(steps - round(steps)) < 1e-6 and round(steps) > 0:
        return f"{int(round(steps))}/255"
    return f"{eps:.6g}"


def parse_eps(text: str) -> float:
    """'8/255' or '0.1' as a float (the inverse of :func:`format_eps`)."""
    try:
        return float(Fraction(text.strip())) if "/" in text else float(text)
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"cannot read eps {text!r} (expected e.g. '8/255' or '0.1')") from None


def git_commit() -> str:
    """Short commit of the code that produced a row ('' outside a git checkout)."""
    try:
        here = Path(__file__).resolve().parent
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() if out.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def _key(row: Dict[str, Any]) -> tuple:
    """Deduplication key of a row, as strings."""
    return tuple(str(row.get(k, "")) for k in KEY_COLUMNS)


def _ordered(columns: Sequence[str]) -> List[str]:
    """Leading columns first, the rest in their given order."""
    lead = [c for c in LEADING_COLUMNS if c in columns]
    return lead + [c for c in columns if c not in lead]


# How long a writer waits for another process's lock on a rows file before giving up with a message.
LOCK_TIMEOUT_S = 300.0


def read_rows_file(csv_path: Path) -> pd.DataFrame:
    """The rows of ``csv_path`` as text (empty when absent); a file that is not a rows CSV is a ValueError naming it."""
    if not csv_path.exists():
        return pd.DataFrame()
    return _read_csv(csv_path, ("run_id", "attack"), dtype=str)


def _read_csv(csv_path: Path, required: Sequence[str], **kwargs: Any) -> pd.DataFrame:
    """``csv_path`` read by pandas; an unreadable file or a missing column is a ValueError naming the file."""
    # Only regular files: a FIFO with no writer would block the read forever, a device would never end.
    if Path(csv_path).exists() and not Path(csv_path).is_dir() and not Path(csv_path).is_file():
        raise ValueError(f"{csv_path} is not a regular file (a pipe, socket or device); give a rows file")
    try:
        df = pd.read_csv(csv_path, keep_default_na=False, **kwargs)
    except pd.errors.EmptyDataError:
        raise ValueError(f"{csv_path} is empty, not a bench rows file (no header); move it away, then rerun") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ValueError(f"{csv_path} is not a readable rows file ({type(exc).__name__}: {str(exc).splitlines()[0]}); "
                         "move it away or repair it, then rerun") from None
    except IsADirectoryError:
        raise ValueError(f"{csv_path} is a directory, not a rows file") from None
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ValueError(f"{csv_path} is not a bench rows file: no column(s) {', '.join(missing)}")
    # pandas pads short lines and may take long ones; a torn or hand-edited line is named instead.
    with open(csv_path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        try:
            for number, record in enumerate(reader, 1):
                if number == 1:
                    _check_header(csv_path, record)
                if record and len(record) != len(df.columns):
                    raise ValueError(f"{csv_path} line {number} has {len(record)} fields, the header {len(df.columns)}; "
                                     "repair or remove that line, then rerun")
        except csv.Error as exc:
            raise ValueError(f"{csv_path} line {reader.line_num}: {exc}; repair or remove that line, then rerun") from None
    # A header torn mid-name (the file ends inside it, no row after it) would become a junk column.
    if df.empty and not Path(csv_path).read_bytes().endswith(b"\n"):
        raise ValueError(f"{csv_path} ends inside its header line (a torn write); move it away, then rerun")
    return df


def _check_header(csv_path: Path, names: Sequence[str]) -> None:
    """A header names each column once (pandas would silently rename a second ``note`` to ``note.1``)."""
    seen = set()
    for name in names:
        if name in seen:
            raise ValueError(f"{csv_path}: column {name!r} appears twice in the header; repair the header, then rerun")
        seen.add(name)


@contextlib.contextmanager
def rows_lock(csv_path: Path) -> Iterator[None]:
    """The lock on a rows file; waiting longer than ``LOCK_TIMEOUT_S`` is a ValueError saying which lock."""
    lock = FileLock(str(csv_path) + ".lock", timeout=LOCK_TIMEOUT_S)
    try:
        with lock:
            yield
    except Timeout:
        raise ValueError(f"another process has held {lock.lock_file} for {LOCK_TIMEOUT_S:.0f} s; "
                         "if no bench process is running, delete that file") from None


def new_rows(csv_path: Path, rows: List[Dict[str, Any]]) -> bool:
    """Whether :func:`append_rows` would add any of ``rows`` to ``csv_path`` (a key not yet there)."""
    seen = {_key(r) for r in read_rows_file(Path(csv_path)).to_dict("records")}
    return any(_key(row) not in seen for row in rows)


def append_rows(csv_path: Path, rows: List[Dict[str, Any]]) -> int:
    """Append rows not already present (same key); returns how many were added.

    The whole read-merge-write happens under a lock file and the new file
    replaces the old one atomically, so concurrent writers lose nothing and a
    crash never leaves half a file.
    """
    csv_path = Path(csv_path)
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    with rows_lock(csv_path):
        old = read_rows_file(csv_path)
        seen = {_key(r) for r in old.to_dict("records")}
        new = []
        for row in rows:
            if _key(row) not in seen:
                seen.add(_key(row))
                new.append({k: ("" if v is None else str(v)) for k, v in row.items()})
        if not new:
            return 0
        merged = pd.concat([old, pd.DataFrame(new)], ignore_index=True).fillna("")
        merged = merged[_ordered(list(merged.columns))]
        atomic_with(csv_path, lambda tmp: merged.to_csv(tmp, index=False))
        return len(new)


def read_rows(csv_path: Path) -> pd.DataFrame:
    """The tidy table with numeric columns parsed; a file that is not one is a ValueError naming it."""
    df = _read_csv(csv_path, TABLE_COLUMNS)
    for col in ("width", "target_sparsity", "measured_sparsity", "eps", "clean_acc", "robust_acc", "seconds", "n_eval"):
        if col in df:
            text = df[col].astype(str).str.strip()
            parsed = pd.to_numeric(text.where(~text.str.lower().isin(["", "nan"])), errors="coerce")
            # A cell that is neither empty nor a number is named (target_sparsity 'abc' gave an empty table).
            bad = parsed.isna() & ~text.str.lower().isin(["", "nan"])
            if bad.any():
                line = int(bad.to_numpy().nonzero()[0][0]) + 2
                raise ValueError(f"{csv_path} line {line}: column {col} holds {text[bad].iloc[0][:40]!r}, not a number; "
                                 "repair that line, then rerun")
            df[col] = parsed
    return df
