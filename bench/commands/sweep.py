"""``bench sweep SWEEP.yaml``: expand a grid of specs and run those not done yet."""
from __future__ import annotations

import argparse

import pandas as pd

from bench.commands import COMMANDS, add_progress_flag
from bench.sweep import EXECUTORS, MAX_RUNS, discover_executors, dry_run_table, get_executor, load_sweep, run_sweep


def add(sub: argparse._SubParsersAction) -> None:
    """Register ``bench sweep``."""

    discover_executors()
    p = sub.add_parser("sweep", help="run a grid of specs from a sweep YAML (finished runs are skipped)",
                       description="Expand SWEEP.yaml (fixed fields x grid) into run specs and run every spec that "
                                   "is not done yet; rerunning resumes. See docs/sweeps.md.")
    p.add_argument("sweep_file", metavar="SWEEP.yaml", help="sweep file (see configs/sweeps/)")
    p.add_argument("--out", default="results", help="output folder for runs.csv and runs/ [default: results]")
    p.add_argument("--jobs", type=int, default=1, help="runs at once (worker processes) [default: 1]")
    p.add_argument("--executor", default="local", choices=EXECUTORS.names(), help="where runs execute [default: local]")
    p.add_argument("--dry-run", action="store_true", help="list the specs and which are done; run nothing")
    p.add_argument("--data-root", default=None, help="folder with full datasets (or set $BENCH_DATA_ROOT)")
    add_progress_flag(p)
    p.add_argument("--max-runs", type=int, default=MAX_RUNS,
                   help=f"refuse a grid of more points than this [default: {MAX_RUNS}]")
    # Executor-specific flags (each executor module adds its own).
    for name, entry in EXECUTORS.items():
        entry.obj.add_arguments(p.add_argument_group(f"{name} executor"))

    def run(args: argparse.Namespace) -> int:
        sweep = load_sweep(args.sweep_file, args.max_runs)
        if args.dry_run:
            table = dry_run_table(sweep, args.out)
            with pd.option_context("display.max_rows", None, "display.max_columns", None, "display.width", 200):
                print(table.to_string(index=False) if not table.empty else "(no specs)")
            n_done = int((table["state"] == "done").sum()) if not table.empty else 0
            print(f"sweep {sweep.name}: {len(table)} spec(s), {n_done} done, {len(table) - n_done} to run (out: {args.out})")
            return 0
        executor = get_executor(args.executor).from_args(args)
        summary = run_sweep(sweep, args.out, executor, args.data_root, progress=not args.no_progress)
        print(summary.text())
        return 1 if summary.failed else 0

    p.set_defaults(func=run)


COMMANDS.add("sweep", add)
