"""``bench zoo list``, the ``--zoo`` flags of ``bench eval``, and ``bench export-robustbench``.

See docs/robustbench.md. Everything that touches the ``robustbench`` package
goes through :mod:`bench.zoo`.
"""
from __future__ import annotations

import argparse
import dataclasses

from bench.commands import COMMANDS
from bench.core.config import coerce
from bench.core.rows import load_rows
from bench.nn.zoo_models import checkpoint_paths, zoo_models
from bench.reporting.export import export_robustbench_json
from bench.zoo import ZooSpec, run_zoo

DEFAULT_MODEL_DIR = "models"


def add_zoo_eval_flags(p: argparse.ArgumentParser) -> None:
    """The flags ``bench eval --zoo MODEL_NAME`` adds (``--attacks``/``--n-eval``/``--n-eval-aa`` are shared)."""

    helps = {f.name: f.metadata["help"] for f in dataclasses.fields(ZooSpec)}
    g = p.add_argument_group("RobustBench zoo model (instead of RUN_DIR; see docs/robustbench.md)")
    g.add_argument("--zoo", metavar="MODEL_NAME", default=None, help=helps["model"])
    g.add_argument("--model-dir", default=DEFAULT_MODEL_DIR,
                   help=f"RobustBench model folder (<dir>/<dataset>/<threat>/<name>.pt) [default: {DEFAULT_MODEL_DIR}]")
    g.add_argument("--zoo-dataset", default="cifar10", help=f"{helps['dataset']} [default: cifar10]")
    g.add_argument("--zoo-threat", default="Linf", help=f"{helps['threat']} [default: Linf]")
    g.add_argument("--zoo-eps", default=None, help=f"{helps['eps']}; a number or a fraction such as 8/255 [default: 8/255]")
    g.add_argument("--zoo-seed", type=int, default=0, help=f"{helps['seed']} [default: 0]")
    g.add_argument("--zoo-device", default="auto", help=f"{helps['device']} [default: auto]")
    g.add_argument("--zoo-out", default="results", help="output folder for runs.csv and zoo/<run_id>/ [default: results]")
    g.add_argument("--download", action="store_true", help="let RobustBench download missing weights (needs network)")


def run_zoo_eval(args: argparse.Namespace) -> int:
    """``bench eval --zoo``: load, measure sparsity, evaluate, append rows."""

    spec_args = {"model": args.zoo, "dataset": args.zoo_dataset, "threat": args.zoo_threat, "seed": args.zoo_seed,
                 "device": args.zoo_device}
    if args.zoo_eps is not None:
        spec_args["eps"] = coerce(args.zoo_eps, float, "--zoo-eps")
    if args.attacks:
        spec_args["attacks"] = args.attacks
    if args.n_eval is not None:
        spec_args["n_eval"] = args.n_eval
    if args.n_eval_aa is not None:
        spec_args["n_eval_aa"] = args.n_eval_aa
    run_zoo(ZooSpec(**spec_args), args.zoo_out, args.model_dir, data_root=args.data_root, download=args.download)
    return 0


def add_zoo(sub: argparse._SubParsersAction) -> None:
    """Register ``bench zoo list``."""
    p = sub.add_parser("zoo", help="RobustBench model zoo (list models; evaluate with `bench eval --zoo NAME`)")
    zsub = p.add_subparsers(dest="zoo_command", required=True)
    lp = zsub.add_parser("list", help="list RobustBench's models for one dataset and threat model")
    lp.add_argument("--dataset", default="cifar10", help="cifar10 | cifar100 | imagenet [default: cifar10]")
    lp.add_argument("--threat", default="Linf", help="Linf | L2 | corruptions [default: Linf]")
    lp.add_argument("--model-dir", default=DEFAULT_MODEL_DIR, help=f"mark models whose weights are here [default: {DEFAULT_MODEL_DIR}]")

    def run(args: argparse.Namespace) -> int:
        names = zoo_models(args.dataset, args.threat)
        for name in names:
            paths = checkpoint_paths(name, args.model_dir, args.dataset, args.threat)
            local = "local" if paths and all(p.is_file() for p in paths) else ("timm" if not paths else "")
            print(f"{name:<48} {local}")
        print(f"{len(names)} model(s) in RobustBench's {args.dataset}/{args.threat} zoo "
              f"('local': weights found in {args.model_dir})")
        return 0

    lp.set_defaults(func=run)


def add_export(sub: argparse._SubParsersAction) -> None:
    """Register ``bench export-robustbench``."""
    p = sub.add_parser("export-robustbench", help="write one RobustBench model-info JSON per ticket",
                       description="Write DIR/<dataset>/<threat>/<method>_<arch>_<run_id>.json for every run in "
                                   "RUNS_CSV, in RobustBench's model-info format plus sparsity fields.")
    p.add_argument("runs_csv", metavar="RUNS_CSV", help="a runs.csv written by bench")
    p.add_argument("out_dir", metavar="DIR", help="output folder")
    p.add_argument("--include-zoo", action="store_true", help="also export rows of RobustBench zoo models")

    def run(args: argparse.Namespace) -> int:
        paths = export_robustbench_json(load_rows([args.runs_csv]), args.out_dir, include_zoo=args.include_zoo)
        for path in paths:
            print(path)
        print(f"{len(paths)} model-info file(s) -> {args.out_dir}")
        return 0

    p.set_defaults(func=run)


COMMANDS.add("zoo", add_zoo)
COMMANDS.add("export-robustbench", add_export)
