"""Shared fixtures: tiny specs and models that train in seconds on the CPU."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Dict, Iterator, Tuple

import pytest
import torch
import torch.nn as nn

from bench.data import DataBundle, DatasetInfo, Split, load_data, to_float
from bench.nn.masking import apply_masks
from bench.nn.models import ModelConfig, build_model


class Exploit:
    """A pickle payload that would create a file if it were ever unpickled (loaders must refuse it)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> Tuple[Any, Tuple[str, str]]:
        return (open, (self.path, "w"))


# The one tiny budget every test file builds its runs from (a few seconds each on the CPU).
TINY: Dict[str, Any] = {
    "arch": "mlp", "width": 0.1, "epochs": 1, "train_steps": 1, "n_train": 300,
    "n_eval": 60, "n_eval_aa": 20, "eval_attacks": ("pgd20",), "device": "cpu", "batch_size": 100,
}


def train_mlp(hidden: int, n_train: int, epochs: int, batch: int, lr: float,
              loss: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]) -> Tuple[nn.Module, Split]:
    """A 784-hidden-10 MLP trained with Adam on the embedded Fashion-MNIST (seed 0); eval mode, and the test split."""
    torch.manual_seed(0)
    data = load_data("fashion-mnist", "embedded")
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, hidden), nn.ReLU(), nn.Linear(hidden, 10))
    opt = torch.optim.Adam(model.parameters(), lr)
    x, y = to_float(data.train.x[:n_train], torch.device("cpu")), data.train.y[:n_train]
    for _epoch in range(epochs):
        for i in range(0, len(x), batch):
            value = loss(model, x[i : i + batch], y[i : i + batch])
            opt.zero_grad()
            value.backward()
            opt.step()
    return model.eval(), data.test


def trained_convnet() -> nn.Module:
    """A half-pruned quarter-width conv net trained for ten SGD steps on the embedded Fashion-MNIST (CPU, seed 0),
    so its BatchNorm statistics and decisions are not trivial; in eval mode."""
    data = load_data("fashion-mnist", "embedded")
    torch.manual_seed(0)
    model = build_model("convnet", ModelConfig(1, 10, 28, (0.286,), (0.353,), 0.25))
    apply_masks(model, lambda _n, layer: layer.weight.abs(), 0.5)
    opt = torch.optim.SGD(model.parameters(), 0.05)
    x, y = to_float(data.train.x[:1000], torch.device("cpu")), data.train.y[:1000]
    for i in range(0, 1000, 100):
        loss = nn.functional.cross_entropy(model(x[i : i + 100]), y[i : i + 100])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def single_thread() -> Iterator[None]:
    """One torch thread for a test module (tiny models run fastest so); the previous count restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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


def load_script(monkeypatch: pytest.MonkeyPatch, name: str) -> ModuleType:
    """``scripts/<name>.py`` as a module, registered under its name for the test (dataclasses look it up while
    being built)."""
    path = Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    return module
