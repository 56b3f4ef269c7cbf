"""``bench table``: paper-style tables (Markdown, LaTeX, CSV pivot) from tidy runs.csv files."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional

from bench.commands import COMMANDS
from bench.core.io import refuse_overwriting_inputs
from bench.core.rows import apply_filters, load_rows
from bench.reporting.costs import COSTS, cost_points, render_points
from bench.reporting.render import FORMATS, render
from bench.reporting.tables import LAYOUTS, build_table, transpose_table


def decimals(text: str) -> int:
    """A number of decimals from 0 to 6."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--decimals must be a whole number from 0 to 6, got {text!r}") from None
    if not 0 <= value <= 6:
        raise argparse.ArgumentTypeError(f"--decimals must be a whole number from 0 to 6, got {value}")
    return value


def write(text: str, output: Optional[str]) -> int:
    """Write a rendered table to ``output``, or print it."""
    if output:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        Path(output).write_text(text)
        print(f"wrote {output}")
    else:
        print(text, end="")
    return 0


def add(sub: argparse._SubParsersAction) -> None:
    """Register ``bench table``."""

    p = sub.add_parser("table", help="sparsity / method / width tables from runs.csv (Markdown, LaTeX, CSV)",
                       description="Aggregate tidy rows over seeds into a paper-style table. Cells may only mix "
                                   "seeds; filter anything else with --where. See results/README.md.")
    p.add_argument("csv", nargs="*", default=["results/runs.csv"], help="tidy runs.csv file(s) [default: results/runs.csv]")
    p.add_argument("--layout", choices=LAYOUTS, default="sparsity",
                   help="sparsity: rows sparsity x columns method; method: rows method x columns arch x sparsity "
                        "('clean / robust'); width: rows width x columns sparsity or method [default: sparsity]")
    p.add_argument("--attack", default="worst_case", help="attack whose rows are used (or worst_case) [default: worst_case]")
    p.add_argument("--metric", choices=("robust", "clean") + tuple(COSTS), default="robust",
                   help="accuracy in the cells [default: robust]; or a cost (" + ", ".join(COSTS) + "): one line per "
                        "configuration with its robust accuracy, that cost and ★ on its method's Pareto front")
    p.add_argument("--columns", choices=("sparsity", "method"), default="sparsity", help="width layout's columns [default: sparsity]")
    p.add_argument("--format", choices=FORMATS, default="markdown", help="output format [default: markdown]")
    p.add_argument("--where", action="append", default=[], metavar="COL=VALUE",
                   help="keep rows where COL equals VALUE (a,b = either; COL!=VALUE excludes); repeatable")
    p.add_argument("--bold", choices=("column", "row", "none"), default="column", help="bold the best value per column or row [default: column]")
    p.add_argument("--decimals", type=decimals, default=1, help="decimals of percentages, 0 to 6 [default: 1]")
    p.add_argument("--reference", default=None, metavar="METHOD",
                   help="mark with ‡ the cells not significantly different from METHOD's (two-sided Fisher's exact "
                        "test on pooled examples, level 0.05; sparsity layout, or width with --columns method)")
    p.add_argument("--interval", action="store_true",
                   help="show each cell's 95 %% Wilson score interval over its pooled test examples, [low, high]")
    p.add_argument("--transpose", action="store_true",
                   help="swap rows and columns (sparsity and width layouts): methods down, sparsities or widths across")
    p.add_argument("--label", default=None, help="LaTeX \\label{...}")
    p.add_argument("--output", "-o", default=None, help="write to this file instead of stdout")

    def run(args: argparse.Namespace) -> int:
        if args.output:
            refuse_overwriting_inputs([args.output], args.csv, "--output")
        df = apply_filters(load_rows(args.csv), args.where)
        if args.metric in COSTS:
            text = render_points(cost_points(df, args.attack, args.metric), args.format, args.decimals)
            return write(text, args.output)
        table = build_table(df, args.layout, args.attack, args.metric, args.columns, args.interval, args.reference)
        if args.transpose:
            table = transpose_table(table)
        return write(render(table, args.format, args.bold, args.decimals, args.label), args.output)

    p.set_defaults(func=run)


COMMANDS.add("table", add)
