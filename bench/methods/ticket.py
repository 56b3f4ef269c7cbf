"""A finished ticket and how it is stored: a plain state dict loaded into the method's empty model."""
from __future__ import annotations

import json
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Union

import torch
import torch.nn as nn

from bench.core import paths
from bench.data import DataBundle
from bench.methods import get_method
from bench.methods.compact import load_compact
from bench.nn.masking import set_trainable
from bench.spec import PROTOCOL, RunSpec


@dataclass
class Ticket:
    """A run's ticket with what evaluating it needs: the resolved spec, data, device, folder and meta."""

    spec: RunSpec
    data: DataBundle
    device: torch.device
    run_dir: Path
    model: nn.Module
    meta: Dict[str, Any]


def empty_model(spec: RunSpec, device: Union[str, torch.device] = "cpu") -> nn.Module:
    """The spec's architecture with the method's BatchNorm kind, untrained (the method's ``build_empty``)."""
    return get_method(spec.method).build_empty(spec, device)


def load_state(model: nn.Module, path: Path, device: Union[str, torch.device] = "cpu") -> nn.Module:
    """Load an untrusted checkpoint safely; mismatches give a clear ValueError."""
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise ValueError(f"checkpoint not found: {path}") from None
    except pickle.UnpicklingError as exc:
        # weights_only refused an object: a crafted or foreign pickle, never executed.
        raise ValueError(f"refusing to load {path}: not a plain tensor checkpoint ({type(exc).__name__}); "
                         "only weights_only state dicts are accepted") from None
    except Exception as exc:  # noqa: BLE001 - re-raised with the file named
        raise ValueError(f"cannot load {path} ({type(exc).__name__}): the file is truncated or corrupt; delete it "
                         "(or its run folder) to search the ticket again") from None
    if not isinstance(state, dict):
        raise ValueError(f"{path} is not a state dict")
    mine = model.state_dict()
    missing = sorted(set(mine) - set(state))
    unexpected = sorted(set(state) - set(mine))
    if missing or unexpected:
        raise ValueError(f"{path} does not match the architecture: missing {missing[:3]}, unexpected {unexpected[:3]}")
    for k, v in state.items():
        if not isinstance(v, torch.Tensor) or v.shape != mine[k].shape:
            shape = tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
            raise ValueError(f"{path}: tensor {k} has shape {shape}, the architecture needs {tuple(mine[k].shape)}")
    model.load_state_dict(state)
    return model


def read_spec(run_dir: Union[str, Path]) -> RunSpec:
    """The spec a run folder was made for (``ValueError`` for a folder of an older protocol)."""
    spec_path = paths.spec(run_dir)
    if not spec_path.exists():
        raise ValueError(f"{run_dir} is not a run folder (no spec.json)")
    try:
        data = json.loads(spec_path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ValueError(f"{spec_path} is not UTF-8 text; delete the run folder to run it again") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{spec_path} is not valid JSON ({exc.msg}); delete the run folder to run it again") from None
    except RecursionError:
        raise ValueError(f"{spec_path} is nested too deeply to be a run spec; delete the run folder to run it "
                         "again") from None
    if not isinstance(data, dict):
        raise ValueError(f"{spec_path} must hold a JSON object (the run spec)")
    if "protocol" not in data:
        raise ValueError(f"{run_dir} was made by a version before method protocols (protocol 1): its methods "
                         f"differ from this version's (protocol {PROTOCOL}); rerun its spec")
    return RunSpec.from_dict(data)


# What every finished ticket's meta.json records (the rows and the evaluation read them).
META_KEYS = ("measured_sparsity", "train_seconds", "train_passes")


def read_meta(run_dir: Union[str, Path]) -> Dict[str, Any]:
    """What the search recorded about a finished ticket; a file that is not such a record is a ``ValueError``
    naming it."""
    path = paths.meta(run_dir)
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ValueError(f"{path} is not valid JSON ({type(exc).__name__}); delete the run folder to run it "
                         "again") from None
    missing = [k for k in META_KEYS if not isinstance(meta, dict) or k not in meta]
    if missing:
        raise ValueError(f"{path} is not a ticket's record (a JSON object with {', '.join(META_KEYS)}; missing "
                         f"{', '.join(missing)}); delete the run folder to run it again")
    return dict(meta)


def check_run_folder(run_dir: Path, spec: RunSpec) -> None:
    """A run folder named by ``spec``'s run id must hold that spec: files copied in from another run (another
    method's under this id) would give rows that say one method with another's numbers."""
    if not paths.spec(run_dir).exists():
        return
    stored = read_spec(run_dir)
    if stored.run_id != spec.run_id:
        raise ValueError(f"{paths.spec(run_dir)} is the spec of run {stored.run_id} ({stored.method}, sparsity "
                         f"{stored.sparsity:g}), not of {spec.run_id} ({spec.method}) that this folder is named for; "
                         "move the folder away to run it again")


def load_ticket(run_dir: Union[str, Path], device: Union[str, torch.device] = "cpu") -> nn.Module:
    """A finished ticket in eval mode: takes [0,1] inputs, returns logits.

    ``run_dir`` is a run folder (its ``ticket.pt``, else its compact ticket)
    or a compact ticket file itself (it carries its spec).
    """
    if Path(run_dir).is_file():
        return load_compact(run_dir, device)
    spec = read_spec(run_dir)
    if not paths.ticket(run_dir).exists() and paths.compact_ticket(run_dir).exists():
        return load_compact(paths.compact_ticket(run_dir), device)
    model = load_state(empty_model(spec, device), paths.ticket(run_dir), device)
    set_trainable(model, weights=False, scores=False)
    return model.eval()
