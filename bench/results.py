"""Tidy result rows: one row per run x attack, appended atomically under a file lock."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any, Dict, List, Sequence

import pandas as pd
from filelock import FileLock

KEY_COLUMNS = ("run_id", "attack", "n_eval", "eps", "version", "scope")
LEADING_COLUMNS = (
    "run_id", "method", "dataset", "arch", "width", "target_sparsity", "measured_sparsity", "seed",
    "attack", "norm", "eps", "steps", "step_size", "restarts", "eot_samples", "version", "scope", "n_eval",
    "clean_acc", "robust_acc", "flags", "status", "seconds", "train_seconds", "train_passes",
    "created_at", "git_commit", "torch_version", "device",
)


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


def append_rows(csv_path: Path, rows: List[Dict[str, Any]]) -> int:
    """Append rows not already present (same key); returns how many were added.

    The whole read-merge-write happens under a lock file and the new file
    replaces the old one atomically, so concurrent writers lose nothing and a
    crash never leaves half a file.
    """
    csv_path = Path(csv_path)
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(csv_path) + ".lock"):
        old = pd.read_csv(csv_path, dtype=str, keep_default_na=False) if csv_path.exists() else pd.DataFrame()
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
        tmp = csv_path.with_name(f".{csv_path.name}.{os.getpid()}.tmp")
        merged.to_csv(tmp, index=False)
        os.replace(tmp, csv_path)
        return len(new)


def read_rows(csv_path: Path) -> pd.DataFrame:
    """The tidy table with numeric columns parsed."""
    df = pd.read_csv(csv_path, keep_default_na=False)
    for col in ("width", "target_sparsity", "measured_sparsity", "eps", "clean_acc", "robust_acc", "seconds", "n_eval"):
        if col in df:
            df[col] = pd.to_numeric(df[col], errors="coerce")
    return df
