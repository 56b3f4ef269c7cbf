"""Throughput table of one ticket on one device: raw pass rate, PGD-20, AutoAttack, RST vs dense step.

Every figure is measured here, in this run, under the evaluation's float32
settings (``bench.nn.inference.ieee_float32``: no TF32; nothing runs in bf16):

- raw pass rate: 20 forward + input-gradient passes of the CE loss on one
  batch, image-passes/s, of the prepared ticket (``bench.nn.inference.inference_model``);
- PGD-20 without early stopping on the same batch (the same 20 passes plus its
  steps and projections), images/s, and the ratio of the two times (1.00: the
  attack adds nothing to the passes); the two interleaved, best of ``--reps``;
- AutoAttack standard on the first ``--n-aa`` test examples, clean-correct
  images attacked per second;
- one RST search step over one dense PGD-AT step (``benchmarks/rst_step.py``),
  median of interleaved repetitions.

    python benchmarks/throughput.py --run-dir RUN_DIR --device cuda [--out OUT_DIR]
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Callable, Dict, List

import torch
import torch.nn.functional as F
from rst_step import make_step

from bench.attacks import make_attack
from bench.core.allocator import keep_freed_memory
from bench.data import batches, load_data, to_float
from bench.methods.ticket import load_ticket
from bench.nn.inference import ieee_float32, inference_model
from bench.spec import RunSpec
from bench.train import TrainConfig


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (timings on CUDA are otherwise of the launch only)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_seconds(fn: Callable[[], object], device: torch.device, reps: int) -> float:
    """Fastest of ``reps`` timed calls of ``fn`` (after one warm-up call)."""
    fn()
    sync(device)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    """Measure and print the table (also written to ``--out``/throughput.md and .json)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run-dir", required=True, help="a finished run folder (the ticket measured)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--n-aa", type=int, default=100, help="examples for the AutoAttack figure")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--step-reps", type=int, default=9, help="interleaved RST/dense step repetitions")
    p.add_argument("--out", default="", help="folder for throughput.md / throughput.json")
    args = p.parse_args()
    # As in every bench process: freed tensors stay in the process (bench/core/allocator.py).
    keep_freed_memory()
    device = torch.device(args.device)
    run_dir = Path(args.run_dir)
    spec = RunSpec.from_dict(json.loads((run_dir / "spec.json").read_text()))
    data = load_data(spec.dataset, spec.data_source, None, spec.val_fraction, spec.seed, spec.n_train, spec.data_info)
    ticket = load_ticket(run_dir, device).eval()
    rows: List[Dict[str, object]] = []
    with ieee_float32():
        model = inference_model(ticket, channels_last=device.type == "cpu")
        x = to_float(data.test.x[: args.batch_size], device)
        y = data.test.y[: args.batch_size].to(device)
        n = len(x)

        # Raw pass rate (20 forward + input-gradient passes of the CE loss) and PGD-20 doing the same 20 passes with
        # every step taken (no early stop), interleaved: best of each.
        pgd = make_attack("pgd", spec.eps_value, steps=20, early_stop=False, seed=0)

        def raw() -> None:
            for _ in range(20):
                xg = x.clone().requires_grad_(True)
                torch.autograd.grad(F.cross_entropy(model(xg), y, reduction="sum"), xg)

        raw_s, pgd_s = float("inf"), float("inf")
        for _ in range(args.reps):
            raw_s = min(raw_s, best_seconds(raw, device, 1))
            pgd_s = min(pgd_s, best_seconds(lambda: pgd(model, x, y), device, 1))
        rows.append({"what": "raw pass rate (forward + input gradient of the CE loss)", "value": 20 * n / raw_s,
                     "unit": "img-passes/s"})
        rows.append({"what": "PGD-20, no early stop", "value": n / pgd_s, "unit": "img/s"})
        rows.append({"what": "PGD-20 pass rate / raw pass rate", "value": raw_s / pgd_s, "unit": "ratio"})

        # AutoAttack standard on the clean-correct of the first n_aa examples.
        xa, ya = x[: args.n_aa], y[: args.n_aa]
        with torch.no_grad():
            keep = model(xa).argmax(1) == ya
        aa = make_attack("autoattack", spec.eps_value, seed=0)
        sync(device)
        t0 = time.perf_counter()
        aa(model, xa[keep], ya[keep])
        sync(device)
        aa_seconds = time.perf_counter() - t0
        rows.append({"what": f"AutoAttack standard on {int(keep.sum())} clean-correct examples", "value": int(keep.sum()) / aa_seconds,
                     "unit": "img/s"})

        # One RST search step over one dense PGD-AT step, interleaved.
        batch = next(batches(data.train, 128, device))
        cfg = TrainConfig(epochs=1, lr=0.1, eps=0.1, train_steps=7, train_step_size=0.025)
        steps = {k: make_step(k, "convnet", batch, cfg, device) for k in ("rst", "dense")}
        times: Dict[str, List[float]] = {k: [] for k in steps}
        for fn in steps.values():
            fn()
        for _ in range(args.step_reps):
            for kind, fn in steps.items():
                sync(device)
                t0 = time.perf_counter()
                fn()
                sync(device)
                times[kind].append(time.perf_counter() - t0)
        ratio = statistics.median(r / d for r, d in zip(times["rst"], times["dense"]))
        rows.append({"what": "RST search step / dense PGD-AT step (median)", "value": ratio, "unit": "ratio"})

    # The table.
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    lines = [f"Ticket {run_dir.name} ({spec.method} {spec.arch} width {spec.width}, {spec.dataset}); device {name}; "
             f"torch {torch.__version__}; batch {n}; float32 without TF32", "", "| what | value | unit |", "|---|---|---|"]
    lines += [f"| {r['what']} | {float(r['value']):.3g} | {r['unit']} |" for r in rows]
    text = "\n".join(lines)
    print(text)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "throughput.md").write_text(text + "\n")
        (out / "throughput.json").write_text(json.dumps({"device": name, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
