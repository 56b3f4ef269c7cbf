"""Compacted copies compute the ticket's function with the pruned work gone; their cost is counted by hand; the
latency stage measures once per run."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import pytest
import torch
import torch.nn as nn
from conftest import TINY  # noqa: E402 - the shared budget (tests/ is on sys.path)

from bench.core.results import UNREPEATABLE_COLUMNS
from bench.harness import LATENCY_COLUMNS, run_spec
from bench.nn.compaction import AddMap, SparseLinear, compacted, dense_twin
from bench.nn.cost import model_cost
from bench.nn.latency import ticket_latency
from bench.nn.masking import MaskedConv2d, MaskedLinear, apply_masks, prunable_layers
from bench.nn.models import Classifier, ModelConfig, Normalize, build_model
from bench.spec import RunSpec

Scores = Callable[[str, nn.Module], torch.Tensor]


def random_scores(_name: str, layer: nn.Module) -> torch.Tensor:
    """Uniform random scores of a layer's weight shape."""
    return torch.rand(layer.weight.shape)  # type: ignore[arg-type]


@torch.no_grad()
def lived_in(model: nn.Module, seed: int = 0) -> nn.Module:
    """``model`` with non-trivial BatchNorm statistics and affine tensors and linear biases, in eval mode: a pruned
    channel's constant is then non-zero and must be carried into the next layer."""
    gen = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.running_mean.copy_(torch.randn(module.num_features, generator=gen) * 0.3)  # type: ignore[union-attr]
            module.running_var.copy_(torch.rand(module.num_features, generator=gen) + 0.5)  # type: ignore[union-attr]
            if module.affine:
                module.weight.copy_(torch.rand(module.num_features, generator=gen) + 0.5)
                module.bias.copy_(torch.randn(module.num_features, generator=gen))
        elif isinstance(module, nn.Linear) and module.bias is not None:
            module.bias.copy_(torch.randn(module.bias.shape, generator=gen) * 0.1)
    return model.eval()


def build(arch: str, width: float, affine: bool = True, size: int = 28, channels: int = 1) -> nn.Module:
    """A masked network of the registry, seeded."""
    torch.manual_seed(0)
    return build_model(arch, ModelConfig(channels, 10, size, (0.5,) * channels, (0.25,) * channels, width, affine))


def same_logits(a: nn.Module, b: nn.Module, shape: tuple) -> None:
    """Both networks give the same logits (float32 summation order aside) and the same decisions."""
    x = torch.rand(32, *shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        la, lb = a(x), b(x)
    assert torch.allclose(la, lb, rtol=1e-4, atol=1e-5), float((la - lb).abs().max())
    assert torch.equal(la.argmax(1), lb.argmax(1))


@pytest.mark.parametrize("arch,affine", [("convnet", True), ("convnet", False), ("mlp", True), ("lenet-300-100", True),
                                         ("vgg16", True)])
def test_channel_ticket_compacts_to_the_same_function(arch: str, affine: bool) -> None:
    """A channel ticket's compacted copy has its zero channels physically removed and the stored ticket's logits,
    also when a pruned channel's BatchNorm makes it a non-zero constant (affine: carried by a fixed map / bias)."""
    shape = (3, 32, 32) if arch == "vgg16" else (1, 28, 28)
    model = build(arch, 0.25, affine, size=shape[1], channels=shape[0])
    apply_masks(model, random_scores, 0.6, granularity="channel")
    model = lived_in(model)
    copy = compacted(model, shape)
    assert copy is not None and copy.kind.startswith("channels")
    same_logits(model, copy.model, shape)
    # The layers are narrower: the compacted copy computes fewer multiply-accumulates than the ticket's non-zeros.
    ticket, small = model_cost(model, shape), model_cost(copy.model, shape)
    assert small["macs_ticket"] < ticket["macs_ticket"]
    if arch == "convnet" and affine:
        # Constants through padded convolutions need their map (it differs at the borders).
        assert any(isinstance(m, AddMap) for m in copy.model.modules())


def test_weight_ticket_uses_csr_where_sparse() -> None:
    """A 99 % weight ticket's large linear layer runs as a CSR product, with the same logits."""
    model = lived_in(build("convnet", 0.25))
    apply_masks(model, random_scores, 0.99)
    copy = compacted(model, (1, 28, 28))
    assert copy is not None and copy.kind.endswith("+sparse")
    assert any(isinstance(m, SparseLinear) for m in copy.model.modules())
    same_logits(model, copy.model, (1, 28, 28))


def test_resnet_is_baked() -> None:
    """A network with skip connections is baked (plain layers holding weight * mask), same logits."""
    model = build("resnet18", 0.125, size=32, channels=3)
    apply_masks(model, random_scores, 0.5, granularity="channel")
    model = lived_in(model)
    copy = compacted(model, (3, 32, 32))
    assert copy is not None and copy.kind.startswith("baked")
    assert not prunable_layers(copy.model)
    same_logits(model, copy.model, (3, 32, 32))


def test_dense_twin_is_the_unpruned_network() -> None:
    """The dense twin computes with every weight (masks ignored)."""
    model = lived_in(build("mlp", 0.25))
    reference = build("mlp", 0.25)
    reference.load_state_dict(model.state_dict())
    apply_masks(model, random_scores, 0.9)
    same_logits(reference.eval(), dense_twin(model), (1, 28, 28))


def test_compacted_cost_by_hand() -> None:
    """Channel compaction of a 2-layer MLP by hand: 784 -> 10 hidden (4 removed) -> 10 classes."""
    torch.manual_seed(0)
    model = build("lenet-300-100", 10 / 300)  # hidden 10 and 3 units
    layers = prunable_layers(model)
    with torch.no_grad():
        layers[0][1].mask[6:] = 0  # 4 of 10 hidden units go
    copy = compacted(model.eval(), (1, 28, 28))
    assert copy is not None
    hidden2 = layers[1][1].weight.shape[0]
    cost = model_cost(copy.model, (1, 28, 28))
    assert cost["macs_dense"] == 784 * 6 + 6 * hidden2 + hidden2 * 10
    same_logits(model, copy.model, (1, 28, 28))


def test_ticket_latency_figures() -> None:
    """Every figure is there and positive; the speedup is the dense twin's latency over the compacted copy's."""
    model = build("mlp", 0.1)
    apply_masks(model, random_scores, 0.5, granularity="channel")
    figures = ticket_latency(model.eval(), (1, 28, 28))
    for batch in (1, 128):
        for kind in ("stored", "compacted", "dense"):
            assert figures[f"{kind}_b{batch}_ms"] > 0
        assert figures[f"speedup_b{batch}"] == pytest.approx(figures[f"dense_b{batch}_ms"] / figures[f"compacted_b{batch}_ms"])
    assert figures["compacted_params"] < model_cost(model, (1, 28, 28))["params"]


def test_measured_latency_columns_are_unrepeatable() -> None:
    """Every timing a row carries from latency.json is among the columns row comparisons leave out."""
    timings = {row for key, row in LATENCY_COLUMNS.items() if key.endswith("_ms") or key.startswith("speedup")}
    assert timings and timings <= set(UNREPEATABLE_COLUMNS)


def test_latency_measured_once_per_run(tmp_path: Path, single_thread: None) -> None:
    """The harness writes latency.json once (a rerun reads it), rows carry its columns; --latency false skips it."""
    spec = RunSpec(**TINY, sparsity=0.5, granularity="channel", method="random")
    rows = run_spec(spec, tmp_path, show=False)
    path = tmp_path / "runs" / rows["run_id"].iloc[0] / "latency.json"
    first = json.loads(path.read_text())
    assert rows["latency_b128_ms"].iloc[0] == pytest.approx(first["compacted_b128_ms"], rel=1e-5)
    assert rows["speedup_b1"].iloc[0] == pytest.approx(first["speedup_b1"], rel=1e-5)
    stamp = path.stat().st_mtime_ns
    run_spec(spec, tmp_path, show=False)
    assert path.stat().st_mtime_ns == stamp
    off = RunSpec(**TINY, sparsity=0.5, method="random", latency=False, seed=1)
    rows = run_spec(off, tmp_path, show=False)
    assert not (tmp_path / "runs" / rows["run_id"].iloc[0] / "latency.json").exists()
    assert "latency_b1_ms" not in rows


def odd_net(padding_mode: str = "zeros") -> nn.Module:
    """A classifier whose convs have biases, a stride, a dilation and (optionally) another padding mode, with a
    padded max-pool: the geometry a removed channel's constant map has to follow."""
    torch.manual_seed(0)
    body = nn.Sequential(
        MaskedConv2d(1, 6, 3, padding=1, bias=True, padding_mode=padding_mode), nn.BatchNorm2d(6), nn.ReLU(),
        MaskedConv2d(6, 8, 3, stride=2, padding=2, dilation=2, bias=True), nn.BatchNorm2d(8), nn.ReLU(),
        nn.MaxPool2d(2, padding=1), nn.Flatten(), MaskedLinear(8 * 8 * 8, 10))
    return Classifier(Normalize((0.5,), (0.25,)), body)


@pytest.mark.parametrize("padding_mode, kind", [("zeros", "channels"), ("reflect", "baked")])
def test_conv_geometry_and_padding_modes(padding_mode: str, kind: str) -> None:
    """Biases, stride, dilation and a padded pool compact by channels with the same logits; a padding mode other
    than zeros (the removed channels' map assumes zero padding) is baked, also with the same logits."""
    model = odd_net(padding_mode)
    apply_masks(model, random_scores, 0.5, granularity="channel")
    model = lived_in(model)
    copy = compacted(model, (1, 28, 28))
    assert copy is not None and copy.kind == kind
    same_logits(model, copy.model, (1, 28, 28))


def test_a_layer_that_lost_every_channel_compacts() -> None:
    """A layer whose effective weights are all zero (possible with a global ranking) keeps one channel computing its
    bias: the compacted copy runs and gives the ticket's logits."""
    model = lived_in(odd_net())
    with torch.no_grad():
        prunable_layers(model)[1][1].mask.zero_()
    copy = compacted(model, (1, 28, 28))
    assert copy is not None and copy.kind == "channels"
    same_logits(model, copy.model, (1, 28, 28))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_compacted_copies_stay_on_the_models_device() -> None:
    """Baked and channel copies of a CUDA model are CUDA models with the same logits."""
    for arch, shape in (("resnet18", (3, 32, 32)), ("convnet", (1, 28, 28))):
        model = build(arch, 0.125, size=shape[1], channels=shape[0])
        apply_masks(model, random_scores, 0.5, granularity="channel")
        model = lived_in(model).cuda()
        copy = compacted(model, shape)
        assert copy is not None and {p.device.type for p in copy.model.parameters()} == {"cuda"}
        x = torch.rand(8, *shape, device="cuda")
        with torch.no_grad():
            assert torch.allclose(model(x), copy.model(x), rtol=1e-3, atol=1e-4)
