"""What a ticket costs to run: parameters (all and non-zero) and multiply-accumulates (MACs) of the dense network
and of the ticket.

MACs are those of the convolution and linear layers (the convention of FLOP counts in the pruning literature;
BatchNorm, activations and pooling are left out), counted on one input of the dataset's shape by forward hooks:
a layer's dense MACs are its output positions times its weight count, its ticket MACs the output positions times
its non-zero effective weights (``weight * mask`` for a masked layer). A MAC is one multiply and one add (2 FLOPs).
"""
from __future__ import annotations

from typing import Any, Dict, List, Sequence, Tuple

import torch
import torch.nn as nn

from bench.nn.compaction import SparseLinear
from bench.nn.masking import MaskedMixin

# The figures of model_cost a result row carries.
ROW_COST_COLUMNS = ("params_nonzero", "macs_dense", "macs_ticket")
# Layers whose multiply-accumulates are counted (a compacted copy's CSR layers too).
COUNTED = (nn.modules.conv._ConvNd, nn.Linear, SparseLinear)


def effective_weight(layer: nn.Module) -> torch.Tensor:
    """The weight a layer computes with (a masked layer's ``weight * mask``)."""
    if isinstance(layer, MaskedMixin):
        return layer.masked_weight().detach()
    if isinstance(layer, SparseLinear):
        return layer.weight.to_dense()
    weight = layer.weight
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"{type(layer).__name__} has no weight tensor")
    return weight.detach()


@torch.no_grad()
def layer_positions(model: nn.Module, input_shape: Sequence[int]) -> List[Tuple[nn.Module, int]]:
    """Each counted layer's calls on one input of ``input_shape`` with its output positions per example."""
    calls: List[Tuple[nn.Module, int]] = []

    # Each counted layer records its output positions per example (output elements / output channels).
    def record(layer: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
        out_channels = int(layer.out_channels if isinstance(layer, nn.modules.conv._ConvNd) else effective_weight(layer).shape[0])
        calls.append((layer, output[0].numel() // out_channels))

    handles = [m.register_forward_hook(record) for m in model.modules() if isinstance(m, COUNTED)]
    was_training = model.training
    model.eval()
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    try:
        # The random number generators are left as they were (a random switch draws a candidate per forward call).
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            model(torch.zeros(1, *input_shape, device=device))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return calls


def performed_macs(model: nn.Module, input_shape: Sequence[int]) -> int:
    """The MACs ``model`` actually performs on one input: every weight of a dense layer (zeros included), the stored
    values of a CSR layer."""
    return sum(positions * (int(layer.weight.values().numel()) if isinstance(layer, SparseLinear)
                            else effective_weight(layer).numel()) for layer, positions in layer_positions(model, input_shape))


@torch.no_grad()
def model_cost(model: nn.Module, input_shape: Sequence[int]) -> Dict[str, int]:
    """Parameters and MACs of ``model`` for one input of ``input_shape`` (C, H, W): ``params``, ``params_nonzero``
    (every parameter tensor, with masked weights counted as computed), ``macs_dense`` and ``macs_ticket``."""
    calls = layer_positions(model, input_shape)
    macs_dense = sum(positions * effective_weight(layer).numel() for layer, positions in calls)
    macs_ticket = sum(positions * int((effective_weight(layer) != 0).sum()) for layer, positions in calls)
    # Parameters: masked weights as computed; scores (a search's importance values) are not parameters of the ticket;
    # a CSR layer's stored values (and bias) are its parameters.
    params = nonzero = 0
    for module in model.modules():
        if isinstance(module, SparseLinear):
            values = [module.weight.values()] + ([] if module.bias is None else [module.bias])
            params += sum(v.numel() for v in values)
            nonzero += sum(int((v != 0).sum()) for v in values)
        for name, p in module.named_parameters(recurse=False):
            if name == "scores":
                continue
            value = effective_weight(module) if name == "weight" and isinstance(module, MaskedMixin) else p.detach()
            params += value.numel()
            nonzero += int((value != 0).sum())
    return {"params": params, "params_nonzero": nonzero, "macs_dense": macs_dense, "macs_ticket": macs_ticket}
