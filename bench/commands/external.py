"""The ``--model`` flags of ``bench eval``: a model made outside this harness, under the full protocol."""
from __future__ import annotations

import argparse
import dataclasses

from bench.core.config import coerce
from bench.external import ExternalSpec, run_external

# Flags of bench eval that only a --model evaluation takes.
MODEL_ONLY = ("weights", "name", "dataset", "data_source", "num_classes", "image_size", "sparsity", "seed", "device",
              "latency")


def add_external_eval_flags(p: argparse.ArgumentParser) -> None:
    """``bench eval --model SPEC [--weights FILE] --name NAME`` and its data and threat flags."""
    helps = {f.name: f.metadata["help"] for f in dataclasses.fields(ExternalSpec)}
    g = p.add_argument_group("your own model (instead of RUN_DIR; see docs/extending.md). The module:factory form "
                             "imports and runs your code, because you ask for it")
    g.add_argument("--model", metavar="SPEC", default=None, help=helps["model"])
    g.add_argument("--weights", metavar="FILE", default=argparse.SUPPRESS,
                   help="state dict for a module:factory model (read with weights_only=True; prune's weight_orig/"
                        "weight_mask pairs are understood)")
    g.add_argument("--name", default=argparse.SUPPRESS, help=f"{helps['name']} (required with --model)")
    g.add_argument("--dataset", default=argparse.SUPPRESS, help=f"{helps['dataset']} [default: fashion-mnist]")
    g.add_argument("--data-source", default=argparse.SUPPRESS, help=f"{helps['data_source']} [default: auto]")
    g.add_argument("--num-classes", type=int, default=argparse.SUPPRESS, help=helps["num_classes"])
    g.add_argument("--image-size", type=int, default=argparse.SUPPRESS, help=helps["image_size"])
    g.add_argument("--sparsity", default=argparse.SUPPRESS, help=helps["claimed_sparsity"])
    g.add_argument("--seed", type=int, default=argparse.SUPPRESS, help=f"{helps['seed']} [default: 0]")
    g.add_argument("--device", default=argparse.SUPPRESS, help=f"{helps['device']} [default: auto]")
    g.add_argument("--latency", default=argparse.SUPPRESS, help=f"{helps['latency']} [default: true]")


def model_only_flags(args: argparse.Namespace) -> list:
    """The --model-only flags given on this command line."""
    return [f"--{name.replace('_', '-')}" for name in MODEL_ONLY if name in vars(args)]


def run_external_eval(args: argparse.Namespace) -> int:
    """``bench eval --model``: load, check, measure sparsity, evaluate, append rows to ``--out`` (default results)."""
    given = vars(args)
    if "name" not in given:
        raise ValueError("--model needs --name NAME (rows and leaderboards show it)")
    fields = {"model": args.model, "name": args.name}
    for key in ("dataset", "data_source", "num_classes", "image_size", "seed", "device"):
        if key in given:
            fields[key] = given[key]
    if "eps" in given:
        fields["eps"] = coerce(given["eps"], float, "--eps")
    fields["norm"] = args.norm or "Linf"
    if "latency" in given:
        fields["latency"] = coerce(given["latency"], bool, "--latency")
    if "sparsity" in given:
        fields["claimed_sparsity"] = coerce(given["sparsity"], float, "--sparsity")
    if args.attacks:
        fields["attacks"] = args.attacks
    if args.n_eval is not None:
        fields["n_eval"] = args.n_eval
    if args.n_eval_aa is not None:
        fields["n_eval_aa"] = args.n_eval_aa
    run_external(ExternalSpec(**fields), args.out or "results", given.get("weights"), data_root=args.data_root)
    return 0
