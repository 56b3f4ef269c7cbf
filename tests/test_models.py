"""Every registered architecture builds from masked layers, counts its prunable weights, and trains through its masks."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

import pytest
import torch
import torch.nn.functional as F

from bench.commands.listing import prunable_weights, registry_listing
from bench.data import dataset_info
from bench.harness import find_or_load_ticket
from bench.nn.masking import apply_masks, prunable_layers
from bench.nn.models import MODELS, VGG16_LAYERS, ModelConfig, build_model
from bench.spec import METHODS, RunSpec


def config(dataset: str, width: float) -> ModelConfig:
    """The model config of ``dataset``'s inputs."""
    info = dataset_info(dataset)
    return ModelConfig(info.in_channels, info.num_classes, info.image_size, info.mean, info.std, width)


@pytest.mark.parametrize("dataset", ["cifar10", "fashion-mnist"])
@pytest.mark.parametrize("arch", MODELS.names())
def test_every_architecture_runs_one_masked_step(arch: str, dataset: str) -> None:
    """At a tiny width: logits of the right shape, half the prunable weights masked, gradients through the masks."""
    torch.manual_seed(0)
    model = build_model(arch, config(dataset, 0.125))
    layers = prunable_layers(model)
    assert layers and prunable_weights(arch, dataset, 0.125) == sum(layer.weight.numel() for _n, layer in layers)
    apply_masks(model, lambda _n, layer: torch.rand(layer.weight.shape), 0.5)
    info = dataset_info(dataset)
    x = torch.rand(4, info.in_channels, info.image_size, info.image_size)
    logits = model(x)
    assert logits.shape == (4, info.num_classes)
    F.cross_entropy(logits, torch.arange(4) % info.num_classes).backward()
    assert all(layer.weight.grad is not None and torch.isfinite(layer.weight.grad).all() for _n, layer in layers)


def test_vgg16_counts_as_configuration_d() -> None:
    """VGG-16's prunable weights at width 1, counted by hand from configuration D and the 2x2-pooled 256-256 head."""
    channels = [c for c in VGG16_LAYERS if c != "M"]
    convs = sum(9 * cin * cout for cin, cout in zip([3] + channels[:-1], channels))
    head = 512 * 4 * 256 + 256 * 256 + 256 * 10
    assert len(channels) == 13
    assert prunable_weights("vgg16") == convs + head == 15_302_848


def test_listing_shows_sizes_and_eps() -> None:
    text = registry_listing()
    assert "15,302,848" in text and "11,164,352" in text
    assert "73,257 / 26,032" in text and "8/255" in text


# Hyperparameters that keep a method's tiny VGG run short (R2S: two candidates; ALTH: one pruning level).
TINY_HPARAMS: Dict[str, Dict[str, Any]] = {"r2s": {"candidates": (0.5, 0.3)}, "alth": {"prune_fraction": 0.5}}


@pytest.mark.parametrize("method", METHODS.names())
def test_vgg16_finds_a_ticket_with_every_method(method: str, tmp_path: Path) -> None:
    """VGG-16 at a tiny width and budget through every method: a ticket at its target sparsity (dense: 0)."""
    sparsity = 0.0 if METHODS.get(method).dense else 0.5
    hparams = TINY_HPARAMS.get(method)
    spec = RunSpec(method=method, arch="vgg16", width=0.0625, sparsity=sparsity, epochs=1, train_steps=1, n_train=128,
                   batch_size=64, n_eval=16, eval_attacks=("pgd20",), device="cpu", hparams=hparams)
    ticket = find_or_load_ticket(spec, tmp_path)
    assert abs(ticket.meta["measured_sparsity"] - sparsity) < 0.02, ticket.meta["measured_sparsity"]


PRESETS = sorted((Path(__file__).resolve().parent.parent / "configs" / "presets").glob("*.yaml"))
PAPER_ARCHITECTURES = {"rst-resnet18-cifar10": "resnet18", "rst-wrn-34-10-cifar10": "wrn-34-10",
                       "hydra-wrn-28-4-cifar10": "wrn-28-4", "apb-resnet18-cifar10": "resnet18",
                       "apb-vgg16-cifar10": "vgg16"}


@pytest.mark.parametrize("preset", PRESETS, ids=[p.stem for p in PRESETS])
def test_every_preset_is_a_valid_spec_whose_network_builds(preset: Path) -> None:
    """Each preset is a spec (unknown keys would raise); its architecture builds for its dataset with weights to prune."""
    from bench.core.config import load_yaml

    spec = RunSpec.from_dict(load_yaml(str(preset)))
    assert prunable_weights(spec.arch, spec.dataset, spec.width) > 0
    assert PAPER_ARCHITECTURES.get(preset.stem, spec.arch) == spec.arch


def test_the_papers_architectures_have_presets() -> None:
    assert set(PAPER_ARCHITECTURES) <= {p.stem for p in PRESETS}
