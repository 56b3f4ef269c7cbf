"""Shared fixtures: tiny specs and models that train in seconds on the CPU."""
from __future__ import annotations

from typing import Any, Dict

import pytest
import torch

from bench.data import DataBundle, DatasetInfo, Split
from bench.models import ModelConfig, build_model

TINY: Dict[str, Any] = {
    "arch": "mlp", "width": 0.1, "epochs": 1, "train_steps": 1, "n_train": 300,
    "n_eval": 60, "n_eval_aa": 20, "eval_attacks": ("pgd20",), "device": "cpu", "batch_size": 100,
}


@pytest.fixture
def tiny_spec_kwargs() -> Dict[str, Any]:
    """RunSpec keyword arguments for a run of a few seconds."""
    return dict(TINY)


@pytest.fixture
def tiny_bundle() -> DataBundle:
    """A random 8x8 grey dataset, 4 classes, linearly separable by mean brightness."""
    g = torch.Generator().manual_seed(0)
    info = DatasetInfo("toy", 4, 1, 8, (0.5,), (0.25,), 0.1)

    def make(n: int) -> Split:
        y = torch.randint(0, 4, (n,), generator=g)
        x = (y.view(-1, 1, 1, 1).float() * 60 + torch.randint(0, 40, (n, 1, 8, 8), generator=g)).clamp(0, 255)
        return Split(x.to(torch.uint8), y)

    return DataBundle(info, make(200), make(100), make(100), "toy")


@pytest.fixture
def tiny_model() -> torch.nn.Module:
    """A masked MLP for 8x8 inputs."""
    torch.manual_seed(0)
    cfg = ModelConfig(1, 4, 8, (0.5,), (0.25,), width=0.2, bn_affine=False)
    return build_model("mlp", cfg)
