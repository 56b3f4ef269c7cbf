"""Rows record the hardware that made them: the same spec trained on two machines can give two tickets (the
published RST-0.9 runs retrained on another EPYC: results/published/README.md, r2s-reference/runs.csv)."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import torch
from conftest import TINY

from bench.cli import main
from bench.core.devices import cpu_fields, cpu_name, device_name
from bench.core.results import AttackResult, result_rows

ZEN4 = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 17
model name\t: AMD EPYC
flags\t\t: fpu avx2 avx512f

processor\t: 1
vendor_id\t: AuthenticAMD
cpu family\t: 26
model\t\t: 2
model name\t: another CPU
"""


def test_cpu_name_reads_the_first_processor(tmp_path: Path) -> None:
    """Model name, family and model of the first processor, and torch's vector capability."""
    info = tmp_path / "cpuinfo"
    info.write_text(ZEN4, encoding="utf-8")
    assert cpu_fields(ZEN4)["cpu family"] == "25"
    capability = torch.backends.cpu.get_cpu_capability()
    assert cpu_name(info) == f"AMD EPYC, family 25 model 17 ({capability})"


def test_cpu_name_without_family_or_file(tmp_path: Path) -> None:
    """ARM cpuinfo (32-bit names the processor; 64-bit only implementer and part) and a machine without
    /proc/cpuinfo still give a name."""
    capability = torch.backends.cpu.get_cpu_capability()
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nProcessor\t: ARMv8 Processor rev 1 (v8l)\n", encoding="utf-8")
    assert cpu_name(arm) == f"ARMv8 Processor rev 1 (v8l) ({capability})"
    arm64 = tmp_path / "arm64"
    arm64.write_text("processor\t: 0\nBogoMIPS\t: 50.00\nCPU implementer\t: 0x41\nCPU part\t: 0xd0c\n",
                     encoding="utf-8")
    assert cpu_name(arm64) == f"ARM CPU, implementer 0x41 part 0xd0c ({capability})"
    assert cpu_name(tmp_path / "absent").endswith(f"({capability})")
    assert device_name(torch.device("meta")) == "meta"


def test_every_row_names_its_hardware() -> None:
    """result_rows writes device_name beside device (rows made before this have the column blank)."""
    result = AttackResult("pgd20", {"eps": 0.1}, 10, 0.8, 0.5, 1.0, torch.ones(10, dtype=torch.bool))
    rows = result_rows({"run_id": "x"}, [result], {}, torch.device("cpu"))
    assert rows[0]["device"] == "cpu"
    assert rows[0]["device_name"] == cpu_name()


def test_a_run_records_where_it_was_trained_and_where_evaluated(tmp_path: Path) -> None:
    """meta.json names the training hardware; rows carry it as train_device_name beside device_name."""
    args = ["run", "--method", "rst", "--sparsity", "0.5", "--out", str(tmp_path)]
    for key, value in TINY.items():
        args += [f"--{key.replace('_', '-')}", ",".join(value) if isinstance(value, tuple) else str(value)]
    assert main(args) == 0
    rows = pd.read_csv(tmp_path / "runs.csv")
    (run,) = list((tmp_path / "runs").iterdir())
    meta = json.loads((run / "meta.json").read_text(encoding="utf-8"))
    assert meta["device_name"] == cpu_name()
    assert set(rows["train_device_name"]) == set(rows["device_name"]) == {cpu_name()}
