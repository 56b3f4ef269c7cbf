"""``bench run``: find a ticket, evaluate it, append rows to ``<out>/runs.csv``."""
from __future__ import annotations

import argparse

from bench.commands import COMMANDS
from bench.commands.spec_flags import add_spec_flags, spec_from_args
from bench.harness import run_spec


def add(sub: argparse._SubParsersAction) -> None:
    """Register ``bench run``."""
    p = sub.add_parser("run", help="find a ticket, evaluate it, append rows to <out>/runs.csv",
                       description="Find a ticket with METHOD at SPARSITY, evaluate it with the spec's attacks "
                                   "and append tidy rows to <out>/runs.csv. Rerunning the same spec resumes.")
    p.add_argument("--config", help="YAML preset of spec fields (flags override it)")
    p.add_argument("--out", default="results", help="output folder for runs.csv and runs/ [default: results]")
    p.add_argument("--data-root", default=None, help="folder with full datasets (or set $BENCH_DATA_ROOT)")
    add_spec_flags(p)

    def run(args: argparse.Namespace) -> int:
        run_spec(spec_from_args(args), args.out, args.data_root)
        return 0

    p.set_defaults(func=run)


COMMANDS.add("run", add)
