"""``--init-from zoo:NAME[@DIR]``: prune a RobustBench zoo model (issue 30's last leftover).

No weights can be downloaded here, so a randomly initialised network of a real zoo entry's architecture (its
BatchNorm statistics drawn too) is saved where RobustBench looks for it, and the mapped network is checked against
that zoo network itself on fresh images: the same logits.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict

import pytest
import torch
import torch.nn as nn
from test_formats import write_cifar

from bench.cli import main
from bench.core.io import file_sha256
from bench.methods import get_method
from bench.methods.stages import read_dense_state
from bench.nn.masking import prunable_layers
from bench.nn.zoo_models import zoo_entries, zoo_state_for
from bench.spec import RunSpec

TRADES_WRN = "Carmon2019Unlabeled"  # RobustBench's TRADES WideResNet-28-10 (with an unused sub_block1)
STANDARDISING = "Ding2020MMA"  # a WideResNet-28-4 whose forward standardises each image first


def save_zoo(model_dir: Path, name: str) -> nn.Module:
    """A random network of zoo entry ``name`` with random BatchNorm statistics, saved as a released checkpoint."""
    torch.manual_seed(0)
    net: nn.Module = zoo_entries("cifar10", "Linf")[name]["model"]()
    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 2.0)
            nn.init.uniform_(module.weight, 0.5, 1.5)
    path = model_dir / "cifar10" / "Linf" / f"{name}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}}, path)
    return net.eval()


@pytest.fixture(scope="module")
def zoo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("zoo") / "models"


@pytest.fixture(scope="module")
def trades_wrn(zoo_dir: Path) -> nn.Module:
    return save_zoo(zoo_dir, TRADES_WRN)


def spec_for(arch: str, value: str, method: str = "hydra") -> RunSpec:
    return RunSpec(method=method, sparsity=0.5, dataset="cifar10", arch=arch, width=1.0,
                   hparams={"init_from": value}).resolve()


def test_a_trades_wideresnet_maps_onto_wrn_28_10(trades_wrn: nn.Module, zoo_dir: Path) -> None:
    """Every tensor lands where the same logits come out, on images the mapping never saw."""
    spec = spec_for("wrn-28-10", f"zoo:{TRADES_WRN}@{zoo_dir}")
    hydra = get_method("hydra")
    hydra.validate_model(spec, hydra.build_empty(spec, "meta"))
    ours = hydra.build_empty(spec)
    state = read_dense_state(spec.hparams.init_from, ours, spec)
    ours.load_state_dict({**ours.state_dict(), **state})
    x = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        expected, got = trades_wrn(x), ours.eval()(x)
    assert (expected - got).abs().max() <= 1e-4 * (1 + expected.abs().max())
    assert expected.argmax(1).tolist() == got.argmax(1).tolist()
    # The input normalisation is the identity (zoo models take [0, 1] inputs); the masks keep every weight.
    assert torch.equal(state["normalize.mean"], torch.zeros_like(state["normalize.mean"]))
    assert all(bool(layer.mask.all()) for _, layer in prunable_layers(ours))


def test_a_zoo_model_of_another_architecture_is_refused(trades_wrn: nn.Module, zoo_dir: Path) -> None:
    save_zoo(zoo_dir, STANDARDISING)
    hydra = get_method("hydra")
    cases = {
        # Same layers and shapes as wrn-28-4, but its forward standardises each image: caught by the logits.
        ("wrn-28-4", f"zoo:{STANDARDISING}@{zoo_dir}"): "does not compute the spec's architecture",
        ("resnet18", f"zoo:{TRADES_WRN}@{zoo_dir}"): "another architecture",
        ("wrn-28-10", f"zoo:{TRADES_WRN}@{zoo_dir / 'nowhere'}"): f"weights of {TRADES_WRN} not found",
        ("wrn-28-10", f"zoo:Carmon2019@{zoo_dir}"): "is not in RobustBench's cifar10/Linf zoo; did you mean",
    }
    for (arch, value), words in cases.items():
        spec = spec_for(arch, value)
        with pytest.raises(ValueError, match=words):
            hydra.validate_model(spec, hydra.build_empty(spec, "meta"))
    with pytest.raises(ValueError, match="name a zoo model"):
        spec_for("wrn-28-10", "zoo:")


def test_lwm_prunes_a_zoo_model_end_to_end(trades_wrn: nn.Module, zoo_dir: Path, tmp_path: Path) -> None:
    """`bench run --method lwm --init-from zoo:NAME@DIR` (no fine-tuning, so the ticket is the zoo network's
    magnitude ticket): meta.json names the weights file and its sha256; the kept weights are the zoo network's."""
    data = tmp_path / "data"
    write_cifar(data, 10, n_train=50, n_test=10)
    out = tmp_path / "out"
    assert main(["run", "--method", "lwm", "--sparsity", "0.5", "--dataset", "cifar10", "--data-source", "full",
                 "--data-root", str(data), "--arch", "wrn-28-10", "--width", "1", "--finetune-epochs", "0",
                 "--init-from", f"zoo:{TRADES_WRN}@{zoo_dir}", "--eval-attacks", "fgsm", "--n-eval", "4",
                 "--latency", "false", "--device", "cpu", "--no-progress", "--out", str(out)]) == 0
    run = next((out / "runs").iterdir())
    meta = json.loads((run / "meta.json").read_text())
    weights = zoo_dir / "cifar10" / "Linf" / f"{TRADES_WRN}.pt"
    assert meta["init_from"] == {"path": str(weights), "sha256": file_sha256(weights), "zoo": f"{TRADES_WRN}@{zoo_dir}"}
    assert meta["measured_sparsity"] == pytest.approx(0.5, abs=1e-3)
    ticket: Dict[str, torch.Tensor] = torch.load(run / "ticket.pt", weights_only=True)
    first = trades_wrn.conv1.weight.detach()
    assert torch.equal(ticket["body.stem.weight"], first)
    kept = ticket["body.stem.mask"].bool()
    assert first.abs()[kept].min() >= first.abs()[~kept].max()


def test_a_zoo_model_that_returns_no_logits_is_one_error() -> None:
    """A forward returning a tuple was a TypeError deep in the check; now a ValueError naming the model."""

    class Pair(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> tuple:
            y = self.fc(x.flatten(1))
            return y, y

    class Mine(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x.flatten(1))

    with pytest.raises(ValueError, match="Pair.*does not return logits"):
        zoo_state_for(Pair(), Mine(), (1, 2, 2), "Pair")
