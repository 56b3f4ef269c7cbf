"""Compact tickets: a ticket stored as what determines it, not as every float.

A frozen-weight ticket (RST over signed Kaiming-constant weights, the frozen
random control) is fully determined by its seed and its mask: the weights
are regenerated bit-exactly from the seed, the mask is stored as packed bits
(one bit per prunable weight), and only the small rest (BatchNorm running
statistics, any tensor that is not a prunable weight, mask or score) is kept
as float32. A ticket with trained weights stores its *surviving* weights only
(float32 values in mask order) plus the packed mask. Scores are not stored
(inference never reads them).

The file is a plain ``torch.save`` dict of tensors and strings, loadable with
``weights_only=True``; it carries the run spec as JSON, so
``load_compact(path)`` needs nothing else. Writing verifies the round trip:
the expanded state must equal the model's effective weights, masks and
buffers bit-exactly, else the write fails.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Union

import numpy as np
import torch
import torch.nn as nn

from bench.core.io import atomic_save
from bench.methods import get_method
from bench.nn.masking import prunable_layers, set_trainable
from bench.spec import RunSpec

FORMAT = "robust-tickets-compact-1"
# Re-initialises the frozen prunable weights of an empty model in place (the method's own init).
Regenerate = Callable[[nn.Module], None]


def pack_mask(mask: torch.Tensor) -> torch.Tensor:
    """A 0/1 mask as packed bits (uint8, 8 weights per byte, row-major)."""
    bits = np.packbits(mask.detach().cpu().flatten().numpy().astype(bool))
    return torch.from_numpy(bits)


def unpack_mask(bits: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """The float 0/1 mask of ``shape`` packed by :func:`pack_mask`."""
    n = int(np.prod(shape))
    flat = np.unpackbits(bits.cpu().numpy())[:n]
    return torch.from_numpy(flat.astype(np.float32)).view(shape)


def _skip(key: str, prunable: Dict[str, Any]) -> bool:
    """State entries stored another way (prunable weights and masks) or not at all (scores)."""
    owner, _, leaf = key.rpartition(".")
    return owner in prunable and leaf in ("weight", "mask", "scores")


def compact_state(model: nn.Module, spec: RunSpec, regenerate: Optional[Regenerate]) -> Dict[str, Any]:
    """The compact form of ``model``'s state (see the module docstring)."""
    prunable = dict(prunable_layers(model))
    out: Dict[str, Any] = {"format": FORMAT, "spec": json.dumps(spec.to_dict(), sort_keys=True),
                           "weights": "seed" if regenerate is not None else "values"}
    # Packed masks; the surviving weights unless the seed regenerates them.
    for name, layer in prunable.items():
        out[f"{name}.mask_bits"] = pack_mask(layer.mask)
        if regenerate is None:
            out[f"{name}.values"] = layer.weight.detach()[layer.mask.bool()].float().cpu().clone()
    # Everything else, as float32 (integer buffers as they are).
    for key, value in model.state_dict().items():
        if not _skip(key, prunable):
            out[f"rest.{key}"] = value.detach().cpu().clone() if not value.is_floating_point() else value.detach().float().cpu()
    return out


def expand_state(compact: Dict[str, Any], empty: nn.Module, regenerate: Optional[Regenerate]) -> Dict[str, torch.Tensor]:
    """The full state dict ``empty`` loads: regenerated or scattered weights, unpacked masks, zero scores."""
    if regenerate is not None:
        regenerate(empty)
    state = {k: v.clone() for k, v in empty.state_dict().items()}
    prunable = dict(prunable_layers(empty))
    for name, layer in prunable.items():
        mask = unpack_mask(compact[f"{name}.mask_bits"], layer.mask.shape).to(layer.mask.device)
        state[f"{name}.mask"] = mask
        state[f"{name}.scores"] = torch.zeros_like(layer.weight)
        if regenerate is None:
            weight = torch.zeros_like(layer.weight)
            weight[mask.bool()] = compact[f"{name}.values"].to(weight.device, weight.dtype)
            state[f"{name}.weight"] = weight
    for key in list(state):
        if not _skip(key, prunable):
            state[key] = compact[f"rest.{key}"].to(state[key].device, state[key].dtype)
    return state


def _effective(state: Dict[str, torch.Tensor], model: nn.Module) -> Dict[str, torch.Tensor]:
    """State with prunable weights replaced by ``weight * mask`` and scores dropped (what inference reads)."""
    prunable = dict(prunable_layers(model))
    out = {}
    for key, value in state.items():
        owner, _, leaf = key.rpartition(".")
        if owner in prunable and leaf == "scores":
            continue
        out[key] = value * state[f"{owner}.mask"] if owner in prunable and leaf == "weight" else value
    return out


def save_compact(path: Path, model: nn.Module, spec: RunSpec) -> Dict[str, Any]:
    """Write the compact ticket after checking it expands to ``model`` bit-exactly; returns what was stored."""
    method = get_method(spec.method)
    regenerate = method.regenerate_weights(spec)
    # Seed-regenerated weights must be the ticket's own; otherwise store the values.
    if regenerate is not None:
        probe = method.build_empty(spec)
        regenerate(probe)
        if not all(torch.equal(a.weight.cpu(), b.weight.cpu())
                   for (_, a), (_, b) in zip(prunable_layers(probe), prunable_layers(model))):
            regenerate = None
    compact = compact_state(model, spec, regenerate)
    expanded = expand_state(compact, method.build_empty(spec), regenerate)
    mine = {k: v.cpu() for k, v in model.state_dict().items()}
    want, got = _effective(mine, model), _effective(expanded, model)
    bad = [k for k in want if not torch.equal(want[k].float(), got[k].float())]
    if bad:
        raise ValueError(f"compact ticket of run {spec.run_id} does not round-trip: {bad[:3]}")
    atomic_save(path, compact)
    return {"compact_weights": compact["weights"], "compact_ticket_bytes": path.stat().st_size}


def read_compact(path: Union[str, Path]) -> Dict[str, Any]:
    """The compact dict at ``path`` (``ValueError`` if it is not one)."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ValueError(f"compact ticket not found: {path}") from None
    except Exception as exc:  # noqa: BLE001 - re-raised with the file named
        raise ValueError(f"cannot load {path} ({type(exc).__name__}): not a compact ticket or corrupt") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"{path} is not a compact ticket (format {FORMAT})")
    compact: Dict[str, Any] = data
    return compact


def load_compact(path: Union[str, Path], device: Union[str, torch.device] = "cpu") -> nn.Module:
    """A compact ticket as a model in eval mode (same contract as :func:`bench.methods.ticket.load_ticket`)."""
    compact = read_compact(path)
    spec = RunSpec.from_dict(json.loads(compact["spec"]))
    method = get_method(spec.method)
    regenerate = method.regenerate_weights(spec) if compact["weights"] == "seed" else None
    if compact["weights"] == "seed" and regenerate is None:
        raise ValueError(f"{path}: weights stored as a seed, but method {spec.method!r} cannot regenerate them")
    empty = method.build_empty(spec)
    try:
        empty.load_state_dict(expand_state(compact, empty, regenerate))
    except (KeyError, RuntimeError) as exc:
        raise ValueError(f"{path} does not match its spec's architecture ({type(exc).__name__}: {exc})") from None
    set_trainable(empty, weights=False, scores=False)
    return empty.to(device).eval()
