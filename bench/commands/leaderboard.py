"""``bench leaderboard``: rank tickets, write leaderboard.csv, entry JSONs and a static HTML page."""
from __future__ import annotations

import argparse
from pathlib import Path

from bench.commands import COMMANDS
from bench.core.io import refuse_overwriting_inputs
from bench.core.rows import apply_filters, load_rows
from bench.reporting.export import export_robustbench_json
from bench.reporting.leaderboard import build_leaderboard


def add(sub: argparse._SubParsersAction) -> None:
    """Register ``bench leaderboard``."""
    p = sub.add_parser("leaderboard", help="rank tickets by worst-case robust accuracy; csv, JSON entries, HTML page",
                       description="Rank every ticket in the runs.csv file(s) (plus submitted entries) by worst-case "
                                   "robust accuracy within (dataset, threat model, eps). Writes OUT/leaderboard.csv, "
                                   "OUT/leaderboard.html and one RobustBench-style JSON per ticket under OUT/entries/.")
    p.add_argument("csv", nargs="*", default=[], help="tidy runs.csv file(s) [default: results/runs.csv unless --submissions]")
    p.add_argument("--out", default="results/leaderboard", help="output folder [default: results/leaderboard]")
    p.add_argument("--submissions", default=None, metavar="DIR",
                   help="folder of submitted entry JSON files to merge (each validated; a bad one is an error)")
    p.add_argument("--where", action="append", default=[], metavar="COL=VALUE",
                   help="keep rows where COL equals VALUE (a,b = either; COL!=VALUE excludes); repeatable")
    p.add_argument("--verify", action="store_true",
                   help="re-evaluate each submission's ticket (its 'ticket' field) with its spec's attacks and reject a "
                        "claim the re-evaluation contradicts")
    p.add_argument("--data-root", default=None, help="folder with full datasets (for --verify)")
    p.add_argument("--robustbench-json", default=None, metavar="DIR",
                   help="also write one RobustBench model-info JSON per ticket under DIR/<dataset>/<threat>/")

    def run(args: argparse.Namespace) -> int:
        csvs = args.csv or ([] if args.submissions else ["results/runs.csv"])
        refuse_overwriting_inputs([Path(args.out) / "leaderboard.csv", Path(args.out) / "leaderboard.html"], csvs,
                                  "--out")
        rows = apply_filters(load_rows(csvs), args.where) if csvs else None
        result = build_leaderboard(rows, args.out, args.submissions, args.verify, args.data_root)
        if args.robustbench_json and rows is not None:
            export_robustbench_json(rows, args.robustbench_json)
            print(f"wrote RobustBench JSON files under {args.robustbench_json}")
        board = result["board"]
        print(f"{len(board)} entr(ies): {len(result['entries'])} local, {result['submitted']} submitted")
        if not board.empty:
            cols = ["dataset", "threat_model", "eps", "rank", "method", "width", "sparsity", "clean_acc", "robust_acc"]
            print(board[cols].head(20).to_string(index=False))
        print(f"wrote {result['csv']} and {result['html']}")
        return 0

    p.set_defaults(func=run)


COMMANDS.add("leaderboard", add)
