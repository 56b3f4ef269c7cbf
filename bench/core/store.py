"""Per-example arrays over the test set, grown on demand and saved atomically (``.npz`` + ``.json``).

One store serves every evaluation: 1-D arrays (one value per test example)
and 2-D ones (a row per inference draw of a randomised model, one column per
example) grow along the example axis. The JSON side-car holds what the
arrays are of and the seconds spent so far.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Protocol, Tuple

import numpy as np
import torch

from bench.core.io import atomic_json, atomic_npz

# name -> (dtype, fill value, leading shape); the last axis is the example index.
ArraySpec = Mapping[str, Tuple[torch.dtype, Any, Tuple[int, ...]]]


class Arrays(Protocol):
    """Anything that returns named per-example arrays: a store, or a plain dict of tensors."""

    def __getitem__(self, key: str) -> torch.Tensor: ...


class Store:
    """Named per-example arrays, saved atomically after every update (resumable evaluations)."""

    def __init__(self, path: Optional[Path], arrays: ArraySpec, meta: Dict[str, Any]) -> None:
        self.path = path
        self.spec = dict(arrays)
        self.meta = dict(meta)
        self.arrays: Dict[str, torch.Tensor] = {k: torch.full((*lead, 0), fill, dtype=dt) for k, (dt, fill, lead) in self.spec.items()}
        # Resume: what an earlier session stored (arrays, seconds) replaces the empty start. The arrays
        # decide; a side-car lost to a kill between the two writes only loses the seconds count.
        if path is not None and path.with_suffix(".npz").exists():
            stored = _read_arrays(path.with_suffix(".npz"), self.spec)
            if stored is not None:
                self.arrays = stored
                self.meta = {**self.meta, **_read_side_car(path.with_suffix(".json"))}

    def __len__(self) -> int:
        return min((a.shape[-1] for a in self.arrays.values()), default=0)

    def grow(self, size: int) -> None:
        """Make every array at least ``size`` examples long (new entries at their fill value)."""
        for k, (dt, fill, lead) in self.spec.items():
            a = self.arrays[k]
            if a.shape[-1] < size:
                self.arrays[k] = torch.cat([a, torch.full((*lead, size - a.shape[-1]), fill, dtype=dt)], -1)

    @property
    def seconds(self) -> float:
        """Seconds spent so far (all sessions)."""
        return float(self.meta.get("seconds", 0.0))

    def add_seconds(self, seconds: float) -> None:
        """Count ``seconds`` more of work."""
        self.meta["seconds"] = self.seconds + seconds

    def save(self) -> None:
        """Atomic write of the JSON side-car, then the arrays (each file whole; the arrays are what resume reads)."""
        if self.path is None:
            return
        atomic_json(self.path.with_suffix(".json"), self.meta)
        atomic_npz(self.path.with_suffix(".npz"), {k: v.numpy() for k, v in self.arrays.items()})

    def __getitem__(self, key: str) -> torch.Tensor:
        return self.arrays[key]

    def __setitem__(self, key: str, value: torch.Tensor) -> None:
        self.arrays[key] = value


def _read_arrays(path: Path, spec: ArraySpec) -> Optional[Dict[str, torch.Tensor]]:
    """The arrays an earlier evaluation stored, or ``None`` (with a warning) when the file is not such a store:
    truncated, empty, another format, or arrays of the wrong kind. The cache is derived data: it is recomputed."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: torch.from_numpy(data[k].copy()) for k in spec}
        lengths = {a.shape[-1] for a in arrays.values()}
        if any(a.dtype != dt or tuple(a.shape[:-1]) != tuple(lead) for a, (dt, _fill, lead) in
               zip(arrays.values(), spec.values())) or len(lengths) > 1:
            raise ValueError("arrays of another kind")
    except Exception as exc:  # noqa: BLE001 - any unreadable cache is recomputed, after saying so
        warnings.warn(f"{path} is not a readable evaluation cache ({type(exc).__name__}); computing it again",
                      stacklevel=3)
        return None
    return arrays


def _read_side_car(path: Path) -> Dict[str, Any]:
    """The JSON side-car's record (seconds spent), or nothing when it is absent or not a JSON object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    except (ValueError, UnicodeDecodeError, RecursionError):
        return {}
    return data if isinstance(data, dict) else {}
