"""benchmarks/device_check.sh runs on the CPU too (so CI tests the script the GPU machine runs)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_device_check_script_runs_on_cpu(tmp_path: Path) -> None:
    """--device cpu --quick: CUDA tests collected (skipped), the tiny default run, a throughput table of five rows."""
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path / "ignored")}
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "device_check.sh"), "--device", "cpu", "--quick",
                           "--out", str(tmp_path)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "skipped" in (tmp_path / "pytest.txt").read_text()
    rows = pd.read_csv(tmp_path / "default-run" / "runs.csv")
    assert set(rows["device"]) == {"cpu"} and "autoattack" in set(rows["attack"])
    table = json.loads((tmp_path / "throughput.json").read_text())["rows"]
    assert len(table) == 5 and all(float(r["value"]) > 0 for r in table)
    summary = (tmp_path / "summary.md").read_text()
    assert "RST search step / dense PGD-AT step" in summary and "wall " in summary
    assert not (tmp_path / "ignored").exists()


def test_device_check_refuses_unknown_arguments(tmp_path: Path) -> None:
    """A mistyped flag is an error (exit 2) before anything runs."""
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "device_check.sh"), "--devise", "cuda", "--out", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "unknown argument --devise" in proc.stderr
    assert not list(tmp_path.iterdir())
