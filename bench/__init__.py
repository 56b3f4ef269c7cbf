"""robust-tickets: one harness to find, attack and compare robust sparse networks.

``RunSpec``, ``run_spec`` and ``load_ticket`` are loaded on first access, so
importing one module of the package does not import all of it.
"""
from __future__ import annotations

import importlib
from typing import Any

__all__ = ["RunSpec", "load_ticket", "run_spec"]

# Public name -> the module defining it.
_EXPORTS = {"RunSpec": "bench.spec", "run_spec": "bench.harness", "load_ticket": "bench.methods.ticket"}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'bench' has no attribute {name!r}")
