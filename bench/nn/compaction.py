"""Compacted copies of a ticket: the network a deployment would run, with the pruned work gone.

A ticket as stored computes ``weight * mask`` at full size. Its compacted copy
is made of plain layers and computes the same function in eval mode:

* **channels** (a network whose body is a sequence of conv, linear,
  BatchNorm, ReLU, max-pool, adaptive average-pool and Flatten layers, as
  ``convnet``, ``mlp``, ``lenet-300-100`` and ``vgg16``, whose ``as_sequence``
  lists its layers): every output channel whose effective weights are all
  zero is physically removed, with the matching input channels of the next
  layer. A removed channel is not always zero downstream: its BatchNorm
  turns it into a constant, so its contribution to the next layer is
  computed once and added as a fixed map (a conv's, which differs at the
  padded borders) or folded into the bias (a linear layer's). This is what
  buys speed for channel tickets; weight tickets lose only the channels
  that happen to be empty.
* **sparse**: a linear layer whose kept weights are at most
  :data:`CSR_DENSITY` of its matrix multiplies with a CSR matrix. On this
  project's CPU (PyTorch 2.14, one thread) a CSR product beat the dense one
  at density 0.01 for batch 1 and 128 but lost at density 0.1 for batch 1
  (measured on 3136x128 and 6272x256 matrices), hence the threshold.
  Convolutions stay dense (PyTorch has no sparse convolution on CPU).
* **baked** (any other architecture, e.g. the ResNets, whose skip
  connections tie channels together): the masked layers become plain layers
  holding ``weight * mask``, with the same sparse rule for linear layers.

Logits agree with the stored ticket's up to float32 summation order
(tests/test_compaction.py). A randomised ticket (a random switch) has no
compacted copy.
"""
from __future__ import annotations

import copy
import io
import warnings
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from bench.nn.masking import MaskedConv2d, MaskedLinear, MaskedMixin, prunable_layers
from bench.nn.models import Classifier

# A linear layer keeping at most this fraction of its weights runs as a CSR product (see the module docstring).
CSR_DENSITY = 0.05
# Modules a channel compaction passes through unchanged (in eval mode).
PASS_THROUGH = (nn.Identity, nn.Dropout)
# Per-channel pools: a constant channel stays the same constant (a max pool pads with -inf, an adaptive average
# pool does not pad), so they run on the kept channels as they are.
CHANNEL_POOLS = (nn.MaxPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


class AddMap(nn.Module):
    """Adds a fixed tensor (the constant channels' contribution to the preceding layer) to its input."""

    offset: torch.Tensor

    def __init__(self, offset: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("offset", offset)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.offset


class SparseLinear(nn.Module):
    """A linear layer whose weight is a CSR matrix (``weight @ x.T``)."""

    weight: torch.Tensor
    bias: Optional[torch.Tensor]

    def __init__(self, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> None:
        super().__init__()
        # PyTorch marks CSR tensors as beta with a warning on every construction; the product is what we measure.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            self.register_buffer("weight", weight.detach().to_sparse_csr())
        self.register_buffer("bias", None if bias is None else bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = (self.weight @ x.t()).t()
        return out if self.bias is None else out + self.bias


@dataclass
class Compacted:
    """A compacted copy and how it was made (``channels``, ``baked``; ``+sparse`` when a layer is CSR)."""

    model: nn.Module
    kind: str


def plain_linear(weight: torch.Tensor, bias: Optional[torch.Tensor]) -> nn.Module:
    """A linear layer computing ``weight`` (dense, or CSR at low density) and ``bias``."""
    if weight.numel() and float((weight != 0).float().mean()) <= CSR_DENSITY:
        return SparseLinear(weight, bias)
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    layer.weight.data.copy_(weight)
    if bias is not None and layer.bias is not None:
        layer.bias.data.copy_(bias)
    return layer


def plain_conv(like: nn.Conv2d, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> nn.Conv2d:
    """A conv layer with ``like``'s geometry computing ``weight`` and ``bias``."""
    layer = nn.Conv2d(weight.shape[1] * like.groups, weight.shape[0], like.kernel_size, stride=like.stride,  # type: ignore[arg-type]
                      padding=like.padding, dilation=like.dilation, groups=like.groups, bias=bias is not None,  # type: ignore[arg-type]
                      padding_mode=like.padding_mode)
    layer.weight.data.copy_(weight)
    if bias is not None and layer.bias is not None:
        layer.bias.data.copy_(bias)
    return layer


def _bias(layer: nn.Module) -> Optional[torch.Tensor]:
    """A layer's bias, detached (``None`` when it has none)."""
    bias = getattr(layer, "bias", None)
    return bias.detach() if isinstance(bias, torch.Tensor) else None


@torch.no_grad()
def baked(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose masked layers are plain layers holding ``weight * mask`` (on the model's device)."""
    device = next(model.parameters()).device
    out = copy.deepcopy(model)
    for name, layer in prunable_layers(out):
        weight = layer.masked_weight().detach()
        bias = _bias(layer) if isinstance(layer, nn.Module) else None
        plain = plain_conv(layer, weight, bias) if isinstance(layer, MaskedConv2d) else plain_linear(weight, bias)
        parent, _, leaf = name.rpartition(".")
        setattr(out.get_submodule(parent) if parent else out, leaf, plain)
    return out.to(device).eval()


@dataclass
class _Activation:
    """What flows between layers during a channel compaction: which channels are kept, and the constant value
    of each removed one (spatially uniform), per channel of the full network."""

    keep: torch.Tensor
    value: torch.Tensor


def _input_shapes(body: nn.Sequential, example: torch.Tensor) -> List[Tuple[int, ...]]:
    """The per-example input shape of every module of ``body`` on ``example`` (the body's input)."""
    shapes: List[Tuple[int, ...]] = []
    x = example
    for module in body:
        shapes.append(tuple(x.shape[1:]))
        x = module(x)
    return shapes


def _kept_outputs(weight: torch.Tensor, last: bool) -> torch.Tensor:
    """Which output channels stay: those with a non-zero weight (all of the output layer). A layer that lost every
    channel keeps its first: it computes its bias, the constant it would have carried, so nothing changes."""
    keep = torch.ones(weight.shape[0], dtype=torch.bool) if last else weight.flatten(1).ne(0).any(dim=1).cpu()
    if not bool(keep.any()):
        keep[0] = True
    return keep


def _conv(layer: MaskedConv2d, act: _Activation, shape: Sequence[int], last: bool) -> Tuple[List[nn.Module], _Activation]:
    """A masked conv without its removed input and output channels (and the removed inputs' fixed map)."""
    if layer.padding_mode != "zeros":
        # The removed inputs' map is computed with zero padding; other padding modes are baked instead.
        raise _Unsupported(f"padding mode {layer.padding_mode}")
    weight = layer.masked_weight().detach()
    bias = _bias(layer)
    keep_out = _kept_outputs(weight, last)
    gone = ~act.keep
    # The removed inputs' contribution: the conv of their constant planes, computed once.
    offset = None
    if bool((act.value[gone] != 0).any()):
        planes = act.value[gone].view(1, -1, 1, 1).expand(1, int(gone.sum()), *shape[1:]).to(weight)
        offset = F.conv2d(planes, weight[:, gone.to(weight.device)], None, layer.stride, layer.padding, layer.dilation)
    kept_weight = weight[keep_out.to(weight.device)][:, act.keep.to(weight.device)]
    kept_bias = None if bias is None else bias[keep_out.to(bias.device)]
    modules: List[nn.Module] = []
    if offset is None:
        modules.append(plain_conv(layer, kept_weight, kept_bias))
    else:
        offset = offset[0, keep_out.to(offset.device)]
        if kept_bias is not None:
            offset = offset + kept_bias.view(-1, 1, 1)
        modules += [plain_conv(layer, kept_weight, None), AddMap(offset)]
    # A removed output channel computes its bias (zero weights), everywhere the same.
    value = torch.zeros(weight.shape[0]) if bias is None else bias.cpu().clone()
    return modules, _Activation(keep_out, value)


def _linear(layer: MaskedLinear, act: _Activation, last: bool) -> Tuple[List[nn.Module], _Activation]:
    """A masked linear layer without its removed inputs (folded into the bias) and removed outputs."""
    weight = layer.masked_weight().detach()
    bias = _bias(layer)
    keep_out = _kept_outputs(weight, last)
    gone = ~act.keep
    folded = bias
    if bool((act.value[gone] != 0).any()):
        extra = weight[:, gone.to(weight.device)] @ act.value[gone].to(weight)
        folded = extra if bias is None else bias + extra
    kept_bias = None if folded is None else folded[keep_out.to(folded.device)]
    module = plain_linear(weight[keep_out.to(weight.device)][:, act.keep.to(weight.device)], kept_bias)
    value = torch.zeros(weight.shape[0]) if bias is None else bias.cpu().clone()
    return [module], _Activation(keep_out, value)


def _batchnorm(bn: nn.modules.batchnorm._BatchNorm, act: _Activation) -> Tuple[List[nn.Module], _Activation]:
    """BatchNorm (eval) of the kept channels; the removed channels' constants go through its affine map."""
    mean, var = bn.running_mean, bn.running_var
    if mean is None or var is None:
        raise _Unsupported("BatchNorm without running statistics")
    scale = 1.0 / torch.sqrt(var.detach().cpu() + bn.eps)
    gamma = bn.weight.detach().cpu() if bn.weight is not None else torch.ones_like(scale)
    beta = bn.bias.detach().cpu() if bn.bias is not None else torch.zeros_like(scale)
    value = (act.value - mean.detach().cpu()) * scale * gamma + beta
    keep = act.keep.to(mean.device)
    new = type(bn)(int(act.keep.sum()), eps=bn.eps, affine=bn.affine)
    new.running_mean.copy_(mean[keep])  # type: ignore[union-attr]
    new.running_var.copy_(var[keep])  # type: ignore[union-attr]
    if bn.affine:
        new.weight.data.copy_(bn.weight.detach()[keep])
        new.bias.data.copy_(bn.bias.detach()[keep])
    return [new], _Activation(act.keep, value)


class _Unsupported(Exception):
    """A body this compaction cannot walk (the baked copy is made instead)."""


@torch.no_grad()
def _channel_compacted(model: Classifier, input_shape: Sequence[int]) -> nn.Module:
    """The channel compaction of a classifier with a sequential body (``_Unsupported`` otherwise)."""
    body = model.body
    as_sequence = getattr(body, "as_sequence", None)
    if callable(as_sequence):
        body = as_sequence()
    if not isinstance(body, nn.Sequential):
        raise _Unsupported("the body is not a sequence of layers")
    device = next(model.parameters()).device
    shapes = _input_shapes(body, model.normalize(torch.zeros(1, *input_shape, device=device)))
    layers = [i for i, m in enumerate(body) if isinstance(m, MaskedMixin)]
    channels = shapes[0][0]
    act = _Activation(torch.ones(channels, dtype=torch.bool), torch.zeros(channels))
    modules: List[nn.Module] = []
    for i, (module, shape) in enumerate(zip(body, shapes)):
        last = bool(layers) and i == layers[-1]
        if isinstance(module, MaskedConv2d) and module.groups == 1:
            new, act = _conv(module, act, shape, last)
        elif isinstance(module, MaskedLinear):
            new, act = _linear(module, act, last)
        elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            new, act = _batchnorm(module, act)
        elif isinstance(module, nn.ReLU):
            new, act = [nn.ReLU()], _Activation(act.keep, act.value.clamp_min(0))
        elif isinstance(module, nn.Flatten) and module.start_dim == 1 and module.end_dim == -1:
            per_channel = int(torch.tensor(shape[1:]).prod()) if len(shape) > 1 else 1
            new = [nn.Flatten()]
            act = _Activation(act.keep.repeat_interleave(per_channel), act.value.repeat_interleave(per_channel))
        elif isinstance(module, CHANNEL_POOLS):
            new = [copy.deepcopy(module)]
        elif isinstance(module, PASS_THROUGH):
            new = []
        else:
            raise _Unsupported(f"layer {type(module).__name__}")
        modules += new
    if not bool(act.keep.all()):
        raise _Unsupported("the body's output has removed channels")
    return Classifier(copy.deepcopy(model.normalize), nn.Sequential(*modules)).to(device).eval()


def compacted(model: nn.Module, input_shape: Sequence[int]) -> Optional[Compacted]:
    """The compacted copy of a ticket (see the module docstring); ``None`` for a model that is not a classifier
    of masked layers (a random switch)."""
    if not isinstance(model, Classifier) or not prunable_layers(model):
        return None
    was_training = model.training
    model.eval()
    try:
        copy_, kind = _channel_compacted(model, input_shape), "channels"
    except _Unsupported:
        copy_, kind = baked(model), "baked"
    finally:
        model.train(was_training)
    if any(isinstance(m, SparseLinear) for m in copy_.modules()):
        kind += "+sparse"
    return Compacted(copy_, kind)


@torch.no_grad()
def dense_twin(model: nn.Module) -> nn.Module:
    """The dense network of the same architecture as plain layers (every mask set to one): what a ticket's
    speedup is measured against."""
    full = copy.deepcopy(model)
    for _name, layer in prunable_layers(full):
        layer.mask.fill_(1.0)
    return baked(full)


def state_bytes(model: nn.Module) -> int:
    """Bytes of ``model``'s state dict as ``torch.save`` writes it."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes


def describe(model: nn.Module) -> Dict[str, Any]:
    """Layer types of a compacted copy, for meta.json (which layers are CSR, which maps were added)."""
    kinds: Dict[str, int] = {}
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear, SparseLinear, AddMap)):
            kinds[type(module).__name__] = kinds.get(type(module).__name__, 0) + 1
    return kinds
