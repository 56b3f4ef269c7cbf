"""``bench security``: security curves of finished tickets (robust accuracy against eps from a minimum-norm attack:
FMN in L-inf, FAB in L2 and L1)."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable, List, Sequence

from bench.attacks import attack_norms
from bench.attacks.norms import NORMS
from bench.commands import COMMANDS, add_progress_flag
from bench.core import paths
from bench.core.results import AttackResult, read_rows_file
from bench.evaluation.security import (
    FMN_STEPS,
    GRID_POINTS,
    GRID_SPAN,
    adv_lib_version,
    check_settings,
    curve_results,
    eps_grid,
    fmn_function,
    min_norm,
    min_norm_function,
)
from bench.external import is_external_run, load_external_run
from bench.harness import evaluate_run, load_finished_ticket, record, threat_budget
from bench.methods import get_method
from bench.methods.ticket import read_spec


def check_args(args: argparse.Namespace) -> None:
    """Bad settings fail before any ticket is loaded (the grid scales with each spec's eps)."""
    check_settings(args.steps, args.grid_points, args.grid_span)
    if args.n_eval is not None and args.n_eval < 0:
        raise ValueError(f"--n-eval must be >= 0 (0 = the whole test set), got {args.n_eval}")


def security_curve(run_dir: Path, out: Path, args: argparse.Namespace) -> None:
    """The minimum-norm curve of one ticket or external model in ``--norm`` (default: its own threat model), checked
    against its fixed-eps evaluation in that threat model at that eps; its rows only."""
    if is_external_run(run_dir):
        external = load_external_run(run_dir, args.data_root)
        norm = args.norm or external.spec.norm
        if norm != external.spec.norm or args.eps is not None:
            raise ValueError(f"{run_dir} was evaluated in {external.spec.norm} at eps {external.spec.eps_value:g}: its "
                             "curve is in that threat model (evaluate it again with bench eval --model for another)")
        model, test, device, eps, n_default = (external.model, external.test, external.device, external.spec.eps_value,
                                               external.spec.n_eval)
        evaluated = external.evaluate()
        # A model made elsewhere is attacked as given (no evaluation-time preparation, as in its evaluation).
        prepare = False
        keep: Callable[[Sequence[AttackResult]], object] = lambda results: external.record(results, out)  # noqa: E731
    else:
        spec = read_spec(run_dir)
        ticket = load_finished_ticket(spec, run_dir, args.data_root)
        info = ticket.data.info
        norm = args.norm or spec.norm
        eps = threat_budget(spec, norm, args.eps, info.in_channels * info.image_size ** 2)
        model, test, device, n_default = ticket.model, ticket.data.test, ticket.device, spec.n_eval
        # The reference: the spec's attacks that run in this threat model (cached when evaluated before).
        attacks = [a for a in spec.eval_attacks if norm in attack_norms(a)]
        if not attacks:
            raise ValueError(f"none of {run_dir}'s attacks ({', '.join(spec.eval_attacks)}) runs in {norm}: evaluate it "
                             f"first with bench eval {run_dir} --norm {norm} --attacks autoattack")
        evaluated = evaluate_run(ticket, attacks, norm=norm, eps=eps)
        prepare = True
        keep = lambda results: record(ticket, results, out)  # noqa: E731
    # The spec's own evaluation (cached) is the reference the curve is checked against at its eps.
    reference = next((r for r in evaluated if r.attack == "worst_case"), evaluated[-1] if evaluated else None)
    n = n_default if args.n_eval is None else args.n_eval
    found = min_norm(model, test, n, device, paths.eval_root(run_dir), args.steps, prepare=prepare, norm=norm)
    curve = curve_results(found, eps, eps_grid(eps, args.grid_points, args.grid_span),
                          reference.robust if reference is not None else None, adv_lib_version())
    # Only the curve is recorded: the spec's own rows are bench run's and bench eval's to write.
    keep(curve)


def add(sub: argparse._SubParsersAction) -> None:
    """Register ``bench security``."""
    p = sub.add_parser("security", help="security curves of finished tickets: robust accuracy against eps from a "
                                        "minimum-norm attack (FMN; FAB in L2 and L1)",
                       description="Run a minimum-norm attack (adv-lib: FMN in L-inf, FAB in L2 and L1) on each "
                                   "ticket's test examples and append one row per eps of a grid (0 to SPAN x eps) "
                                   "with the median minimal perturbation; the curve is checked against the fixed-eps "
                                   "attacks in the same threat model at eps.")
    p.add_argument("run_dirs", nargs="+", help="run folders (<out>/runs/<run_id>) or external models' (<out>/external/<run_id>)")
    p.add_argument("--steps", type=int, default=FMN_STEPS, help=f"FMN steps / FAB iterations [default: {FMN_STEPS}]")
    p.add_argument("--norm", choices=NORMS, default=None, help="threat model of the curve [default: the run's]")
    p.add_argument("--eps", type=float, default=None,
                   help="the budget the curve is checked at and its grid scales with [default: the spec's in its "
                        "norm, else the dataset's standard for --norm]")
    p.add_argument("--n-eval", type=int, default=None, help="test examples [default: the spec's n_eval]")
    p.add_argument("--grid-points", type=int, default=GRID_POINTS, help=f"eps values of the curve [default: {GRID_POINTS}]")
    p.add_argument("--grid-span", type=float, default=GRID_SPAN,
                   help=f"largest eps of the curve, in multiples of the spec's eps [default: {GRID_SPAN:g}]")
    p.add_argument("--data-root", default=None, help="folder with full datasets")
    add_progress_flag(p)
    p.add_argument("--out", default=None, help="output folder whose runs.csv gets the rows [default: each run's <out>]")

    def run(args: argparse.Namespace) -> int:
        # Every folder is checked before any attack runs.
        run_dirs: List[Path] = [Path(d) for d in args.run_dirs]
        for run_dir in run_dirs:
            # An external model's evaluation folder (bench eval --model): its out is two folders up, as a run's.
            if is_external_run(run_dir):
                read_rows_file(paths.runs_csv(Path(args.out) if args.out is not None else paths.out_of_run(run_dir)))
                continue
            if not paths.ticket_finished(run_dir):
                raise ValueError(f"{run_dir} has no finished ticket (spec.json, ticket.pt and meta.json)")
            spec = read_spec(run_dir)
            if get_method(spec.method).randomized:
                raise ValueError(f"{run_dir}: method {spec.method} is randomised; FMN attacks one deterministic "
                                 "model, so its curve would not be an adaptive evaluation (use bench eval)")
            if args.out is None and not paths.in_output_folder(run_dir, spec.run_id):
                raise ValueError(f"{run_dir} is not <out>/runs/{spec.run_id}; give --out DIR for its rows")
            # A rows file that cannot take the rows is found now, not after the attacks.
            read_rows_file(paths.runs_csv(Path(args.out) if args.out is not None else paths.out_of_run(run_dir)))
        # adv-lib missing is found before any ticket is loaded or evaluated.
        fmn_function()
        min_norm_function("fab")
        check_args(args)
        for run_dir in run_dirs:
            out = Path(args.out) if args.out is not None else paths.out_of_run(run_dir)
            security_curve(run_dir, out, args)
        return 0

    p.set_defaults(func=run)


COMMANDS.add("security", add)
