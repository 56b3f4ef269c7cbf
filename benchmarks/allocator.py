"""glibc's allocator as configured by ``bench.core.allocator.keep_freed_memory`` vs its defaults, same work.

Each repetition runs one child process per setting, alternating (default,
tuned, default, tuned, ...), so drifts in machine speed hit both alike. A child
builds the RST and the dense step of ``benchmarks/rst_step.py`` (convnet,
batch 128, PGD-7 training attack) and a PGD-20 evaluation on a batch of 500
(early stopping, a seeded untrained conv net in eval mode), warms up once, then times
``--steps`` train steps of each kind and ``--evals`` PGD-20 runs, counting its
minor page faults (``getrusage``) over the timed part. It also prints a digest
of the PGD output: the two settings must agree bit for bit (the allocator
moves memory, never arithmetic; the default run's numbers are compared in
docs/performance.md).

    python benchmarks/allocator.py [--reps 3] [--steps 8] [--evals 3]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

# The parent chooses each child's setting through bench.core.allocator's switch variable (it imports no torch).
from bench.core.allocator import SWITCH_VAR, keep_freed_memory


def child(steps: int, evals: int) -> None:
    """Time the work in this process under the allocator setting of the environment; print one JSON line."""
    applied = keep_freed_memory()
    import torch

    sys.path.insert(0, str(Path(__file__).parent))
    from rst_step import make_step

    from bench.attacks import PGD
    from bench.data import batches, load_data
    from bench.nn.models import ModelConfig, build_model
    from bench.train import TrainConfig

    data = load_data("fashion-mnist")
    batch = next(batches(data.train, 128, torch.device("cpu")))
    big = next(batches(data.test, 500, torch.device("cpu")))
    cfg = TrainConfig(epochs=1, lr=0.1, eps=0.1, train_steps=7, train_step_size=0.025)
    fns = {kind: make_step(kind, "convnet", batch, cfg) for kind in ("rst", "dense")}
    attack = PGD(0.1, steps=20)
    torch.manual_seed(0)
    net = build_model("convnet", ModelConfig(1, 10, 28, (0.286,), (0.353,), 1.0)).eval()
    for fn in fns.values():
        fn()
    # Warm-up, then the timed part with its page faults.
    faults0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t0 = time.perf_counter()
    times: Dict[str, float] = {}
    for kind, fn in fns.items():
        t = time.perf_counter()
        for _ in range(steps):
            fn()
        times[kind] = time.perf_counter() - t
    t = time.perf_counter()
    x_adv = big[0]
    for _ in range(evals):
        x_adv = attack(net, *big)
    times["pgd20"] = time.perf_counter() - t
    total = time.perf_counter() - t0
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults0
    digest = hashlib.sha256(x_adv.numpy().tobytes()).hexdigest()[:16]
    print(json.dumps({"applied": applied, "seconds": total, "parts": times, "faults": faults, "digest": digest,
                      "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def main() -> None:
    """Alternate child processes of both settings; print each and the ratio of median times."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--evals", type=int, default=3)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.steps, args.evals)
        return
    results: Dict[str, List[dict]] = {"default": [], "tuned": []}
    for rep in range(args.reps):
        for name, switch in (("default", "0"), ("tuned", "1")):
            env = {**os.environ, SWITCH_VAR: switch}
            out = subprocess.run([sys.executable, __file__, "--child", "--steps", str(args.steps), "--evals", str(args.evals)],
                                 env=env, check=True, capture_output=True, text=True).stdout
            row = json.loads(out.strip().splitlines()[-1])
            if row["applied"] != (switch == "1"):
                raise RuntimeError(f"{name}: keep_freed_memory applied={row['applied']}")
            results[name].append(row)
            parts = "  ".join(f"{k} {v:6.2f} s" for k, v in row["parts"].items())
            print(f"rep {rep} {name:<8} {row['seconds']:6.2f} s  ({parts})  faults {row['faults']:>9}  "
                  f"peak RSS {row['maxrss_mb']:.0f} MB  digest {row['digest']}", flush=True)
    digests = {row["digest"] for rows in results.values() for row in rows}
    print(f"outputs identical across settings and repetitions: {len(digests) == 1}")
    med = {name: statistics.median(r["seconds"] for r in rows) for name, rows in results.items()}
    print(f"median seconds: default {med['default']:.2f}, tuned {med['tuned']:.2f}; "
          f"default / tuned = {med['default'] / med['tuned']:.2f}x")


if __name__ == "__main__":
    main()
