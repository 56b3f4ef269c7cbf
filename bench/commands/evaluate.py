"""``bench eval``: evaluate an existing ticket with more attacks or examples, a RobustBench model (``--zoo``), or
your own model (``--model``)."""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from bench.attacks.norms import NORMS
from bench.commands import COMMANDS, add_progress_flag
from bench.commands.external import add_external_eval_flags, model_only_flags, run_external_eval
from bench.commands.zoo import add_zoo_eval_flags, run_zoo_eval
from bench.core import paths
from bench.core.config import coerce
from bench.core.results import read_rows_file
from bench.harness import evaluate_run, load_finished_ticket, record
from bench.methods.ticket import read_spec


def add(sub: argparse._SubParsersAction) -> None:
    """Register ``bench eval``."""
    p = sub.add_parser("eval", help="evaluate a ticket (or a RobustBench model, --zoo, or your own, --model) with more attacks or examples")
    p.add_argument("run_dir", nargs="?", default=None, help="a run folder (<out>/runs/<run_id>); omit with --zoo or --model")
    p.add_argument("--attacks", default=None, help="comma-separated attacks [default: the spec's]")
    p.add_argument("--n-eval", type=int, default=None, help="test examples for clean/PGD/CW")
    p.add_argument("--n-eval-aa", type=int, default=None, help="test examples for AutoAttack")
    p.add_argument("--no-cascade", dest="cascade", action="store_false",
                   help="run AutoAttack-family attacks on every clean-correct example (rows = accuracy alone), "
                        "not only on those still robust after the cheaper attacks")
    p.add_argument("--data-root", default=None, help="folder with full datasets")
    p.add_argument("--out", default=None,
                   help="output folder whose runs.csv gets the rows [default: the <out> of <out>/runs/<run_id>; "
                        "needed for a run folder kept anywhere else]")
    g = p.add_argument_group("threat model (a run folder or --model; default: the spec's norm and budget)")
    g.add_argument("--norm", default=None, choices=NORMS,
                   help="Linf | L2 | L1: PGD/CW in Linf or L2, AutoAttack in all three [default: the spec's, Linf]")
    g.add_argument("--eps", default=argparse.SUPPRESS,
                   help="budget in [0,1] pixel units (a number or a fraction such as 8/255); default: the spec's "
                        "L-inf eps, or the field's standard for L2/L1 (CIFAR L2 0.5, L1 12), else required")
    add_zoo_eval_flags(p)
    add_external_eval_flags(p)
    add_progress_flag(p)

    def run(args: argparse.Namespace) -> int:
        # Your own model: checked, measured and evaluated like a ticket.
        if args.model is not None:
            if args.run_dir is not None or args.zoo is not None:
                raise ValueError("give one of RUN_DIR, --zoo MODEL_NAME or --model SPEC")
            return run_external_eval(args)
        given = model_only_flags(args)
        if given:
            raise ValueError(f"{given[0]} goes with --model SPEC (your own model); a run folder's spec fixes it")
        if args.zoo is not None:
            if args.norm is not None or "eps" in vars(args):
                raise ValueError("--zoo takes its budget from --zoo-eps (L-inf), not --norm/--eps")
            if args.run_dir is not None:
                raise ValueError("give either RUN_DIR or --zoo MODEL_NAME, not both")
            return run_zoo_eval(args)
        if args.run_dir is None:
            raise ValueError("give a run folder (RUN_DIR), --zoo MODEL_NAME or --model SPEC")
        run_dir = Path(args.run_dir)
        if not paths.ticket_finished(run_dir):
            raise ValueError(f"{run_dir} has no finished ticket (spec.json, ticket.pt and meta.json)")
        spec = read_spec(run_dir)
        if args.attacks:
            spec = dataclasses.replace(spec, eval_attacks=tuple(a for a in args.attacks.split(",") if a))
        # Rows go to --out, else to the output folder the run sits in.
        if args.out is not None:
            out = Path(args.out)
        elif paths.in_output_folder(run_dir, spec.run_id):
            out = paths.out_of_run(run_dir)
        else:
            raise ValueError(f"{run_dir} is not <out>/runs/{spec.run_id} (a copied or renamed run folder); "
                             "give --out DIR to say which runs.csv gets its rows")
        # The rows file the results go to is checked before any attack runs (an unreadable one would stop after).
        read_rows_file(paths.runs_csv(out))
        ticket = load_finished_ticket(spec, run_dir, args.data_root)
        eps = coerce(vars(args)["eps"], float, "--eps") if "eps" in vars(args) else None
        results = evaluate_run(ticket, n_eval=args.n_eval, n_eval_aa=args.n_eval_aa, cascade=args.cascade, norm=args.norm, eps=eps)
        record(ticket, results, out)
        return 0

    p.set_defaults(func=run)


COMMANDS.add("eval", add)
