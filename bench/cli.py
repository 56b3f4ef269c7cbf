"""The ``bench`` command line. Flags of ``bench run`` are generated from :class:`RunSpec`.

Each subcommand lives in a function registered in ``COMMANDS``; bad input
prints one line to stderr and exits with code 2.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import typing
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

from bench.registry import Registry
from bench.spec import RunSpec, field_types, load_yaml

Command = Callable[[argparse.Namespace], int]
COMMANDS: Registry[Callable[[argparse._SubParsersAction], None]] = Registry("command")


def _type_name(tp: Any) -> str:
    """Readable type for --help."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return getattr(args[0] if args else tp, "__name__", str(tp))


def add_spec_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per RunSpec field and per method hyperparameter (defaults suppressed)."""
    from bench.methods import METHODS, discover

    types = field_types(RunSpec)
    group = parser.add_argument_group("run spec (also settable in --config YAML)")
    for f in dataclasses.fields(RunSpec):
        if f.name == "hparams":
            continue
        default = ",".join(f.default) if isinstance(f.default, tuple) else f.default
        group.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, default=argparse.SUPPRESS,
                           metavar=_type_name(types[f.name]).upper(), help=f"{f.metadata['help']} [default: {default}]".replace("%", "%%"))
    discover()
    seen: Dict[str, str] = {}
    hp_group = parser.add_argument_group("method hyperparameters (YAML: under 'hparams:')")
    for name, entry in METHODS.items():
        for hf in dataclasses.fields(entry.obj.Hparams):
            if hf.name in seen:
                seen[hf.name] += f", {name}"
                continue
            seen[hf.name] = name
            hp_group.add_argument(f"--{hf.name.replace('_', '-')}", dest=f"hp__{hf.name}", default=argparse.SUPPRESS,
                                  help=f"{hf.metadata.get('help', hf.name)} [{name}; default: {hf.default}]".replace("%", "%%"))


def spec_from_args(args: argparse.Namespace) -> RunSpec:
    """YAML preset (if any) overridden by explicit flags; unknown keys are errors."""
    data: Dict[str, Any] = dict(load_yaml(args.config)) if getattr(args, "config", None) else {}
    hp = dict(data.pop("hparams", None) or {})
    spec_names = {f.name for f in dataclasses.fields(RunSpec)}
    for key, value in vars(args).items():
        if key.startswith("hp__"):
            hp[key[4:]] = value
        elif key in spec_names:
            data[key] = value
    if hp:
        data["hparams"] = _coerce_hparams(data.get("method", "rst"), hp)
    return RunSpec.from_dict(data)


def _coerce_hparams(method_name: str, hp: Dict[str, Any]) -> Any:
    """Method hyperparameters from strings; a flag of another method is an error."""
    from bench.methods import get_method
    from bench.spec import build_dataclass

    cls = get_method(method_name).Hparams
    return build_dataclass(cls, hp, f"{method_name} hyperparameter")


def cmd_run(parser_sub: argparse._SubParsersAction) -> None:
    """Register ``bench run``."""
    p = parser_sub.add_parser("run", help="find a ticket, evaluate it, append rows to <out>/runs.csv",
                              description="Find a ticket with METHOD at SPARSITY, evaluate it with the spec's attacks "
                                          "and append tidy rows to <out>/runs.csv. Rerunning the same spec resumes.")
    p.add_argument("--config", help="YAML preset of spec fields (flags override it)")
    p.add_argument("--out", default="results", help="output folder for runs.csv and runs/ [default: results]")
    p.add_argument("--data-root", default=None, help="folder with full datasets (or set $BENCH_DATA_ROOT)")
    add_spec_flags(p)

    def run(args: argparse.Namespace) -> int:
        from bench.harness import run_spec

        run_spec(spec_from_args(args), args.out, args.data_root)
        return 0

    p.set_defaults(func=run)


def cmd_list(parser_sub: argparse._SubParsersAction) -> None:
    """Register ``bench list``."""
    p = parser_sub.add_parser("list", help="list methods, datasets, architectures and attacks")

    def run(args: argparse.Namespace) -> int:
        print(registry_listing())
        return 0

    p.set_defaults(func=run)


def registry_listing() -> str:
    """Every registry entry with its one-line description."""
    from bench.attacks import ATTACKS
    from bench.data import DATASETS
    from bench.methods import METHODS, discover
    from bench.models import MODELS

    discover()
    lines = []
    for title, reg in (("methods", METHODS), ("datasets", DATASETS), ("architectures", MODELS), ("attacks", ATTACKS)):
        lines.append(f"{title}:")
        lines += [f"  {name:<16} {entry.description}" for name, entry in reg.items()]
    return "\n".join(lines)


def cmd_eval(parser_sub: argparse._SubParsersAction) -> None:
    """Register ``bench eval``."""
    from bench.commands.zoo import add_zoo_eval_flags, run_zoo_eval

    p = parser_sub.add_parser("eval", help="evaluate an existing ticket (or a RobustBench model, --zoo) with more attacks or examples")
    p.add_argument("run_dir", nargs="?", default=None, help="a run folder (<out>/runs/<run_id>); omit with --zoo")
    p.add_argument("--attacks", default=None, help="comma-separated attacks [default: the spec's]")
    p.add_argument("--n-eval", type=int, default=None, help="test examples for clean/PGD/CW")
    p.add_argument("--n-eval-aa", type=int, default=None, help="test examples for AutoAttack")
    p.add_argument("--no-cascade", dest="cascade", action="store_false",
                   help="run AutoAttack-family attacks on every clean-correct example (rows = accuracy alone), "
                        "not only on those still robust after the cheaper attacks")
    p.add_argument("--data-root", default=None, help="folder with full datasets")
    add_zoo_eval_flags(p)

    def run(args: argparse.Namespace) -> int:
        import json

        import pandas as pd

        from bench.harness import evaluate_run, find_or_load_ticket, result_rows, summary
        from bench.results import append_rows

        if args.zoo is not None:
            if args.run_dir is not None:
                raise ValueError("give either RUN_DIR or --zoo MODEL_NAME, not both")
            return run_zoo_eval(args)
        if args.run_dir is None:
            raise ValueError("give a run folder (RUN_DIR) or --zoo MODEL_NAME")
        run_dir = Path(args.run_dir)
        if not ((run_dir / "ticket.pt").exists() and (run_dir / "spec.json").exists()):
            raise ValueError(f"{run_dir} has no finished ticket (spec.json and ticket.pt)")
        spec = RunSpec.from_dict(json.loads((run_dir / "spec.json").read_text()))
        if args.attacks:
            spec = dataclasses.replace(spec, eval_attacks=tuple(a for a in args.attacks.split(",") if a))
        out = run_dir.parent.parent
        spec, data, device, run_dir, model, meta = find_or_load_ticket(spec, out, args.data_root, must_exist=True)
        results = evaluate_run(spec, data, device, run_dir, model, meta, n_eval=args.n_eval, n_eval_aa=args.n_eval_aa,
                               cascade=args.cascade)
        rows = result_rows(spec, meta, results, device)
        added = append_rows(out / "runs.csv", rows)
        print(summary(pd.DataFrame(rows), spec, meta, added, out / "runs.csv"))
        return 0

    p.set_defaults(func=run)


COMMANDS.add("run", cmd_run)
COMMANDS.add("list", cmd_list)
COMMANDS.add("eval", cmd_eval)


def discover_commands() -> None:
    """Import every module of ``bench.commands`` (each registers its subcommand)."""
    import importlib
    import pkgutil

    import bench.commands

    for info in pkgutil.iter_modules(bench.commands.__path__):
        importlib.import_module(f"bench.commands.{info.name}")


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every registered subcommand."""
    discover_commands()
    parser = argparse.ArgumentParser(prog="bench", description="Benchmark harness for robust tickets.")
    sub = parser.add_subparsers(dest="command", required=True)
    for _name, entry in COMMANDS.items():
        entry.obj(sub)
    return parser


# oneDNN primitives cached per input shape (CPU). Early-stopping PGD shrinks its
# batch at every step, so the default cache (1024 primitives) filled with one
# entry per shape and held ~200 MB more by the third epoch of the default run;
# 64 entries cost no measurable speed. Read by oneDNN at its first primitive.
ONEDNN_CACHE_CAPACITY = "64"


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``bench`` console script."""
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", ONEDNN_CACHE_CAPACITY)
    parser = build_parser()
    args = parser.parse_args(argv)
    from bench.train import TrainingDivergedError

    try:
        code = args.func(args)
    except TrainingDivergedError as exc:
        print(f"bench: run failed: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 2
    return int(code or 0)

