"""``bench compare``: are two tickets' robust accuracies different? McNemar's exact test on paired flags."""
from __future__ import annotations

import argparse
from pathlib import Path

from bench.commands import COMMANDS
from bench.core import paths
from bench.external import is_external_run
from bench.reporting.compare import compare_runs, comparison_table


def add(sub: argparse._SubParsersAction) -> None:
    """Register ``bench compare``."""
    p = sub.add_parser("compare", help="paired test of two tickets' robust accuracy (McNemar's exact test on per-example flags)")
    p.add_argument("run_a", help="a finished run folder (<out>/runs/<run_id>), or an external model's (<out>/external/<run_id>)")
    p.add_argument("run_b", help="another finished run folder on the same dataset and eps")
    p.add_argument("--attacks", default=None, help="comma-separated attacks [default: those both specs evaluate]")
    p.add_argument("--n-eval", type=int, default=None, help="test examples [default: each spec's n_eval]")
    p.add_argument("--level", type=float, default=0.05, help="significance level of the two-sided test [default: 0.05]")
    p.add_argument("--data-root", default=None, help="folder with full datasets")

    def run(args: argparse.Namespace) -> int:
        if not 0 < args.level < 1:
            raise ValueError(f"--level must be in (0, 1), got {args.level}")
        for run_dir in (args.run_a, args.run_b):
            if not paths.ticket_finished(Path(run_dir)) and not is_external_run(run_dir):
                raise ValueError(f"{run_dir} has no finished ticket (spec.json, ticket.pt and meta.json)")
        attacks = [a for a in args.attacks.split(",") if a] if args.attacks else None
        rows = compare_runs(Path(args.run_a), Path(args.run_b), attacks, args.n_eval, args.data_root)
        print(f"A = {args.run_a}\nB = {args.run_b}\n")
        print(comparison_table(rows, args.level, "A", "B"))
        return 0

    p.set_defaults(func=run)


COMMANDS.add("compare", add)
