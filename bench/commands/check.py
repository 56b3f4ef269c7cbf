"""``bench check``: the CI regression gate on robust-accuracy numbers."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional

from bench.check import REFERENCE_DIR, run_check
from bench.commands import COMMANDS


def _tolerance(text: str) -> Optional[float]:
    """'auto' (None) or a non-negative fraction."""
    if text.strip().lower() == "auto":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--tolerance must be 'auto' or a fraction >= 0, got {text!r}") from None
    if not (value >= 0):
        raise argparse.ArgumentTypeError(f"--tolerance must be 'auto' or a fraction >= 0, got {text!r}")
    return value


def add(sub: argparse._SubParsersAction) -> None:
    """Register ``bench check``."""

    p = sub.add_parser("check", help="regression gate: rerun the reference preset and compare accuracies",
                       description="Run (or reuse) the reference preset's specs and compare clean and robust accuracy "
                                   "per (run, attack) with the reference within an absolute tolerance. Exit 0 when "
                                   "all rows hold, 1 on any regression, 2 on bad input.")
    p.add_argument("--reference", type=Path, default=REFERENCE_DIR / "reference.csv", help="reference CSV")
    p.add_argument("--preset", type=Path, default=REFERENCE_DIR / "preset.yaml", help="sweep file of the reference specs")
    p.add_argument("--out", type=Path, default=Path("results") / "check", help="where the check's runs go [default: results/check]")
    p.add_argument("--tolerance", type=_tolerance, default=None,
                   help="absolute tolerance on accuracies, as a fraction (0.01 = 1 point), or 'auto': 3 binomial "
                        "standard errors of each reference value at its n_eval, at least 0.02; a row's own 'tolerance' "
                        "column overrides it [default: auto; runs are bit-identical on one CPU, other CPUs and CUDA "
                        "move them like a reseed]")
    p.add_argument("--update", action="store_true", help="rewrite the reference from this checkout's results and say what changed")
    p.add_argument("--data-root", default=None, help="folder with full datasets (or set $BENCH_DATA_ROOT)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")

    def run(args: argparse.Namespace) -> int:
        code, report = run_check(args.preset, args.reference, args.out, args.tolerance, args.update,
                                 args.data_root, progress=not args.no_progress)
        print(report)
        return code

    p.set_defaults(func=run)


COMMANDS.add("check", add)
