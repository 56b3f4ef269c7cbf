"""Models made outside this harness: loading them (``module:factory``, ``file.py:factory``, TorchScript,
``torch.export``), reading a state dict safely, measuring their sparsity from the weights and checking them on a
few test images. :mod:`bench.external` evaluates them."""
from __future__ import annotations

import importlib
import importlib.util
import pickle
import warnings
import zipfile
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import torch
import torch.nn as nn

from bench.core.io import digest, tensor_digest
from bench.data import Split

# Examples of the probe batch that checks a model before any attack runs.
PROBE_EXAMPLES = 2


class ExportedModel(nn.Module):
    """A ``torch.export`` program as a module. Its graph was traced in one mode, so ``train()``/``eval()`` change
    nothing (the exported module refuses them); export a model in eval mode."""

    def __init__(self, program: nn.Module) -> None:
        super().__init__()
        self.program = program
        self.train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.program(x)

    def train(self, mode: bool = True) -> "ExportedModel":
        """Record eval mode on every submodule's attribute only (the graph is fixed; ``.train()`` is not called)."""
        for module in self.modules():
            module.training = False
        return self


def _is_zip(path: Path) -> bool:
    """Whether ``path`` is a zip archive (TorchScript, torch.export and torch.save files all are)."""
    return zipfile.is_zipfile(path)


def _zip_names(path: Path) -> List[str]:
    with zipfile.ZipFile(path) as archive:
        return archive.namelist()


def _import_factory(text: str) -> Any:
    """The callable named by ``module:factory`` or ``file.py:factory`` (the user's own code, imported on request)."""
    where, _, attr = text.rpartition(":")
    if not where or not attr:
        raise ValueError(f"--model {text!r}: expected module:factory, file.py:factory, a TorchScript file or a .pt2 program")
    if where.endswith(".py"):
        file = Path(where)
        if not file.is_file():
            raise ValueError(f"--model {text!r}: {file} is not a file")
        spec = importlib.util.spec_from_file_location(f"bench_external_{digest(str(file.resolve()))}", file)
        if spec is None or spec.loader is None:
            raise ValueError(f"--model {text!r}: cannot import {file}")
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except Exception as exc:  # noqa: BLE001 - the user's module; reported in one line
            raise ValueError(f"--model {text!r}: importing {file} failed: {type(exc).__name__}: {first_line(exc)}") from None
    else:
        try:
            module = importlib.import_module(where)
        except Exception as exc:  # noqa: BLE001 - the user's module; reported in one line
            raise ValueError(f"--model {text!r}: importing module {where!r} failed: {type(exc).__name__}: {first_line(exc)}") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ValueError(f"--model {text!r}: {where} has no callable {attr!r}")
    return factory


def first_line(exc: BaseException) -> str:
    """An exception's message, first line only (errors here are one line)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


def read_state_dict(path: Path) -> Dict[str, torch.Tensor]:
    """A state dict from ``path`` (``weights_only=True``: a pickle that would run code is refused); a checkpoint
    dict holding it under ``state_dict`` or ``model`` is unwrapped."""
    if not path.is_file():
        raise ValueError(f"--weights {path}: not a file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ValueError(f"--weights {path}: refused, not a plain tensor file ({first_line(exc)[:120]})") from None
    except Exception as exc:  # noqa: BLE001 - any unreadable file is one line naming it
        raise ValueError(f"--weights {path}: not a torch state dict ({type(exc).__name__})") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise ValueError(f"--weights {path}: not a state dict (a mapping of names to tensors)")
    return state


def _merge_pruned(state: Dict[str, torch.Tensor], wanted: Mapping[str, Any]) -> Dict[str, torch.Tensor]:
    """``torch.nn.utils.prune`` pairs (``X_orig``, ``X_mask``) become ``X = X_orig * X_mask`` where the model has a
    plain ``X`` (it was not pruned when built)."""
    out = dict(state)
    for key in list(state):
        if key.endswith("_orig"):
            base = key[: -len("_orig")]
            mask = f"{base}_mask"
            if mask in state and base in wanted and key not in wanted:
                out[base] = state[key] * state[mask]
                del out[key], out[mask]
    return out


def load_external_model(model: str, weights: Optional[Union[str, Path]] = None) -> nn.Module:
    """The model ``model`` names, with ``weights`` loaded (state dicts of a factory's model)."""
    path = Path(model)
    if path.suffix == ".pt2" and not path.is_file():
        raise ValueError(f"--model {path}: not a file")
    if path.suffix == ".pt2" or (path.is_file() and _is_zip(path)):
        if weights is not None:
            raise ValueError(f"--weights goes with --model module:factory; {path} holds its own weights")
        names = _zip_names(path) if _is_zip(path) else []
        if path.suffix == ".pt2" or any(n.split("/", 1)[-1].startswith("serialized_exported_program") for n in names):
            try:
                return ExportedModel(torch.export.load(str(path)).module())
            except Exception as exc:  # noqa: BLE001 - any unreadable program is one line naming it
                raise ValueError(f"--model {path}: not a torch.export program ({type(exc).__name__}: {first_line(exc)[:120]})") from None
        if any(n.split("/", 1)[-1].startswith("constants.pkl") or "/code/" in n for n in names):
            try:
                return torch.jit.load(str(path), map_location="cpu")
            except Exception as exc:  # noqa: BLE001 - any unreadable TorchScript file is one line naming it
                raise ValueError(f"--model {path}: not a TorchScript model ({type(exc).__name__}: {first_line(exc)[:120]})") from None
        raise ValueError(f"--model {path}: a state dict, not a model; give --model module:factory --weights {path}")
    if path.exists() and ":" not in model:
        raise ValueError(f"--model {path}: not a model (expected a TorchScript file, a .pt2 program or module:factory)")
    factory = _import_factory(model)
    try:
        built = factory()
    except Exception as exc:  # noqa: BLE001 - the user's factory; reported in one line
        raise ValueError(f"--model {model!r}: the factory raised {type(exc).__name__}: {first_line(exc)}") from None
    if not isinstance(built, nn.Module):
        raise ValueError(f"--model {model!r}: the factory returned {type(built).__name__}, not a torch.nn.Module")
    if weights is not None:
        wanted = built.state_dict()
        state = _merge_pruned(read_state_dict(Path(weights)), wanted)
        try:
            built.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise ValueError(f"--weights {weights} does not fit {model}'s model: {first_line(exc)[:300]}") from None
    return built


@torch.no_grad()
def prunable_weights(model: nn.Module) -> Dict[str, torch.Tensor]:
    """Each conv and linear weight as the model computes with it, by layer name: every state tensor named
    ``weight`` with two or more dimensions (BatchNorm's are one-dimensional), a prune pair as ``orig * mask``."""
    state = model.state_dict()
    out: Dict[str, torch.Tensor] = {}
    for key, value in state.items():
        layer, _, leaf = key.rpartition(".")
        if leaf == "weight_orig" and f"{layer}.weight_mask" in state:
            out[layer] = value * state[f"{layer}.weight_mask"]
        elif leaf == "weight" and value.dim() >= 2 and f"{layer}.weight_orig" not in state:
            out[layer] = value
    return out


def measure_sparsity(model: nn.Module) -> Tuple[float, Dict[str, float], int]:
    """Fraction of exact zeros among conv and linear weights, per-layer fractions, and the weight count."""
    weights = prunable_weights(model)
    if not weights:
        raise ValueError("the model has no conv or linear weights to measure (no state tensor named 'weight' with 2+ dims)")
    zeros = {name: int((w == 0).sum()) for name, w in weights.items()}
    total = sum(w.numel() for w in weights.values())
    return sum(zeros.values()) / total, {n: zeros[n] / weights[n].numel() for n in weights}, total


@torch.no_grad()
def check_model(model: nn.Module, test: Split, num_classes: int, device: torch.device) -> List[str]:
    """Probe the model on a few test images before any attack; a model that cannot be evaluated is a ``ValueError``
    naming why. Returns notes (a model left in train mode is put in eval mode and said so)."""
    notes = []
    if model.training:
        notes.append("the model was in train mode; it is evaluated in eval mode")
    model.eval()
    x = test.x[:PROBE_EXAMPLES].to(device).float().div(255)
    try:
        logits = model(x)
    except Exception as exc:  # noqa: BLE001 - the user's model; reported in one line
        raise ValueError(f"the model fails on test images of shape {tuple(x.shape)} ([0,1] pixels, NCHW): "
                         f"{type(exc).__name__}: {first_line(exc)[:200]}") from None
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] != x.shape[0]:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"the model must return logits of shape (batch, classes); got {shape} for a batch of {x.shape[0]}")
    if logits.shape[1] != num_classes:
        raise ValueError(f"the model returns {logits.shape[1]} logits; the dataset has {num_classes} classes")
    if not torch.isfinite(logits).all():
        raise ValueError("the model's outputs on test images are not finite (NaN or infinity)")
    return notes


def model_arch(model: nn.Module) -> str:
    """The model's class name (TorchScript keeps the original's; an exported program is named as such)."""
    if isinstance(model, torch.jit.ScriptModule):
        return str(model.original_name)
    if isinstance(model, ExportedModel):
        return "ExportedProgram"
    return type(model).__name__


def absolute_model(model: str) -> str:
    """``model`` with its file made absolute (``file.py:factory`` or a program file), so the folder can load it again
    from anywhere; a ``module:factory`` stays as it is."""
    where, sep, attr = model.rpartition(":")
    if sep and where.endswith(".py"):
        return f"{Path(where).resolve()}:{attr}"
    return str(Path(model).resolve()) if Path(model).is_file() else model


def weights_digest(model: nn.Module) -> str:
    """Digest of every parameter and buffer of ``model``: the model's identity in its run id."""
    return digest({k: tensor_digest(v) for k, v in model.state_dict().items()})
