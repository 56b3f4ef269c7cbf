"""The runs of one output folder, asked for by run id or spec: a run's spec, meta and ticket, and whether a sibling
run (another spec in the same folder) has a finished ticket. Methods and tools ask the store instead of building
run folder paths (as OpenLTH's branches find their parent run through its description); :mod:`bench.core.paths` names
the files."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Union

import torch
import torch.nn as nn

from bench.core import paths
from bench.methods.ticket import load_ticket, read_meta, read_spec
from bench.spec import RunSpec


@dataclass(frozen=True)
class RunStore:
    """The runs of the output folder ``out`` (``<out>/runs/<run_id>``)."""

    out: Path

    @classmethod
    def of_run(cls, run_dir: Union[str, Path]) -> "RunStore":
        """The store a run folder (``<out>/runs/<run_id>``) belongs to."""
        return cls(paths.out_of_run(run_dir))

    @classmethod
    def of_stages(cls, stages_dir: Union[str, Path]) -> "RunStore":
        """The store whose shared stages live in ``stages_dir`` (``<out>/stages``)."""
        return cls(paths.out_of_stages(stages_dir))

    def folder(self, run_id: str) -> Path:
        """Run ``run_id``'s folder."""
        return paths.run_dir(self.out, run_id)

    def has_ticket(self, spec: RunSpec) -> bool:
        """Whether ``spec``'s run has a finished ticket made for exactly this spec."""
        folder = self.folder(spec.run_id)
        return paths.ticket_finished(folder) and read_spec(folder).canonical() == spec.canonical()

    def spec(self, run_id: str) -> RunSpec:
        """The spec run ``run_id`` was made for."""
        return read_spec(self.folder(run_id))

    def meta(self, run_id: str) -> Dict[str, Any]:
        """What run ``run_id``'s search recorded (measured sparsity, compute, stages)."""
        return read_meta(self.folder(run_id))

    def ticket(self, run_id: str, device: Union[str, torch.device] = "cpu") -> nn.Module:
        """Run ``run_id``'s finished ticket in eval mode."""
        return load_ticket(self.folder(run_id), device)
