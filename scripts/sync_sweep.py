"""Bring a sweep's rows and status files from the folder it runs in (a worktree at a fixed commit) into this one.

A long sweep runs from its own ``git worktree`` (the brief's rule: a fixed commit, one job in the background);
its rows land there. This copies ``runs.csv`` (refused unless it holds every row already here) and each
``sweeps/<name>.csv``, keeping the ``done`` lines (and their seconds) this folder recorded earlier for runs the
source now lists as ``skipped``: a sweep resumed by code older than the fix in ``bench.sweep.grid.ran_before``
rewrites the runs of its earlier sittings as skipped, 0 s, and the grid's cost would be lost.

    python scripts/sync_sweep.py /path/to/worktree/results/published results/published
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import List, Optional

import pandas as pd

from bench.sweep.grid import STATUS_COLUMNS, ran_before


def merge_status(source: Path, here: Path) -> int:
    """Write ``source``'s status table to ``here``, with ``here``'s done lines for runs ``source`` calls skipped;
    return how many lines were kept from ``here``."""
    new = pd.read_csv(source, dtype={"run_id": str, "error": str}, keep_default_na=False)
    earlier = ran_before(here)
    kept = 0
    records = []
    for row in new.to_dict("records"):
        if row["status"] == "skipped" and str(row["run_id"]) in earlier:
            row, kept = earlier[str(row["run_id"])], kept + 1
        records.append(row)
    pd.DataFrame(records, columns=list(STATUS_COLUMNS)).to_csv(here, index=False)
    return kept


def main(argv: Optional[List[str]] = None) -> int:
    """Copy rows and merge status files; print what changed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="the sweep's output folder where it runs")
    parser.add_argument("here", type=Path, help="this checkout's output folder")
    args = parser.parse_args(argv)
    # Rows: the source's file must extend ours (rows are appended, never rewritten).
    src_rows, our_rows = args.source / "runs.csv", args.here / "runs.csv"
    theirs = set(src_rows.read_text().splitlines())
    missing = [line for line in our_rows.read_text().splitlines() if line not in theirs] if our_rows.exists() else []
    if missing:
        raise ValueError(f"{src_rows}: lacks {len(missing)} row(s) of {our_rows}; not copied")
    before = len(our_rows.read_text().splitlines()) if our_rows.exists() else 0
    shutil.copyfile(src_rows, our_rows)
    print(f"{our_rows}: {len(theirs) - before:+d} line(s)")
    # Status files, merged.
    (args.here / "sweeps").mkdir(parents=True, exist_ok=True)
    for status in sorted((args.source / "sweeps").glob("*.csv")):
        kept = merge_status(status, args.here / "sweeps" / status.name)
        print(f"{status.name}: merged ({kept} earlier done line(s) kept)")
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except ValueError as err:
        print(f"sync_sweep: {err}", file=sys.stderr)
        raise SystemExit(2) from None
