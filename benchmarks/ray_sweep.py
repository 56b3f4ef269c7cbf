"""Ray executor: scaling from 1 to 2 one-core workers, and overhead against the local executor.

The same sweep of ``--runs`` short RST runs (seeds 0..N-1, each ~10-20 s on one
core) is run from scratch three times, each into a fresh output folder:

- ``ray-1``: Ray with 1 CPU, ``--cpus-per-run 1`` (one run at a time);
- ``ray-2``: Ray with 2 CPUs, ``--cpus-per-run 1`` (two runs at a time);
- ``local-2``: the local executor with ``--jobs 2`` (two worker processes, 1 torch thread each);
- ``local-1``: the local executor with ``--jobs 1`` (one run after another in this process, with every core:
  the sequential baseline a user gets without ``--jobs``).

Wall time is end to end, as a user of ``bench sweep`` sees it: Ray start-up and
shutdown (or the process pool's) included; the time inside ``run_sweep`` alone
is printed too. Reported: ``ray-1 / ray-2`` (scaling), ``local-1 / local-2`` (what
``--jobs 2`` gains over running sequentially) and ``ray-2 / local-2 - 1``
(Ray's overhead at the same total cores). The load average is printed before
and after: the figures mean something only on an otherwise idle machine.

    python benchmarks/ray_sweep.py [--runs 8] [--epochs 6] [--n-train 6000] [--out /tmp/ray-bench]
"""
from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path
from typing import Callable, Dict, Tuple

import ray
import torch

from bench.sweep.executors.local import LocalExecutor
from bench.sweep.executors.ray_executor import RayExecutor
from bench.sweep.grid import Sweep, SweepSummary, expand, run_sweep


def make_sweep(runs: int, epochs: int, n_train: int, n_eval: int) -> Sweep:
    """``runs`` RST runs on a full-width MLP that differ only in their seed."""
    fixed = {"dataset": "fashion-mnist", "data_source": "embedded", "arch": "mlp", "width": 1.0, "epochs": epochs,
             "train_steps": 3, "n_train": n_train, "n_eval": n_eval, "eval_attacks": ["pgd20"], "device": "cpu",
             "method": "rst", "sparsity": 0.9}
    return Sweep("ray-bench", tuple(expand(fixed, {"seed": list(range(runs))})))


def timed(setup: Callable[[], None], teardown: Callable[[], None], sweep: Sweep, out: Path,
          executor_factory: Callable[[], object]) -> Tuple[float, SweepSummary]:
    """End-to-end wall seconds (setup + sweep + teardown) and the sweep's summary, from an empty folder."""
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    setup()
    summary = run_sweep(sweep, out, executor_factory(), progress=False)
    teardown()
    return time.perf_counter() - t0, summary


def main() -> None:
    """Run the three configurations and print times and ratios."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=8)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--n-train", type=int, default=6000)
    p.add_argument("--n-eval", type=int, default=200)
    p.add_argument("--out", default="/tmp/ray-bench")
    args = p.parse_args()
    torch.set_num_threads(1)
    sweep = make_sweep(args.runs, args.epochs, args.n_train, args.n_eval)
    out = Path(args.out)
    print(f"{len(sweep.specs)} runs; cpu_count={os.cpu_count()}; load average before: {os.getloadavg()}")

    # Each configuration: how its executor starts and stops, and the executor itself.
    def ray_with(cpus: int) -> Callable[[], None]:
        return lambda: ray.init(num_cpus=cpus, include_dashboard=False)

    configs: Dict[str, Tuple[Callable[[], None], Callable[[], None], Callable[[], object]]] = {
        "ray-1": (ray_with(1), ray.shutdown, lambda: RayExecutor(cpus_per_run=1)),
        "ray-2": (ray_with(2), ray.shutdown, lambda: RayExecutor(cpus_per_run=1)),
        "local-2": (lambda: None, lambda: None, lambda: LocalExecutor(jobs=2)),
        "local-1": (lambda: torch.set_num_threads(os.cpu_count() or 1), lambda: torch.set_num_threads(1),
                    lambda: LocalExecutor(jobs=1)),
    }
    walls: Dict[str, float] = {}
    for name, (setup, teardown, factory) in configs.items():
        wall, summary = timed(setup, teardown, sweep, out / name, factory)
        if summary.done != len(sweep.specs):
            raise RuntimeError(f"{name}: {summary.text()}")
        walls[name] = wall
        print(f"{name:8s} end-to-end {wall:7.1f} s   inside run_sweep {summary.wall_seconds:7.1f} s   "
              f"load {os.getloadavg()[0]:.2f}", flush=True)

    print(f"scaling  ray-1 / ray-2       = {walls['ray-1'] / walls['ray-2']:.2f}x  (goal >= 1.7x)")
    print(f"jobs     local-1 / local-2   = {walls['local-1'] / walls['local-2']:.2f}x  (goal >= 1.7x)")
    print(f"overhead ray-2 / local-2 - 1 = {100 * (walls['ray-2'] / walls['local-2'] - 1):+.1f} %  (goal <= 10 %)")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
