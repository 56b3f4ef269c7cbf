"""Cost of recomputing RST's masks: ``bench.nn.masking.topk_mask`` vs one full ``torch.kthvalue`` per layer.

The reference is the selection the harness used before the bracketed
threshold (``masking.kth_smallest``): one ``kthvalue`` over the whole layer,
then the same tie rule. Both run on |N(0,1)| scores of every prunable layer
of the conv net (width 1, the shapes of ``benchmarks/rst_step.py``), at the
given sparsity, interleaved, best of ``--reps``; the masks are checked equal.

    python benchmarks/mask_threshold.py [--sparsity 0.9] [--reps 7]
"""
from __future__ import annotations

import argparse
import time
from typing import Callable, Dict

import torch

from bench.nn.masking import n_zeros_for, prunable_layers, topk_mask
from bench.nn.models import ModelConfig, build_model


def full_selection_mask(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """The reference: threshold from one kthvalue over every score, ties zeroed in index order."""
    flat = scores.detach().flatten()
    n_zero = n_zeros_for(flat.numel(), sparsity)
    if n_zero == 0:
        return torch.ones_like(scores)
    threshold = torch.kthvalue(flat, n_zero).values
    mask = (flat > threshold).to(flat.dtype)
    tied = (flat == threshold).nonzero().flatten()
    mask[tied[n_zero - int((flat < threshold).sum()):]] = 1.0
    return mask.view_as(scores)


def main() -> None:
    """Print per-layer best times of both and the ratio over all layers."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sparsity", type=float, default=0.9)
    parser.add_argument("--reps", type=int, default=7)
    args = parser.parse_args()
    model = build_model("convnet", ModelConfig(1, 10, 28, (0.286,), (0.353,), 1.0, bn_affine=False))
    gen = torch.Generator().manual_seed(0)
    fns: Dict[str, Callable[[torch.Tensor, float], torch.Tensor]] = {"full kthvalue": full_selection_mask,
                                                                     "topk_mask": topk_mask}
    total = {name: 0.0 for name in fns}
    print(f"threads={torch.get_num_threads()} sparsity={args.sparsity} reps={args.reps}")
    for name, layer in prunable_layers(model):
        scores = torch.randn(layer.weight.shape, generator=gen).abs()
        if not torch.equal(full_selection_mask(scores, args.sparsity), topk_mask(scores, args.sparsity)):
            raise RuntimeError(f"{name}: the masks differ")
        # Interleaved repetitions, best of each.
        best = {k: float("inf") for k in fns}
        for _ in range(args.reps):
            for k, fn in fns.items():
                t0 = time.perf_counter()
                fn(scores, args.sparsity)
                best[k] = min(best[k], time.perf_counter() - t0)
        for k in fns:
            total[k] += best[k]
        print(f"  {name:<8} {scores.numel():>9} weights  " + "  ".join(f"{k} {v * 1e3:6.2f} ms" for k, v in best.items()))
    print("  all layers  " + "  ".join(f"{k} {v * 1e3:6.2f} ms" for k, v in total.items())
          + f"  full / topk_mask = {total['full kthvalue'] / total['topk_mask']:.2f}x")


if __name__ == "__main__":
    main()
