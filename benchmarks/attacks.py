"""Attack speed, measured as ratios within one run (never as timed asserts in tests).

1. Our PGD-20 vs torchattacks' PGD-20: same model, batch, examples, eps, step
   and thread count; repetitions interleaved, median time of each.
2. The cascade PGD-20 -> CW-20 -> AutoAttack-standard (``bench.evaluation.evaluate``)
   vs AutoAttack-standard alone, on the same examples.
3. Images per second of every attack (clean-correct examples attacked / s).

The model is a ticket: ``--run-dir`` of a finished run, or by default a small
PGD-trained dense convnet found with the harness (cached under ``--out``).

    python benchmarks/attacks.py --threads 1 --out /tmp/bench-attacks
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from bench.attacks import make_attack
from bench.data import Split, load_data, to_float
from bench.evaluation.evaluate import correct_flags, evaluate, worst_case
from bench.harness import find_or_load_ticket, load_ticket
from bench.spec import RunSpec

PER_ATTACK = ("fgsm", "pgd20", "cw20", "pgd50", "pgd100", "eot-pgd", "apgd-ce", "apgd-t", "fab-t", "square", "autoattack")


def get_model(args: argparse.Namespace, device: torch.device) -> Tuple[nn.Module, Split, float, str]:
    """The ticket to attack, its test split, eps and a one-line description."""
    if args.run_dir:
        run_dir = Path(args.run_dir)
        spec = RunSpec.from_dict(json.loads((run_dir / "spec.json").read_text()))
        data = load_data(spec.dataset, spec.data_source, None, spec.val_fraction, spec.seed)
        return load_ticket(run_dir, device), data.test, float(spec.eps), f"ticket {run_dir}"
    spec = RunSpec(method="dense-at", sparsity=0.0, arch="convnet", width=args.width, n_train=args.n_train,
                   epochs=args.epochs, train_steps=5, eval_attacks=("pgd20",), device=device.type)
    ticket = find_or_load_ticket(spec, Path(args.out))
    desc = f"dense-at convnet width {args.width}, {args.n_train} train examples, {args.epochs} epochs PGD-5 AT ({ticket.run_dir})"
    return ticket.model.eval(), ticket.data.test, ticket.spec.eps_value, desc


def timed(fn: Callable[[], Any]) -> Tuple[float, Any]:
    """Seconds and result of ``fn()``."""
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Plain accuracy."""
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def pgd_vs_torchattacks(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, batch: int, repeats: int) -> Dict[str, Any]:
    """Median wall time of our PGD-20 and torchattacks' PGD-20 over the same batches, interleaved."""
    import torchattacks

    ours_attack = make_attack("pgd20", eps)
    theirs_attack = torchattacks.PGD(model, eps=eps, alpha=eps / 4, steps=20, random_start=True)

    def run(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> torch.Tensor:
        return torch.cat([fn(x[i : i + batch], y[i : i + batch]) for i in range(0, len(x), batch)])

    times: Dict[str, List[float]] = {"ours": [], "torchattacks": []}
    adv: Dict[str, torch.Tensor] = {}
    for _ in range(repeats):
        t, adv["ours"] = timed(lambda: run(lambda a, b: ours_attack(model, a, b)))
        times["ours"].append(t)
        t, adv["torchattacks"] = timed(lambda: run(lambda a, b: theirs_attack(a, b)))
        times["torchattacks"].append(t)
    model.eval()
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"n": len(x), "batch": batch, "repeats": repeats,
            "seconds_median": med, "images_per_s": {k: len(x) / v for k, v in med.items()},
            "robust_acc": {k: accuracy(model, v, y) for k, v in adv.items()},
            "throughput_ratio_ours_over_torchattacks": med["torchattacks"] / med["ours"]}


def cascade_vs_autoattack(model: nn.Module, test: Split, eps: float, n: int, device: torch.device) -> Dict[str, Any]:
    """Cost of PGD-20 -> CW-20 -> AA-standard vs AA-standard alone (no caches, same examples)."""
    t_alone, alone = timed(lambda: evaluate(model, test, ["autoattack"], eps, n, n, device))
    t_cascade, cascade = timed(lambda: evaluate(model, test, ["pgd20", "cw20", "autoattack"], eps, n, n, device))
    worst = worst_case(cascade)
    return {"n": n, "seconds": {"autoattack_alone": t_alone, "cascade": t_cascade},
            "robust_acc": {"autoattack_alone": alone[0].robust_acc, "cascade_worst_case": worst.robust_acc if worst else None},
            "rows": {r.attack: {"robust_acc": r.robust_acc, "scope": r.scope, "seconds": r.seconds,
                                "attacked": r.stats.get("n_attacked")} for r in cascade},
            "cost_ratio_cascade_over_autoattack": t_cascade / t_alone}


def per_attack(model: nn.Module, test: Split, eps: float, names: Sequence[str], n: int, n_aa: int,
               device: torch.device) -> Dict[str, Dict[str, float]]:
    """Images per second of each attack alone on the clean-correct examples among the first n (n_aa for AutoAttack)."""
    out = {}
    for name in names:
        attack = make_attack(name, eps)
        split = test.head(n_aa if attack.cascade_only else n)
        ok = correct_flags(model, split, device).nonzero().squeeze(1)
        x, y = to_float(split.x[ok], device), split.y[ok].to(device)
        seconds, x_adv = timed(lambda attack=attack, x=x, y=y: attack(model, x, y))
        out[name] = {"attacked": len(x), "seconds": seconds, "images_per_s": len(x) / seconds,
                     "robust_acc_of_correct": accuracy(model, x_adv, y)}
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the three measurements and print them (and write JSON to --out)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run-dir", default=None, help="benchmark this finished run's ticket instead of training one")
    p.add_argument("--out", default="/tmp/bench-attacks", help="folder for the cached model and attacks.json")
    p.add_argument("--device", default="cpu", help="cpu | cuda")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    p.add_argument("--width", type=float, default=0.5, help="convnet width of the default model")
    p.add_argument("--n-train", type=int, default=3000, help="training examples of the default model")
    p.add_argument("--epochs", type=int, default=3, help="epochs of the default model")
    p.add_argument("--n-pgd", type=int, default=1000, help="examples for the PGD comparison")
    p.add_argument("--batch", type=int, default=250, help="batch size of the PGD comparison")
    p.add_argument("--repeats", type=int, default=3, help="interleaved repetitions of the PGD comparison")
    p.add_argument("--n-cascade", type=int, default=100, help="examples for cascade vs AutoAttack")
    p.add_argument("--n-aa", type=int, default=50, help="examples for per-attack speed of AutoAttack-family attacks")
    p.add_argument("--skip", default="", help="comma-separated parts to skip: pgd,cascade,per-attack")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    skip = set(filter(None, args.skip.split(",")))
    model, test, eps, desc = get_model(args, device)
    report: Dict[str, Any] = {"model": desc, "eps": eps, "device": str(device), "threads": torch.get_num_threads(),
                              "torch": torch.__version__}
    print(f"model: {desc}\neps {eps:.4g}, device {device}, {torch.get_num_threads()} thread(s), torch {torch.__version__}")
    x, y = to_float(test.x[: args.n_pgd], device), test.y[: args.n_pgd].to(device)
    print(f"clean accuracy on {len(y)}: {accuracy(model, x, y):.4f}")
    if "pgd" not in skip:
        r = report["pgd20_vs_torchattacks"] = pgd_vs_torchattacks(model, x, y, eps, args.batch, args.repeats)
        print(f"PGD-20 on {r['n']} examples (batch {r['batch']}, median of {r['repeats']}): "
              f"ours {r['images_per_s']['ours']:.1f} img/s (robust {r['robust_acc']['ours']:.4f}), "
              f"torchattacks {r['images_per_s']['torchattacks']:.1f} img/s (robust {r['robust_acc']['torchattacks']:.4f}); "
              f"throughput ratio ours/torchattacks = {r['throughput_ratio_ours_over_torchattacks']:.2f}x")
    if "cascade" not in skip:
        r = report["cascade_vs_autoattack"] = cascade_vs_autoattack(model, test, eps, args.n_cascade, device)
        print(f"cascade PGD-20 -> CW-20 -> AA-standard on {r['n']}: {r['seconds']['cascade']:.1f}s "
              f"(worst case {r['robust_acc']['cascade_worst_case']:.4f}); AA-standard alone "
              f"{r['seconds']['autoattack_alone']:.1f}s (robust {r['robust_acc']['autoattack_alone']:.4f}); "
              f"cost ratio = {r['cost_ratio_cascade_over_autoattack']:.3f}x")
        for name, row in r["rows"].items():
            print(f"  {name:<11} {row['scope']:<20} robust {row['robust_acc']:.4f}  attacked {row['attacked']:.0f}  {row['seconds']:.1f}s")
    if "per-attack" not in skip:
        r = report["per_attack"] = per_attack(model, test, eps, PER_ATTACK, args.n_pgd, args.n_aa, device)
        print("images/second per attack (clean-correct examples attacked / seconds):")
        for name, row in r.items():
            print(f"  {name:<11} {row['images_per_s']:9.1f} img/s  ({row['attacked']} examples, {row['seconds']:.1f}s, "
                  f"robust {row['robust_acc_of_correct']:.4f} of correct)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "attacks.json").write_text(json.dumps(report, indent=1))
    print(f"-> {out / 'attacks.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
