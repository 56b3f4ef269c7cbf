"""On a CUDA device: the harness end to end, and attacks and prepared models agreeing with the CPU.

Marked ``cuda`` and skipped without a device; ``benchmarks/device_check.sh`` runs them (``pytest -m cuda``).
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import TINY, trained_convnet

from bench.attacks import make_attack
from bench.cli import main
from bench.data import load_data, to_float
from bench.evaluation.evaluate import evaluate
from bench.nn.inference import inference_model

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]
CUDA = torch.device("cuda")


def test_bench_run_on_cuda(tmp_path: Path) -> None:
    """`bench run --device cuda` on the tiny budget writes rows recorded as run on cuda."""
    args = ["run", "--method", "rst", "--sparsity", "0.9", "--out", str(tmp_path)]
    for key, value in {**TINY, "device": "cuda"}.items():
        args += [f"--{key.replace('_', '-')}", ",".join(value) if isinstance(value, tuple) else str(value)]
    assert main(args) == 0
    rows = pd.read_csv(tmp_path / "runs.csv")
    assert set(rows["device"]) == {"cuda"} and (rows["robust_acc"] <= rows["clean_acc"]).all()
    # The rows name the GPU that made them.
    assert set(rows["device_name"]) == {torch.cuda.get_device_name(CUDA)}


def test_pgd_flags_agree_with_the_cpu() -> None:
    """PGD-20 (fixed seed) on CUDA and on the CPU: the same robust flags but for rounding-decided examples (<= 2 of 300)."""
    model = trained_convnet()
    data = load_data("fashion-mnist", "embedded")
    x, y = to_float(data.test.x[:300], torch.device("cpu")), data.test.y[:300]
    attack = make_attack("pgd20", 0.1, seed=0)
    flags = {}
    for device in (torch.device("cpu"), CUDA):
        m = model.to(device)
        x_adv = attack(m, x.to(device), y.to(device))
        assert float((x_adv.cpu() - x).abs().max()) <= 0.1 + 1e-6
        with torch.no_grad():
            flags[device.type] = (m(x_adv).argmax(1) == y.to(device)).cpu()
    assert int((flags["cpu"] != flags["cuda"]).sum()) <= 2


def test_prepared_model_on_cuda_matches_and_evaluates() -> None:
    """The prepared copy on CUDA computes the ticket's logits; evaluate(prepare=True) agrees with prepare=False."""
    model = trained_convnet().to(CUDA)
    x = torch.rand(64, 1, 28, 28, device=CUDA)
    with torch.no_grad():
        assert torch.allclose(model(x), inference_model(model, channels_last=True)(x), rtol=1e-4, atol=1e-4)
    test = load_data("fashion-mnist", "embedded").test
    runs = [evaluate(model, test, ("pgd20",), 0.1, 200, 0, CUDA, prepare=p)[0] for p in (False, True)]
    assert runs[0].clean_acc == runs[1].clean_acc
    assert int((runs[0].robust != runs[1].robust).sum()) <= 1
