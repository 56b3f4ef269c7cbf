"""Rows record the hardware that made them: the same spec trained on two machines can give two tickets (the
published RST-0.9 seed 0, PGD-20 62.0 %, retrained on an EPYC of family 25 with the same code: 60.9 %)."""
from __future__ import annotations

from pathlib import Path

import torch

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
    """An ARM-style cpuinfo (no model name, no family) and a machine without /proc/cpuinfo still give a name."""
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nProcessor\t: ARMv8 Processor rev 1 (v8l)\n", encoding="utf-8")
    assert cpu_name(arm).startswith("ARMv8 Processor rev 1 (v8l) (")
    assert cpu_name(tmp_path / "absent").endswith(f"({torch.backends.cpu.get_cpu_capability()})")


def test_every_row_names_its_hardware() -> None:
    """result_rows writes device_name beside device (rows made before this have the column blank)."""
    result = AttackResult("pgd20", {"eps": 0.1}, 10, 0.8, 0.5, 1.0, torch.ones(10, dtype=torch.bool))
    rows = result_rows({"run_id": "x"}, [result], {}, torch.device("cpu"))
    assert rows[0]["device"] == "cpu"
    assert rows[0]["device_name"] == device_name(torch.device("cpu")) == cpu_name()
    assert rows[0]["device_name"]
