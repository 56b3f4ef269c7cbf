"""Evaluation-time model preparation (``bench.nn.inference``), A/B on one ticket in one run.

1. Pass rates: input-gradient (forward + backward to the input) and forward-only
   images/s of the ticket as trained (masked layers, BatchNorm), of its prepared
   copy (masks materialised, BatchNorm folded) and of that copy channels-last;
   repetitions interleaved, best of each.
2. The whole evaluation (``bench.evaluation.evaluate.evaluate``: the default PGD-20, CW-20
   and AutoAttack cascade) without and with preparation: seconds per attack, their
   ratio, and the examples whose robust flag differs, with the clean margin of each
   (float rounding can only decide where the two passes disagree).

    python benchmarks/eval_prepare.py --run-dir RUN_DIR [--threads 2] [--skip-eval]

Without ``--run-dir`` the default `bench run --method rst --sparsity 0.9` ticket is
found (or searched, a few minutes) under ``--out``.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import torch
import torch.nn as nn

from bench.data import Split, load_data, to_float
from bench.evaluation.evaluate import evaluate
from bench.harness import find_or_load_ticket
from bench.methods.ticket import load_ticket
from bench.nn.inference import inference_model
from bench.spec import RunSpec


def ticket(args: argparse.Namespace) -> Tuple[nn.Module, Split, RunSpec]:
    """The ticket to measure, its test split and spec."""
    if args.run_dir:
        run_dir = Path(args.run_dir)
        spec = RunSpec.from_dict(json.loads((run_dir / "spec.json").read_text()))
        data = load_data(spec.dataset, spec.data_source, None, spec.val_fraction, spec.seed, spec.n_train, spec.data_info)
        return load_ticket(run_dir, torch.device("cpu")).eval(), data.test, spec
    found = find_or_load_ticket(RunSpec(device="cpu"), Path(args.out))
    return found.model.eval(), found.data.test, found.spec


def rate(fn: Callable[[], None], batch: int, min_images: int) -> float:
    """Images per second of ``fn`` (one call = ``batch`` images), over at least ``min_images``."""
    t0, n = time.perf_counter(), 0
    while n < min_images:
        fn()
        n += batch
    return n / (time.perf_counter() - t0)


def grad_pass(model: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    """One forward and backward pass to the input of ``x``."""
    xg = x.clone().requires_grad_(True)
    return lambda: None if torch.autograd.grad(model(xg).sum(), xg) is None else None


def forward_pass(model: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    """One forward pass of ``x`` without autograd."""

    def run() -> None:
        with torch.no_grad():
            model(x)

    return run


def pass_rates(models: Dict[str, nn.Module], x: torch.Tensor, reps: int) -> Dict[str, Dict[str, float]]:
    """Best-of-``reps`` input-gradient and forward-only images/s of each model, interleaved."""
    best: Dict[str, Dict[str, float]] = {k: {"grad": 0.0, "forward": 0.0} for k in models}
    for _ in range(reps):
        for name, model in models.items():
            best[name]["grad"] = max(best[name]["grad"], rate(grad_pass(model, x), len(x), 6 * len(x)))
            best[name]["forward"] = max(best[name]["forward"], rate(forward_pass(model, x), len(x), 12 * len(x)))
    return best


def main() -> None:
    """Print both tables."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run-dir", default="", help="a finished run folder (default: the default run's ticket)")
    p.add_argument("--out", default="/tmp/bench-eval-prepare", help="where the default ticket is found or searched")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 500])
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--skip-eval", action="store_true", help="pass rates only")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model, test, spec = ticket(args)
    for q in model.parameters():
        q.requires_grad_(False)
    print(f"ticket: {spec.method} {spec.arch} width {spec.width} sparsity {spec.sparsity} on {spec.dataset}; "
          f"{torch.get_num_threads()} thread(s), torch {torch.__version__}")

    # 1. Pass rates of the three forms of the same function.
    models = {"as trained": model, "prepared": inference_model(model),
              "prepared, channels-last": inference_model(model, channels_last=True)}
    print("\n| batch | model | input-gradient img/s | ratio | forward img/s | ratio |\n|---|---|---|---|---|---|")
    for bs in args.batch_sizes:
        x = to_float(test.x[:bs], torch.device("cpu"))
        with torch.no_grad():
            ref = model(x)
            for name, m in models.items():
                diff = float((m(x) - ref).abs().max())
                print(f"<!-- {name}: max |logit difference| {diff:.2e} -->")
        best = pass_rates(models, x, args.reps)
        base = best["as trained"]
        for name, r in best.items():
            print(f"| {bs} | {name} | {r['grad']:.0f} | {r['grad'] / base['grad']:.2f} | {r['forward']:.0f} | "
                  f"{r['forward'] / base['forward']:.2f} |")
    if args.skip_eval:
        return

    # 2. The whole evaluation without and with preparation: time and per-example flags.
    n_aa = spec.n_eval_aa if spec.n_eval_aa is not None else 100
    runs: Dict[bool, List] = {}
    for prepare in (False, True):
        t0 = time.perf_counter()
        runs[prepare] = evaluate(model, test, spec.eval_attacks, spec.eps_value, spec.n_eval, n_aa, torch.device("cpu"),
                                 seed=spec.seed, prepare=prepare)
        print(f"<!-- prepare={prepare}: {time.perf_counter() - t0:.1f} s -->")
    xs = to_float(test.x[: spec.n_eval], torch.device("cpu"))
    with torch.no_grad():
        logits = model(xs)
    top2 = logits.topk(2, dim=1).values
    margin = top2[:, 0] - top2[:, 1]
    print("\n| attack | n | robust acc (as trained) | robust acc (prepared) | seconds (as trained) | seconds (prepared) "
          "| ratio | flags differing | their clean margins |\n|---|---|---|---|---|---|---|---|---|")
    total = [0.0, 0.0]
    for a, b in zip(runs[False], runs[True]):
        differ = (a.robust != b.robust).nonzero().flatten()
        margins = ", ".join(f"{float(margin[i]):.2g}" for i in differ[:8])
        total[0] += a.seconds
        total[1] += b.seconds
        print(f"| {a.attack} | {a.n_eval} | {a.robust_acc:.4f} | {b.robust_acc:.4f} | {a.seconds:.1f} | {b.seconds:.1f} | "
              f"{a.seconds / max(b.seconds, 1e-9):.2f} | {len(differ)} | {margins} |")
    print(f"| all | | | | {total[0]:.1f} | {total[1]:.1f} | {total[0] / max(total[1], 1e-9):.2f} | | |")


if __name__ == "__main__":
    main()
