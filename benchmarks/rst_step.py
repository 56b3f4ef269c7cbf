"""Cost of one RST search step relative to one dense PGD-AT step (same architecture).

Both steps go through the harness's own ``bench.train.train_step`` with the
same PGD-7 training attack, batch and data; the RST step additionally
recomputes the masks from |scores| (once per step) and back-propagates to the
scores through the straight-through estimator. Steps are interleaved (A B A B
...) so drifts in machine speed hit both alike; the median ratio is printed.

    python benchmarks/rst_step.py [--arch convnet] [--batch-size 128] [--reps 15]
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable, Dict

import torch

from bench.attacks import PGD
from bench.core.allocator import keep_freed_memory
from bench.data import batches, load_data
from bench.nn.masking import prunable_layers, score_mask_refresher, set_trainable
from bench.nn.models import ModelConfig, build_model, init_signed_kaiming_constant
from bench.train import TrainConfig, _optimizer, train_step


def make_step(kind: str, arch: str, batch: tuple, cfg: TrainConfig, device: torch.device = torch.device("cpu")) -> Callable[[], None]:
    """A closure running one optimiser step of ``kind`` ('rst' or 'dense')."""
    torch.manual_seed(0)
    rst = kind == "rst"
    model = build_model(arch, ModelConfig(1, 10, 28, (0.286,), (0.353,), 1.0, bn_affine=not rst)).to(device)
    if rst:
        init_signed_kaiming_constant(model, torch.Generator().manual_seed(0))
        for _n, layer in prunable_layers(model):
            torch.nn.init.normal_(layer.scores)
        set_trainable(model, weights=False, scores=True)
        params = [layer.scores for _n, layer in prunable_layers(model)]
        refresh = score_mask_refresher(model, 0.9)
    else:
        set_trainable(model, weights=True, scores=False)
        params = [p for p in model.parameters() if p.requires_grad]
        refresh = lambda: None  # noqa: E731 - dense masks never change
    opt = _optimizer(params, cfg)
    attack = PGD(cfg.eps, steps=cfg.train_steps, step_size=cfg.train_step_size, early_stop=False)
    gen = torch.Generator().manual_seed(0)
    x, y = batch

    def step() -> None:
        refresh()
        train_step(model, x, y, opt, cfg, attack, gen)

    return step


def main() -> None:
    """Interleave RST and dense steps; print per-step times and the median ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="convnet")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--reps", type=int, default=15)
    args = parser.parse_args()
    # As in every bench process: freed tensors stay in the process (bench/core/allocator.py).
    keep_freed_memory()
    data = load_data("fashion-mnist")
    batch = next(batches(data.train, args.batch_size, torch.device("cpu")))
    cfg = TrainConfig(epochs=1, lr=0.1, eps=0.1, train_steps=7, train_step_size=0.025)
    steps: Dict[str, Callable[[], None]] = {k: make_step(k, args.arch, batch, cfg) for k in ("rst", "dense")}
    # Warm-up, then interleaved timing.
    for fn in steps.values():
        fn()
    times: Dict[str, list] = {k: [] for k in steps}
    for _ in range(args.reps):
        for kind, fn in steps.items():
            t0 = time.perf_counter()
            fn()
            times[kind].append(time.perf_counter() - t0)
    ratios = [r / d for r, d in zip(times["rst"], times["dense"])]
    print(f"arch={args.arch} batch={args.batch_size} threads={torch.get_num_threads()} reps={args.reps}")
    for kind, ts in times.items():
        print(f"  {kind:<6} step median {statistics.median(ts) * 1e3:8.1f} ms  (min {min(ts) * 1e3:.1f}, max {max(ts) * 1e3:.1f})")
    print(f"  RST step / dense PGD-AT step: median {statistics.median(ratios):.3f}  (min {min(ratios):.3f}, max {max(ratios):.3f})")


if __name__ == "__main__":
    main()
