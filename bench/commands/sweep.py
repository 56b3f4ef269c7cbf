"""``bench sweep SWEEP.yaml``: expand a grid of specs and run those not done yet."""
from __future__ import annotations

import argparse
import dataclasses
from typing import Any, Dict

import pandas as pd

from bench.commands import COMMANDS, add_progress_flag
from bench.sweep.executors.base import EXECUTORS, discover_executors, get_executor
from bench.sweep.grid import MAX_RUNS, dry_run_table, load_sweep, run_sweep

# Prefix of the argparse destinations of executor options.
OPTION_DEST = "ex__"


def add_executor_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per field of each executor's ``Options`` (``--cpus-per-run`` for ``cpus_per_run``)."""
    for name, entry in EXECUTORS.items():
        options = dataclasses.fields(entry.obj.Options)
        if not options:
            continue
        group = parser.add_argument_group(f"{name} executor")
        for f in options:
            group.add_argument(f"--{f.name.replace('_', '-')}", dest=OPTION_DEST + f.name, default=argparse.SUPPRESS,
                               metavar=f.name.upper(),
                               help=f"{f.metadata.get('help', f.name)} [default: {f.default}]".replace("%", "%%"))


def executor_settings(args: argparse.Namespace) -> Dict[str, Any]:
    """The executor options given on the command line; one of another executor is a ``ValueError`` naming it."""
    given = {k[len(OPTION_DEST):]: v for k, v in vars(args).items() if k.startswith(OPTION_DEST)}
    own = {f.name for f in dataclasses.fields(get_executor(args.executor).Options)}
    for name in sorted(set(given) - own):
        owners = [n for n, e in EXECUTORS.items() if name in {f.name for f in dataclasses.fields(e.obj.Options)}]
        raise ValueError(f"--{name.replace('_', '-')} is an option of the {', '.join(owners)} executor, not of "
                         f"{args.executor} (add --executor {owners[0]})")
    return given


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
    # Executor-specific flags, generated from each executor's Options.
    add_executor_flags(p)

    def run(args: argparse.Namespace) -> int:
        sweep = load_sweep(args.sweep_file, args.max_runs)
        if args.dry_run:
            table = dry_run_table(sweep, args.out)
            with pd.option_context("display.max_rows", None, "display.max_columns", None, "display.width", 200):
                print(table.to_string(index=False) if not table.empty else "(no specs)")
            n_done = int((table["state"] == "done").sum()) if not table.empty else 0
            print(f"sweep {sweep.name}: {len(table)} spec(s), {n_done} done, {len(table) - n_done} to run (out: {args.out})")
            return 0
        executor = get_executor(args.executor).build(args.jobs, executor_settings(args))
        summary = run_sweep(sweep, args.out, executor, args.data_root, progress=not args.no_progress)
        print(summary.text())
        return 1 if summary.failed else 0

    p.set_defaults(func=run)


COMMANDS.add("sweep", add)
