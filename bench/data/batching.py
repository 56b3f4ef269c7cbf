"""Batches of a split: uint8 images to float tensors in [0,1] on the device (normalisation lives in the model),
shuffled by a seeded generator, CIFAR-style augmentation."""
from __future__ import annotations

from typing import Iterator, List, Optional, Tuple

import torch

from bench.data.base import Split


def to_float(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 images to float in [0,1] on ``device``."""
    return x.to(device, non_blocking=True).float().div_(255.0)


def augment_batch(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random crop (pad 4) and horizontal flip, CIFAR style, on a float batch."""
    n, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4), mode="reflect")
    dx = torch.randint(0, 9, (n,), generator=generator)
    dy = torch.randint(0, 9, (n,), generator=generator)
    flip = torch.rand(n, generator=generator) < 0.5
    out = torch.empty_like(x)
    for i in range(n):
        crop = padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w]
        out[i] = crop.flip(-1) if flip[i] else crop
    return out


def batch_starts(n: int, batch_size: int, min_last: int = 1) -> List[int]:
    """First index of each batch of ``n`` examples; a last batch smaller than ``min_last`` joins the one before."""
    starts = list(range(0, n, batch_size))
    if len(starts) > 1 and n - starts[-1] < min_last:
        starts.pop()
    return starts


def batches(split: Split, batch_size: int, device: torch.device, generator: Optional[torch.Generator] = None,
            augment: bool = False, min_last: int = 1) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
    """Float batches in [0,1]; shuffled when a generator is given. A last batch smaller than ``min_last`` joins
    the one before it (BatchNorm over features cannot train on a batch of one example)."""
    n = len(split)
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    starts = batch_starts(n, batch_size, min_last)
    for i, start in enumerate(starts):
        stop = n if i == len(starts) - 1 else start + batch_size
        idx = order[start:stop]
        x = to_float(split.x[idx], device)
        if augment and generator is not None:
            x = augment_batch(x, generator)
        yield x, split.y[idx].to(device)
