"""``bench check``: the CI regression gate (exact on committed tickets, seed-aware on training)."""
from __future__ import annotations

import argparse
from pathlib import Path

from bench.commands import COMMANDS, add_progress_flag
from bench.gate.check import REFERENCE_DIR, run_check


def add(sub: argparse._SubParsersAction) -> None:
    """Register ``bench check``."""

    p = sub.add_parser("check", help="regression gate: exact on the committed tickets, seed-aware on retraining",
                       description="Evaluate the committed reference tickets afresh and compare per-example flags "
                                   "(fails on more than max(2, 0.5%%) flips or a 1-point move), then retrain the "
                                   "reference preset's specs and compare seed means with the reference's spread. One "
                                   "line per gated quantity. Exit 0 when all hold, 1 on any regression, 2 on bad input.")
    p.add_argument("--reference", type=Path, default=REFERENCE_DIR / "reference.csv",
                   help="training reference CSV (its tickets/ folder beside it)")
    p.add_argument("--preset", type=Path, default=REFERENCE_DIR / "preset.yaml", help="sweep file of the reference specs")
    p.add_argument("--out", type=Path, default=Path("results") / "check", help="where the check's runs go [default: results/check]")
    p.add_argument("--update", action="store_true",
                   help="rewrite the reference (seed means, tickets, flags) from this checkout and say what changed")
    p.add_argument("--data-root", default=None, help="folder with full datasets (or set $BENCH_DATA_ROOT)")
    add_progress_flag(p)

    def run(args: argparse.Namespace) -> int:
        code, report = run_check(args.preset, args.reference, args.out, args.update, args.data_root,
                                 progress=not args.no_progress)
        print(report)
        return code

    p.set_defaults(func=run)


COMMANDS.add("check", add)
