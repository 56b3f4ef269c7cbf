"""Leaderboard entries: RobustBench model-info dicts extended with this harness's fields (sparsity, density,
width, method, randomized, eot_iter, non_adaptive, flags), checked field by field against one schema, and read
from files (one entry per JSON file, or a folder of submissions)."""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

from bench.core.results import parse_eps

THREATS = ("Linf", "L2", "L1")
PERCENT_RE = re.compile(r"^\d{1,3}(\.\d+)?$")
# Where an entry comes from: this harness's rows, a submitted file, or a submitted file whose ticket
# --verify re-evaluated here.
EVALUATED_HERE, SUBMITTED, VERIFIED = "evaluated here", "submitted", "submitted, verified here"

# Field -> (allowed types, required). Types are checked exactly (bool is not an int here).
ROBUSTBENCH_SCHEMA: Dict[str, Tuple[Tuple[type, ...], bool]] = {
    "link": ((str,), True),
    "name": ((str,), True),
    "authors": ((str,), True),
    "additional_data": ((bool,), True),
    "number_forward_passes": ((int,), True),
    "dataset": ((str,), True),
    "venue": ((str,), True),
    "architecture": ((str,), True),
    "eps": ((str,), True),
    "clean_acc": ((str,), True),
    "reported": ((str, type(None)), True),
    "autoattack_acc": ((str, type(None)), True),
    "unreliable": ((bool,), True),
    "footnote": ((str, type(None)), True),
    "external": ((str, type(None)), False),
}
EXTENSION_SCHEMA: Dict[str, Tuple[Tuple[type, ...], bool]] = {
    "sparsity": ((float, int), True),
    "density": ((float, int), True),
    "width": ((float, int), True),
    "method": ((str,), True),
    "randomized": ((bool,), True),
    "eot_iter": ((int,), True),
    "non_adaptive": ((bool,), True),
    "flags": ((str,), True),
    "threat_model": ((str,), False),
    "target_sparsity": ((float, int, type(None)), False),
    "run_id": ((str,), False),
    "n_eval": ((int,), False),
    "evaluations": ((list,), False),
    "ticket": ((str,), False),
    "median_distance": ((float, int, type(None)), False),
    # A model made elsewhere, for --verify: the model (file.py:factory, TorchScript or .pt2) and its state dict,
    # relative to the entry file (bench eval --model's SPEC and --weights).
    "model": ((str,), False),
    "weights": ((str,), False),
}
SCHEMA = {**ROBUSTBENCH_SCHEMA, **EXTENSION_SCHEMA}


@dataclass(frozen=True)
class Entry:
    """One validated leaderboard entry, its file and where it came from (``EVALUATED_HERE``, ``SUBMITTED``, ``VERIFIED``)."""

    info: Dict[str, Any]
    threat: str
    source: str
    origin: str = SUBMITTED

    @property
    def robust(self) -> float:
        """Worst-case robust accuracy in percent: ``external`` if given, else the lowest robust figure."""
        if self.info.get("external") is not None:
            return float(self.info["external"])
        return min(float(self.info[k]) for k in ("autoattack_acc", "reported") if self.info.get(k) is not None)


def percent_or_none(value: Optional[str]) -> Optional[float]:
    """A RobustBench percent string as a float (None stays None)."""
    return None if value is None else float(value)


def validate_entry(info: Any, where: str, submitted: bool = True) -> Dict[str, Any]:
    """Check a model-info dict against the schema; raise ``ValueError`` naming the field.

    A ``submitted`` entry's figures must also be consistent with each other
    (its worst case at most each attack's figure). Entries evaluated here are
    exempt: their PGD/CW rows cover ``n_eval`` examples and the worst case
    only AutoAttack's subset, so the figures are of different example sets.
    """
    if not isinstance(info, dict):
        raise ValueError(f"{where}: an entry must be a JSON object, got {type(info).__name__}")
    unknown = sorted(set(info) - set(SCHEMA))
    if unknown:
        raise ValueError(f"{where}: unknown field {unknown[0]!r}; allowed fields: {', '.join(SCHEMA)}")
    # Presence and JSON types.
    for name, (types, required) in SCHEMA.items():
        if name not in info:
            if required:
                raise ValueError(f"{where}: missing required field {name!r}")
            continue
        value = info[name]
        ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
        if not ok:
            wanted = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            raise ValueError(f"{where}: field {name!r} must be {wanted}, got {json.dumps(value)} ({type(value).__name__})")
    # Values.
    for name in ("name", "dataset", "architecture", "method"):
        if not info[name].strip():
            raise ValueError(f"{where}: field {name!r} must not be empty")
    for name in ("clean_acc", "reported", "autoattack_acc", "external"):
        value = info.get(name)
        if value is not None and (not PERCENT_RE.match(value) or not 0 <= float(value) <= 100):
            raise ValueError(f"{where}: field {name!r} must be a percent string between 0 and 100 like '57.14', got {value!r}")
    if all(info.get(k) is None for k in ("external", "autoattack_acc", "reported")):
        raise ValueError(f"{where}: field 'autoattack_acc' (or 'external'/'reported') must give a robust accuracy")
    try:
        eps = parse_eps(info["eps"])
    except ValueError as exc:
        raise ValueError(f"{where}: field 'eps': {exc}") from None
    threat = info.get("threat_model", "Linf")
    if not (math.isfinite(eps) and 0 < eps and (threat != "Linf" or eps <= 1)):
        raise ValueError(f"{where}: field 'eps' must be in (0, 1] (pixel units; L2/L1: finite, > 0), got {info['eps']!r}")
    if info["number_forward_passes"] < 1:
        raise ValueError(f"{where}: field 'number_forward_passes' must be >= 1, got {info['number_forward_passes']}")
    if info["eot_iter"] < 1:
        raise ValueError(f"{where}: field 'eot_iter' must be >= 1, got {info['eot_iter']}")
    sparsity, density, width = (_float_field(info, name, where) for name in ("sparsity", "density", "width"))
    if not (math.isfinite(sparsity) and 0 <= sparsity < 1):
        raise ValueError(f"{where}: field 'sparsity' must be the fraction of zero weights in [0, 1), got {info['sparsity']}")
    if not math.isclose(density, 1 - sparsity, abs_tol=1e-6):
        raise ValueError(f"{where}: field 'density' must equal 1 - sparsity ({1 - sparsity:.6g}), got {info['density']}")
    if not (math.isfinite(width) and width > 0):
        raise ValueError(f"{where}: field 'width' must be > 0, got {info['width']}")
    threat = info.get("threat_model", "Linf")
    if threat not in THREATS:
        raise ValueError(f"{where}: field 'threat_model' must be one of {', '.join(THREATS)}, got {threat!r}")
    clean = float(info["clean_acc"])
    for name in ("reported", "autoattack_acc", "external"):
        if info.get(name) is not None and float(info[name]) > clean + 1e-9:
            raise ValueError(f"{where}: field {name!r} ({info[name]}) is above clean_acc ({info['clean_acc']})")
    # The worst case over every attack cannot beat any one of them (on one set of examples).
    if submitted and info.get("external") is not None:
        for name in ("autoattack_acc", "reported"):
            if info.get(name) is not None and float(info["external"]) > float(info[name]) + 1e-9:
                raise ValueError(f"{where}: field 'external' ({info['external']}) is above {name} ({info[name]}); "
                                 "external is the worst case over every attack, so it is at most each of them")
    return info


def _float_field(info: Dict[str, Any], name: str, where: str) -> float:
    """A numeric field as a float; an integer beyond float's range (``10**400``) is a ``ValueError`` naming it."""
    try:
        return float(info[name])
    except OverflowError:
        raise ValueError(f"{where}: field {name!r} is too large a number") from None


def _no_constant(name: str) -> Any:
    """JSON's NaN and Infinity are not numbers an entry may hold."""
    raise ValueError(f"{name} is not a number an entry may hold")


def load_entry(path: Union[str, Path], threat: Optional[str] = None, origin: str = SUBMITTED) -> Entry:
    """Read and validate one entry file (threat from the field, the argument, or Linf)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: not a regular file (an entry is a JSON file)")
    try:
        info = json.loads(path.read_text(encoding="utf-8"), parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a UTF-8 text file") from None
    except RecursionError:
        raise ValueError(f"{path}: JSON nested too deeply to be an entry") from None
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    info = validate_entry(info, str(path), submitted=origin != EVALUATED_HERE)
    return Entry(info, str(info.get("threat_model") or threat or "Linf"), str(path), origin)


def load_submissions(folder: Union[str, Path]) -> List[Entry]:
    """Every ``*.json`` under ``folder`` (recursively), validated; the first bad one raises."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"submissions folder not found: {folder}")
    entries = []
    for path in sorted(folder.rglob("*.json")):
        # A ticket's run folder shipped with an entry (its spec.json, eval cache) holds no entries.
        if any((folder / parent / "spec.json").exists() for parent in path.relative_to(folder).parents if parent != Path(".")):
            continue
        threat = next((p for p in reversed(path.relative_to(folder).parts[:-1]) if p in THREATS), None)
        entries.append(load_entry(path, threat))
    return entries
