"""Evaluation-time model preparation: the same function, cheaper passes.

Attacks spend nearly all their time in forward and input-gradient passes of a
model whose weights never change. :func:`inference_model` returns a copy made
for that: every masked layer becomes a plain ``nn.Conv2d`` / ``nn.Linear``
holding ``weight * mask`` once (instead of multiplying on every forward), every
BatchNorm in eval mode that directly follows a convolution or linear layer is
folded into it (torch.fx's ``fuse``; BatchNorm's backward is a large share of
an input-gradient pass on a CPU), and on request the weights are stored
channels-last. The copy computes the same function up to float rounding (the
folded weights are ``w * gamma / sqrt(var + eps)``); ``benchmarks/eval_prepare.py``
compares per-example robust flags of every attack with and without it.

The original model is never modified: evaluation keeps it for the checks that
read its masks, weights and modes.
"""
from __future__ import annotations

import contextlib
import copy
from typing import Any, Iterator, Tuple, Union, cast

import torch
import torch.nn as nn
from torch.fx.experimental.optimization import fuse

from bench.nn.masking import MaskedConv2d, MaskedLinear

# Bumped whenever what the preparation does changes (it names the evaluation cache of prepared models).
PREPARATION = "plain-fused-1"


@contextlib.contextmanager
def ieee_float32() -> Iterator[None]:
    """Float32 convolutions and matrix products in full IEEE precision while the block runs (no TF32 on GPUs that
    have it: cuDNN convolutions default to TF32), the previous settings restored after. Evaluation runs under it."""
    cudnn_conv: Any = getattr(torch.backends.cudnn, "conv")  # noqa: B009 - not in torch's type stubs
    conv, matmul = cudnn_conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision
    cudnn_conv.fp32_precision = "ieee"
    torch.backends.cuda.matmul.fp32_precision = "ieee"
    try:
        yield
    finally:
        cudnn_conv.fp32_precision = conv
        torch.backends.cuda.matmul.fp32_precision = matmul


def _plain(layer: Union[MaskedConv2d, MaskedLinear]) -> nn.Module:
    """A plain ``nn.Conv2d`` / ``nn.Linear`` computing what a masked layer computes, with ``weight * mask`` stored."""
    with torch.no_grad():
        weight = nn.Parameter((layer.weight * layer.mask).detach().clone(), requires_grad=False)
        bias = nn.Parameter(layer.bias.detach().clone(), requires_grad=False) if layer.bias is not None else None
    plain: Union[nn.Conv2d, nn.Linear]
    if isinstance(layer, MaskedConv2d):
        pair = Tuple[int, int]
        plain = nn.Conv2d(layer.in_channels, layer.out_channels, cast(pair, layer.kernel_size), cast(pair, layer.stride),
                          cast(pair, layer.padding), cast(pair, layer.dilation), layer.groups, bias is not None,
                          layer.padding_mode, device="meta")
    else:
        plain = nn.Linear(layer.in_features, layer.out_features, bias is not None, device="meta")
    plain.weight = weight
    if bias is not None:
        plain.bias = bias
    return plain


def _explicit_affine(module: nn.Module) -> None:
    """Give every affine-free BatchNorm under ``module`` a weight of ones and a bias of zeros (exactly the same
    function: torch's linear/BatchNorm fusion needs both tensors)."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.weight is None:
            m.weight = nn.Parameter(torch.ones_like(m.running_mean), requires_grad=False)
            m.bias = nn.Parameter(torch.zeros_like(m.running_mean), requires_grad=False)


def _replace_masked(module: nn.Module) -> None:
    """Swap every masked layer under ``module`` for its plain equivalent, in place."""
    for name, child in module.named_children():
        if isinstance(child, (MaskedConv2d, MaskedLinear)):
            setattr(module, name, _plain(child))
        else:
            _replace_masked(child)


class ChannelsLast(nn.Module):
    """Runs ``inner`` on a channels-last copy of a 4-d input (the weights are stored channels-last too)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x)


def inference_model(model: nn.Module, channels_last: bool = False) -> nn.Module:
    """An eval-mode copy of ``model`` with masks materialised and BatchNorm folded (see the module docstring).

    ``model`` must be in eval mode (a model in training mode normalises with batch statistics, which cannot be
    folded): a ValueError otherwise. Parameters of the copy do not require gradients.
    """
    if any(m.training for m in model.modules()):
        raise ValueError("inference_model needs a model in eval mode (BatchNorm in training mode cannot be folded)")
    prepared = copy.deepcopy(model)
    # 1. Masked layers -> plain layers with the effective weight.
    _replace_masked(prepared)
    _explicit_affine(prepared)
    prepared.eval()
    # 2. Conv/Linear followed by BatchNorm -> one layer (torch.fx traces the forward to find the pairs).
    fused: nn.Module = fuse(prepared, inplace=True)
    # 3. Channels-last weights and inputs, where that is faster.
    if channels_last:
        fused = ChannelsLast(fused.to(memory_format=torch.channels_last))
    fused.eval()
    for p in fused.parameters():
        p.requires_grad_(False)
    return fused
