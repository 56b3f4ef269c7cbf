"""scripts/r2s_candidate_check.py: an R2S run's reference candidate against the rst ticket of its seed."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

from bench.spec import RunSpec

ROOT = Path(__file__).resolve().parents[1]


def _run(folder: Path, run_id: str, spec: dict, meta: dict, state: dict) -> None:
    """A finished run folder: a full spec with ``spec``'s fields, a ticket record with ``meta``, ``state``."""
    run = folder / "runs" / run_id
    run.mkdir(parents=True)
    (run / "spec.json").write_text(json.dumps(RunSpec(**spec).to_dict()))
    record = {"measured_sparsity": spec["sparsity"], "train_seconds": 1.0, "train_passes": 1}
    (run / "meta.json").write_text(json.dumps({**record, **meta}))
    torch.save(state, run / "ticket.pt")


def _check(r2s: Path, rst: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "r2s_candidate_check.py"), str(r2s), str(rst)],
                          capture_output=True, text=True, cwd=ROOT)


def test_equal_and_different_candidates(tmp_path: Path) -> None:
    """The stage named in candidate_sources at the run's sparsity is compared; one changed value fails."""
    r2s, rst = tmp_path / "r2s", tmp_path / "rst"
    state = {"w": torch.arange(6.0), "mask": torch.tensor([True, False])}
    stage = r2s / "stages" / "rst-ticket-b"
    stage.mkdir(parents=True)
    torch.save(state, stage / "model.pt")
    _run(r2s, "aaaa", {"method": "r2s", "seed": 0, "sparsity": 0.9},
         {"candidates": [0.95, 0.9], "candidate_sources": ["stage:rst-ticket-a", "stage:rst-ticket-b"]}, {})
    _run(rst, "bbbb", {"method": "rst", "seed": 0, "sparsity": 0.9}, {}, state)
    proc = _check(r2s, rst)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "candidate 0.9 rst-ticket-b equals rst bbbb" in proc.stdout
    torch.save({**state, "w": state["w"] + 1e-6}, rst / "runs" / "bbbb" / "ticket.pt")
    proc = _check(r2s, rst)
    assert proc.returncode == 1 and "DIFFERS" in proc.stdout


def test_no_r2s_run_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "runs").mkdir()
    proc = _check(tmp_path, tmp_path)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "no finished R2S run" in proc.stderr
