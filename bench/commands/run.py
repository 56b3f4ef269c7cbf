"""``bench run``: find a ticket, evaluate it, append rows to ``<out>/runs.csv``."""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from bench.commands import COMMANDS, add_progress_flag
from bench.commands.spec_flags import add_spec_flags, spec_from_args
from bench.data import resolve_source
from bench.harness import run_spec
from bench.spec import RunSpec


def spec_warnings(spec: RunSpec, data_root: Optional[str]) -> List[str]:
    """Legal specs that probably do not do what the user meant, one line each."""
    lines = []
    # Zero epochs is a control (the method's initialisation, evaluated), rarely what a user wants.
    if spec.epochs == 0:
        lines.append("--epochs 0 trains nothing: the ticket is the method's initialisation (a control)")
    # A data root is read only for full data; the embedded subset never looks at it.
    if data_root is not None and resolve_source(spec.dataset, spec.data_source) == "embedded":
        lines.append(f"--data-root {data_root} is not read: {spec.dataset} uses its embedded subset "
                     "(--data-source auto); add --data-source full to train on the files there")
    return lines


def add(sub: argparse._SubParsersAction) -> None:
    """Register ``bench run``."""
    p = sub.add_parser("run", help="find a ticket, evaluate it, append rows to <out>/runs.csv",
                       description="Find a ticket with METHOD at SPARSITY, evaluate it with the spec's attacks "
                                   "and append tidy rows to <out>/runs.csv. Rerunning the same spec resumes.")
    p.add_argument("--config", help="YAML preset of spec fields (flags override it)")
    p.add_argument("--out", default="results", help="output folder for runs.csv and runs/ [default: results]")
    p.add_argument("--data-root", default=None, help="folder with full datasets (or set $BENCH_DATA_ROOT)")
    add_spec_flags(p)
    add_progress_flag(p)

    def run(args: argparse.Namespace) -> int:
        spec = spec_from_args(args)
        for line in spec_warnings(spec, args.data_root):
            print(f"bench: warning: {line}", file=sys.stderr)
        run_spec(spec, args.out, args.data_root)
        return 0

    p.set_defaults(func=run)


COMMANDS.add("run", add)
