"""The one masked-layer mechanism every method uses.

Each prunable layer (conv or linear) carries its ``weight``, a 0/1 ``mask``
buffer and a ``scores`` tensor of the same shape. The forward pass uses
``weight * mask``. Methods differ only in how they *score* weights: a score
function maps layers to score tensors, and :func:`apply_masks` keeps the
highest-scoring weights (layer-wise or globally), in the spirit of
``torch.nn.utils.prune``'s ``compute_mask``. Score-learning methods (RST,
HYDRA) refresh the mask from ``|scores|`` once per optimiser step and get a
straight-through gradient on the scores.

At ``granularity='channel'`` a mask keeps or removes whole output channels
(a conv filter, a row of a linear layer): a channel's score is the mean of
its weights' scores (the L1 norm of the filter for magnitude scores, Li et
al. 2017). The output layer, whose channels are the classes, is pruned
weight by weight. Every layer prunes ``sparsity`` of its weights, so
``sparsity`` keeps its meaning, the fraction of zero prunable weights (up to
one channel per layer).
"""
from __future__ import annotations

import math
from typing import Callable, Dict, Iterator, List, Mapping, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from bench.core.io import tensor_digest


class MaskedMixin:
    """Adds ``mask`` and ``scores`` to a layer that has a ``weight``."""

    weight: torch.Tensor
    mask: torch.Tensor
    scores: nn.Parameter

    def _init_masking(self) -> None:
        self.register_buffer("mask", torch.ones_like(self.weight))  # type: ignore[attr-defined]
        self.scores = nn.Parameter(torch.zeros_like(self.weight), requires_grad=False)

    def masked_weight(self) -> torch.Tensor:
        """Effective weight; straight-through to ``scores`` while they are trained."""
        if self.scores.requires_grad and torch.is_grad_enabled():
            # Forward value is exactly weight * mask; the gradient w.r.t. the
            # mask is passed straight through to |scores|.
            a = self.scores.abs()
            return self.weight * (self.mask + (a - a.detach()))
        return self.weight * self.mask


class MaskedConv2d(MaskedMixin, nn.Conv2d):
    """``nn.Conv2d`` whose weight is multiplied by a 0/1 mask."""

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self._init_masking()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.masked_weight(), self.bias)


class MaskedLinear(MaskedMixin, nn.Linear):
    """``nn.Linear`` whose weight is multiplied by a 0/1 mask."""

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self._init_masking()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.masked_weight(), self.bias)


MASKED_TYPES = (MaskedConv2d, MaskedLinear)
# What a ticket prunes: any weight (unstructured), or whole output channels of conv and linear layers (structured,
# Li et al. 2017's filters; the output layer, whose channels are the classes, by weight; see the module docstring).
# ``sparsity`` is the fraction of zero weights either way.
GRANULARITIES = ("weight", "channel")
ScoreFn = Callable[[str, MaskedMixin], torch.Tensor]


def prunable_layers(model: nn.Module) -> List[Tuple[str, MaskedMixin]]:
    """All masked (prunable) layers of ``model`` as (name, layer) pairs."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, MASKED_TYPES)]


def n_zeros_for(numel: int, sparsity: float) -> int:
    """Number of weights to zero in a tensor of ``numel`` entries."""
    return min(numel - 1, int(round(sparsity * numel))) if numel > 1 else 0


# Tensors at least this large find their threshold by bracketing it with a strided sample (below: one kthvalue).
BRACKET_MIN_NUMEL = 1 << 16
# Size of that sample, and how many standard deviations of a sample quantile's rank the bracket spans.
BRACKET_SAMPLE = 4096
BRACKET_SIGMAS = 6.0


def kth_smallest(flat: torch.Tensor, k: int) -> Tuple[torch.Tensor, int, int]:
    """The ``k``-th smallest value of 1-D ``flat`` (1-based, ``torch.kthvalue``'s value) and how many entries are
    below it and equal to it.

    A full ``kthvalue`` copies the tensor and selects in one thread (13 ms on
    the conv net's 1.6 M-weight linear layer, at every RST optimiser step). On a large
    tensor two values bracketing the answer are read off a strided sample,
    two vectorised counts check the bracket, and only the entries inside it
    are selected from; a bracket that misses (a skewed layout, or a NaN
    answer) falls back to the full selection, so the value is always exact.
    On CUDA the full selection always runs.
    """
    n = flat.numel()
    # On CUDA kthvalue is parallel already, and the bracket's counts would each wait for the device.
    if n >= BRACKET_MIN_NUMEL and flat.device.type == "cpu":
        # Ranks in the sample around the k/n quantile, wide enough that the true value almost always lies inside.
        sample = flat[:: n // BRACKET_SAMPLE]
        m = sample.numel()
        q = k / n
        margin = int(BRACKET_SIGMAS * math.sqrt(m * q * (1 - q))) + 2
        lo = torch.kthvalue(sample, max(1, int(q * m) - margin)).values
        hi = torch.kthvalue(sample, min(m, int(q * m) + margin + 1)).values
        n_below = int((flat < lo).sum())
        band = flat[(flat >= lo) & (flat <= hi)]
        # The answer is inside [lo, hi] exactly when fewer than k entries are below lo and at least k up to hi.
        if n_below < k <= n_below + band.numel():
            value = torch.kthvalue(band, k - n_below).values
            return value, n_below + int((band < value).sum()), int((band == value).sum())
    value = torch.kthvalue(flat, k).values
    return value, int((flat < value).sum()), int((flat == value).sum())


def topk_mask(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """0/1 mask keeping the highest scores, zeroing ``round(sparsity * numel)``.

    Ties at the threshold are zeroed in index order, exactly as a stable
    ascending sort would, but in linear time (:func:`kth_smallest`) instead
    of a full sort: the mask is recomputed at every optimiser step of RST and
    HYDRA.
    """
    flat = scores.detach().flatten()
    n_zero = n_zeros_for(flat.numel(), sparsity)
    if n_zero == 0:
        return torch.ones_like(scores)
    # Everything strictly above the n_zero-th smallest score survives.
    threshold, n_less, n_equal = kth_smallest(flat, n_zero)
    mask = (flat > threshold).to(flat.dtype)
    # Of the scores equal to the threshold, the first ones (by index) fill the remaining zeros; the later ones
    # survive (none when the threshold value is unique, the usual case).
    n_tied_zero = n_zero - n_less
    if n_tied_zero < n_equal:
        tied = (flat == threshold).nonzero().flatten()
        mask[tied[n_tied_zero:]] = 1.0
    return mask.view_as(scores)


def channel_mask(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """0/1 mask of ``scores``' shape removing whole output channels (dim 0): the ``round(sparsity * channels)``
    channels of lowest mean score (ties in index order, as :func:`topk_mask`); at least one channel stays."""
    per_channel = scores.detach().flatten(1).mean(1)
    keep = topk_mask(per_channel, sparsity)
    return keep.view(-1, *([1] * (scores.dim() - 1))).expand_as(scores).contiguous()


def check_granularity(granularity: str, scope: str = "layer") -> None:
    """``granularity`` must be one of :data:`GRANULARITIES`; channels are ranked within each layer only."""
    if granularity not in GRANULARITIES:
        raise ValueError(f"unknown granularity {granularity!r}; choices: {', '.join(GRANULARITIES)}")
    if granularity == "channel" and scope != "layer":
        raise ValueError("granularity 'channel' ranks channels within each layer: it needs scope 'layer', "
                         f"got {scope!r}")


@torch.no_grad()
def apply_masks(model: nn.Module, score_fn: ScoreFn, sparsity: Union[float, Mapping[str, float]],
                scope: str = "layer", granularity: str = "weight") -> None:
    """Set every prunable layer's mask from ``score_fn`` at ``sparsity``.

    ``scope='layer'`` keeps the same fraction in every layer, or with a
    mapping from layer name to sparsity each layer's own; ``'global'`` ranks
    all prunable weights together (one number). Weights whose score is
    ``-inf`` (e.g. already pruned) are always among the zeros. With
    ``granularity='channel'`` whole output channels go (:func:`channel_mask`),
    except in the output layer (the last prunable one), pruned by weight.
    """
    check_granularity(granularity, scope)
    layers = prunable_layers(model)
    if isinstance(sparsity, Mapping):
        if scope != "layer":
            raise ValueError("per-layer sparsities need scope 'layer'")
        unknown = sorted(set(sparsity) - {name for name, _ in layers})
        if unknown or len(sparsity) != len(layers):
            raise ValueError(f"per-layer sparsities must name every prunable layer once; unknown {unknown[:3]}")
    if scope == "layer":
        # Channel tickets drop whole output channels, but in the output layer (its channels are the classes).
        output = layers[-1][0] if layers else None
        for name, layer in layers:
            target = sparsity[name] if isinstance(sparsity, Mapping) else sparsity
            prune = channel_mask if granularity == "channel" and name != output else topk_mask
            layer.mask.copy_(prune(score_fn(name, layer), target))
    elif scope == "global":
        scores = [score_fn(name, layer).flatten() for name, layer in layers]
        flat_mask = topk_mask(torch.cat(scores), 0.0 if isinstance(sparsity, Mapping) else sparsity)
        start = 0
        for (_, layer), s in zip(layers, scores):
            layer.mask.copy_(flat_mask[start : start + s.numel()].view_as(layer.mask))
            start += s.numel()
    else:
        raise ValueError(f"unknown pruning scope {scope!r}; choices: layer, global")


def score_mask_refresher(model: nn.Module, sparsity: float, granularity: str = "weight") -> Callable[[], None]:
    """A callable that recomputes masks from ``|scores|`` (once per optimiser step)."""
    check_granularity(granularity)

    def refresh() -> None:
        apply_masks(model, lambda _n, layer: layer.scores.abs(), sparsity, scope="layer", granularity=granularity)

    return refresh


def magnitude_scores(_name: str, layer: MaskedMixin) -> torch.Tensor:
    """|w| among surviving weights; pruned weights score -inf (masks only shrink)."""
    s = layer.weight.detach().abs().clone()
    s[layer.mask == 0] = float("-inf")
    return s


def set_trainable(model: nn.Module, *, weights: bool, scores: bool) -> None:
    """Choose which tensors of the masked layers (and the rest) receive gradients."""
    for _name, p in model.named_parameters():
        p.requires_grad_(weights)
    for _name, layer in prunable_layers(model):
        layer.scores.requires_grad_(scores)


@torch.no_grad()
def measured_sparsity(model: nn.Module) -> float:
    """Fraction of zeros among the effective prunable weights (``weight * mask``)."""
    zeros, total = 0, 0
    for _name, layer in prunable_layers(model):
        w = layer.weight * layer.mask
        zeros += int((w == 0).sum())
        total += w.numel()
    return zeros / max(total, 1)


@torch.no_grad()
def removed_channels(model: nn.Module) -> float:
    """Fraction of the prunable layers' output channels whose effective weights are all zero (the output layer's rows
    count like any other: a class whose weights are all zero counts as removed)."""
    removed, total = 0, 0
    for _name, layer in prunable_layers(model):
        w = (layer.weight * layer.mask).flatten(1)
        removed += int((w == 0).all(dim=1).sum())
        total += w.shape[0]
    return removed / max(total, 1)


@torch.no_grad()
def layer_sparsity(model: nn.Module) -> Dict[str, float]:
    """Per-layer fraction of zeros in the effective weights."""
    return {
        name: float(((layer.weight * layer.mask) == 0).float().mean())
        for name, layer in prunable_layers(model)
    }


def iter_masks(model: nn.Module) -> Iterator[Tuple[str, torch.Tensor]]:
    """(layer name, mask) pairs."""
    for name, layer in prunable_layers(model):
        yield name, layer.mask


def frozen_fingerprint(model: nn.Module) -> Dict[str, str]:
    """Digests of the masked layers' weights; a method that freezes weights stores this in
    ``ctx.info["frozen_fingerprint"]`` right after initialising them (see docs/flags.md)."""
    return {f"{name}.weight": tensor_digest(layer.weight) for name, layer in prunable_layers(model)}
