"""FMN against the fixed-eps worst case on one finished run, for a few step counts and initial step sizes.

Produced the figure behind ``bench.evaluation.security.WEAKER_SHARE`` (docs/flags.md, ``fmn_weaker``): on RST-0.9
(Fashion-MNIST, first 500 test images) FMN left 6 examples robust that the worst case broke, for every setting.

    OMP_NUM_THREADS=1 python benchmarks/fmn_settings.py results/published/runs/535e0683d6da
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from bench.data import to_float
from bench.evaluation.evaluate import CHANNELS_LAST
from bench.evaluation.security import min_norm_distances, robust_at
from bench.harness import evaluate_run, load_finished_ticket
from bench.methods.ticket import read_spec
from bench.nn.inference import inference_model

# (steps, initial step size alpha) tried.
SETTINGS = ((200, 1.0), (200, 0.3), (200, 3.0), (1000, 1.0))


def main() -> None:
    """Print, per setting, FMN's robust accuracy at eps and its per-example disagreement with the worst case."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    run = parser.parse_args().run_dir
    torch.set_num_threads(1)
    ticket = load_finished_ticket(read_spec(run), run)
    # The run's own (cached) evaluation: its worst case over the spec's attacks.
    worst = next(r for r in evaluate_run(ticket) if r.attack == "worst_case").robust
    n, eps = len(worst), ticket.spec.eps_value
    model = inference_model(ticket.model, channels_last=CHANNELS_LAST)
    x = to_float(ticket.data.test.x[:n], ticket.device)
    y = ticket.data.test.y[:n].to(ticket.device)
    for steps, alpha in SETTINGS:
        t0 = time.perf_counter()
        distance = min_norm_distances(model, x, y, steps, alpha=alpha).cpu()
        robust = robust_at(distance, eps)
        print(f"steps {steps} alpha {alpha:g}: {time.perf_counter() - t0:.0f} s, FMN robust {robust.float().mean():.3f}, "
              f"worst case {worst.float().mean():.3f}, FMN-only robust {int((robust & ~worst).sum())}, "
              f"FMN-only broken {int((~robust & worst).sum())}", flush=True)


if __name__ == "__main__":
    main()
