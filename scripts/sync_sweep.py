"""Bring a sweep's rows and status files from the folder it runs in (a worktree at a fixed commit) into this one.

A long sweep runs from its own ``git worktree`` (the brief's rule: a fixed commit, one job in the background);
its rows land there. This copies ``runs.csv`` (refused unless it holds every row already here, cell by cell on
the columns both files have) and each
``sweeps/<name>.csv``, keeping the ``done`` lines (and their seconds) this folder recorded earlier for runs the
source now lists as ``skipped``: a sweep resumed by code older than the fix in ``bench.sweep.grid.ran_before``
rewrites the runs of its earlier sittings as skipped, 0 s, and the grid's cost would be lost.

    python scripts/sync_sweep.py /path/to/worktree/results/published results/published
"""
from __future__ import annotations

import argparse
import functools
import shutil
import sys
from pathlib import Path
from typing import List, Optional, Tuple

import pandas as pd

from bench.core.io import atomic_with
from bench.core.results import read_rows_file
from bench.sweep.grid import STATUS_COLUMNS, ran_before, read_status


def merged_status(source: Path, here: Path) -> Tuple[pd.DataFrame, int]:
    """``source``'s status table with ``here``'s done lines for runs ``source`` calls skipped, and how many lines
    were kept from ``here``."""
    new = read_status(source)
    earlier, _ = ran_before(here)
    kept = 0
    records = []
    for row in new.to_dict("records"):
        if row["status"] == "skipped" and str(row["run_id"]) in earlier:
            row, kept = earlier[str(row["run_id"])], kept + 1
        records.append(row)
    return pd.DataFrame(records, columns=list(STATUS_COLUMNS)), kept


def copy_to(source: Path, target: Path) -> None:
    """Copy ``source``'s bytes to ``target``."""
    shutil.copyfile(source, target)


def write_csv(table: pd.DataFrame, target: Path) -> None:
    """``table`` as CSV at ``target`` (no index)."""
    table.to_csv(target, index=False)


def main(argv: Optional[List[str]] = None) -> int:
    """Copy rows and merge status files (everything read and checked before anything is written)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="the sweep's output folder where it runs")
    parser.add_argument("here", type=Path, help="this checkout's output folder")
    args = parser.parse_args(argv)
    src_rows, our_rows = args.source / "runs.csv", args.here / "runs.csv"
    for folder in (args.source, args.here):
        if not folder.is_dir():
            raise ValueError(f"{folder}: not a folder")
    if not src_rows.is_file():
        raise ValueError(f"{src_rows}: no rows to bring in")
    # Rows: the source's file must hold every row of ours, compared cell by cell on the columns both have (code of
    # another commit may order or add columns), and no column ours fills may be missing there.
    theirs, ours = read_rows_file(src_rows), read_rows_file(our_rows)
    only_ours = [c for c in ours.columns if c not in theirs.columns and (ours[c] != "").any()]
    if only_ours:
        raise ValueError(f"{src_rows}: lacks column(s) {', '.join(only_ours)} that rows of {our_rows} fill; not copied")
    shared = [c for c in ours.columns if c in theirs.columns]
    missing = set(ours[shared].itertuples(index=False)) - set(theirs[shared].itertuples(index=False))
    if missing:
        raise ValueError(f"{src_rows}: lacks {len(missing)} row(s) of {our_rows}; not copied")
    # Status files, merged in memory first.
    merged = {status.name: merged_status(status, args.here / "sweeps" / status.name)
              for status in sorted((args.source / "sweeps").glob("*.csv"))}
    # Write: rows, then each status file, atomically.
    atomic_with(our_rows, lambda tmp: copy_to(src_rows, tmp))
    print(f"{our_rows}: {len(theirs) - len(ours):+d} row(s)")
    (args.here / "sweeps").mkdir(parents=True, exist_ok=True)
    for name, (table, kept) in merged.items():
        atomic_with(args.here / "sweeps" / name, functools.partial(write_csv, table))
        print(f"{name}: merged ({kept} earlier done line(s) kept)")
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except ValueError as err:
        print(f"sync_sweep: {err}", file=sys.stderr)
        raise SystemExit(2) from None
