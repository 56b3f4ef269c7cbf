"""``bench plot``: accuracy vs sparsity / width and clean-vs-robust figures (PNG + PDF)."""
from __future__ import annotations

import argparse

from bench.commands import COMMANDS
from bench.core.rows import apply_filters, load_rows
from bench.reporting.costs import COSTS
from bench.reporting.plots import DEFAULT_KINDS, KINDS, make_plots


def add(sub: argparse._SubParsersAction) -> None:
    """Register ``bench plot``."""

    p = sub.add_parser("plot", help="figures from runs.csv: accuracy vs sparsity / width, clean vs robust, security curves",
                       description="Draw PNG and PDF figures from tidy rows (means over seeds, bands = ± std).")
    p.add_argument("csv", nargs="*", default=["results/runs.csv"], help="tidy runs.csv file(s) [default: results/runs.csv]")
    p.add_argument("--kind", action="append", choices=KINDS, default=None,
                   help="figure(s) to draw; repeatable [default: sparsity, width and scatter; "
                        "security draws the curves of `bench security`; cost draws accuracy against --cost with "
                        "each method's Pareto front]")
    p.add_argument("--attacks", default=None, help="comma-separated panels of the sparsity figure (and of the width figure, else --attack) "
                        "[default: every attack present]")
    p.add_argument("--attack", default="worst_case", help="attack of the width and scatter figures [default: worst_case]")
    p.add_argument("--metric", choices=("robust", "clean"), default="robust", help="accuracy on the y axis [default: robust]")
    p.add_argument("--cost", choices=tuple(COSTS), default="macs",
                   help="x axis of --kind cost: " + "; ".join(f"{k}: {v[1]}" for k, v in COSTS.items()) + " [default: macs]")
    p.add_argument("--where", action="append", default=[], metavar="COL=VALUE",
                   help="keep rows where COL equals VALUE (a,b = either; COL!=VALUE excludes); repeatable")
    p.add_argument("--out-dir", default="results/plots", help="folder for the figures [default: results/plots]")

    def run(args: argparse.Namespace) -> int:
        df = apply_filters(load_rows(args.csv), args.where)
        attacks = [a for a in args.attacks.split(",") if a] if args.attacks else None
        for path in make_plots(df, args.out_dir, args.kind or DEFAULT_KINDS, attacks, args.attack, args.metric,
                               args.cost):
            print(f"wrote {path}")
        return 0

    p.set_defaults(func=run)


COMMANDS.add("plot", add)
