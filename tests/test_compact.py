"""Compact tickets: seed + packed mask (frozen weights) or surviving values + packed mask (trained weights)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import TINY  # noqa: E402 - the shared budget (tests/ is on sys.path)

from bench.cli import main
from bench.core import paths
from bench.data import load_data
from bench.harness import find_or_load_ticket
from bench.methods.compact import load_compact, pack_mask, read_compact, unpack_mask
from bench.methods.ticket import load_ticket
from bench.spec import RunSpec


def ticket(out: Path, **fields: Any) -> Path:
    """Run folder of a tiny spec's finished ticket."""
    return find_or_load_ticket(RunSpec(**{**TINY, **fields}), out).run_dir


def logits(model: torch.nn.Module) -> torch.Tensor:
    """The model's logits on the first 50 embedded test images."""
    data = load_data("fashion-mnist", "embedded", None, 0.1, 0, 0)
    with torch.no_grad():
        return model(data.test.x[:50].float() / 255)


@pytest.mark.parametrize("numel", [1, 7, 8, 9, 1000, 4099])
def test_mask_bits_round_trip(numel: int) -> None:
    """Packing keeps every bit, for sizes that are and are not multiples of 8."""
    mask = (torch.rand(numel, generator=torch.Generator().manual_seed(numel)) < 0.3).float().view(-1, 1)
    bits = pack_mask(mask)
    assert bits.dtype == torch.uint8 and bits.numel() == (numel + 7) // 8
    assert torch.equal(unpack_mask(bits, mask.shape), mask)


@pytest.mark.parametrize("method, fields, stored", [
    ("rst", {"sparsity": 0.9}, "seed"),
    ("random", {"sparsity": 0.9}, "seed"),
    ("rst", {"sparsity": 0.9, "hparams": {"finetune": "inherit", "finetune_epochs": 1}}, "values"),
    ("lwm", {"sparsity": 0.9}, "values"),
    ("dense-at", {"sparsity": 0.0}, "values"),
])
def test_compact_ticket_gives_the_same_logits(tmp_path: Path, method: str, fields: dict, stored: str) -> None:
    """The compact ticket computes exactly what the full one does, and meta.json records both sizes."""
    run_dir = ticket(tmp_path, method=method, **fields)
    meta = json.loads(paths.meta(run_dir).read_text())
    compact = read_compact(paths.compact_ticket(run_dir))
    assert compact["weights"] == meta["compact_weights"] == stored
    assert meta["compact_ticket_bytes"] == paths.compact_ticket(run_dir).stat().st_size
    assert meta["ticket_bytes"] == paths.ticket(run_dir).stat().st_size
    assert torch.equal(logits(load_compact(paths.compact_ticket(run_dir))), logits(load_ticket(run_dir)))
    # Seed + bits is far smaller than the full state dict; values + bits still drops scores and pruned weights.
    ratio = meta["compact_ticket_bytes"] / meta["ticket_bytes"]
    assert ratio < (0.1 if stored == "seed" else 0.75)


def test_run_folder_with_only_the_compact_ticket_loads_and_evaluates(tmp_path: Path) -> None:
    """bench.load_ticket and `bench eval` read a run folder whose only ticket is the compact one."""
    run_dir = ticket(tmp_path, method="rst", sparsity=0.9)
    before = logits(load_ticket(run_dir))
    paths.ticket(run_dir).unlink()
    assert torch.equal(logits(load_ticket(run_dir)), before)
    assert torch.equal(logits(load_ticket(paths.compact_ticket(run_dir))), before)
    assert main(["eval", str(run_dir), "--attacks", "pgd20", "--n-eval", "30"]) == 0
    rows = (tmp_path / "runs.csv").read_text()
    assert rows.count(run_dir.name) >= 1


def test_foreign_files_are_refused(tmp_path: Path) -> None:
    """A plain state dict or a missing file is a clear ValueError, never a wrong model."""
    run_dir = ticket(tmp_path, method="rst", sparsity=0.9)
    with pytest.raises(ValueError, match="not a compact ticket"):
        load_compact(paths.ticket(run_dir))
    with pytest.raises(ValueError, match="not found"):
        load_compact(tmp_path / "nope.pt")
