"""``bench run``: find a ticket, evaluate it, append rows to ``<out>/runs.csv``."""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from bench.commands import COMMANDS, add_progress_flag
from bench.commands.spec_flags import add_method_flags, add_spec_flags, chosen_method, spec_from_args
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


def add_run_flags(p: argparse.ArgumentParser) -> None:
    """The flags every method shares: output, data root, preset, progress and the run spec's fields."""
    p.add_argument("-h", "--help", dest="show_help", action="store_true",
                   help="show this help (with --method M: M's own flags and defaults) and exit")
    p.add_argument("--config", help="YAML preset of spec fields (flags override it)")
    p.add_argument("--out", default="results", help="output folder for runs.csv and runs/ [default: results]")
    p.add_argument("--data-root", default=None, help="folder with full datasets (or set $BENCH_DATA_ROOT)")
    add_progress_flag(p)


def method_help(prog: str, method: str) -> str:
    """``bench run --help`` for ``method``: the shared flags and the method's own, with its defaults."""
    p = argparse.ArgumentParser(prog=prog, add_help=False, description=f"{DESCRIPTION} Flags of method {method} "
                                f"below; another method's: bench run --method M --help.")
    add_run_flags(p)
    add_spec_flags(p, hparams=False)
    add_method_flags(p, method)
    return p.format_help()


DESCRIPTION = ("Find a ticket with METHOD at SPARSITY, evaluate it with the spec's attacks and append tidy rows to "
               "<out>/runs.csv. Rerunning the same spec resumes.")


def add(sub: argparse._SubParsersAction) -> None:
    """Register ``bench run``."""
    p = sub.add_parser("run", help="find a ticket, evaluate it, append rows to <out>/runs.csv",
                       description=DESCRIPTION, add_help=False)
    add_run_flags(p)
    add_spec_flags(p)

    def run(args: argparse.Namespace) -> int:
        # --help waits for --method (wherever it stands) to show that method's flags.
        if args.show_help:
            print(method_help(p.prog, chosen_method(args)), end="")
            raise SystemExit(0)
        spec = spec_from_args(args)
        for line in spec_warnings(spec, args.data_root):
            print(f"bench: warning: {line}", file=sys.stderr)
        run_spec(spec, args.out, args.data_root)
        return 0

    p.set_defaults(func=run)


COMMANDS.add("run", add)
