"""Evaluation-time preparation (bench.nn.inference): the same function as the ticket, never touching the ticket."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from conftest import trained_convnet

from bench.core.io import model_fingerprint
from bench.data import load_data
from bench.evaluation.evaluate import evaluate, model_folder
from bench.nn.inference import PREPARATION, inference_model
from bench.nn.masking import MASKED_TYPES, apply_masks
from bench.nn.models import MODELS, ModelConfig, build_model


def ticket_like(arch: str, bn_affine: bool) -> nn.Module:
    """A masked model of ``arch`` at 80% sparsity with non-trivial BatchNorm statistics, in eval mode."""
    torch.manual_seed(0)
    model = build_model(arch, ModelConfig(3, 10, 32, (0.5, 0.4, 0.3), (0.25, 0.2, 0.3), 0.25, bn_affine, True))
    apply_masks(model, lambda _n, layer: torch.rand_like(layer.weight), 0.8)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            if m.weight is not None:
                m.weight.data.uniform_(0.5, 1.5)
                m.bias.data.uniform_(-0.2, 0.2)
    return model.eval()


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("bn_affine", [True, False])
@pytest.mark.parametrize("arch", MODELS.names())
def test_prepared_copy_computes_the_same_function(arch: str, bn_affine: bool, channels_last: bool) -> None:
    """Logits and input gradients match the ticket's to float rounding; no masked layer and no foldable BatchNorm
    is left; the ticket's parameters and buffers are unchanged."""
    # In float64: random deep nets have tiny input gradients, whose float32 rounding is not the point.
    model = ticket_like(arch, bn_affine).double()
    before = model_fingerprint(model)
    prepared = inference_model(model, channels_last=channels_last)
    assert model_fingerprint(model) == before
    x = torch.rand(6, 3, 32, 32, dtype=torch.float64)
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    a, b = model(xa), prepared(xb)
    assert torch.allclose(a, b, rtol=1e-9, atol=1e-10 * float(a.detach().abs().max()))
    y = torch.arange(6) % 10
    ga = torch.autograd.grad(nn.functional.cross_entropy(a, y), xa)[0]
    gb = torch.autograd.grad(nn.functional.cross_entropy(b, y), xb)[0]
    assert float(ga.norm()) > 0 and float((ga - gb).norm()) <= 1e-6 * float(ga.norm())
    assert not any(isinstance(m, MASKED_TYPES) for m in prepared.modules())
    assert not any(p.requires_grad for p in prepared.parameters())
    # Every BatchNorm right after a conv/linear layer is folded (pre-activation WRN blocks keep theirs).
    n_bn = sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    left = sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in prepared.modules())
    assert left < n_bn or n_bn == 0
    if arch in ("convnet", "mlp", "resnet18", "vgg16"):
        assert left == 0


def test_pruned_weights_stay_zero_in_the_copy() -> None:
    """The materialised weights are exactly weight * mask (before folding): zeros where the mask is 0."""
    model = ticket_like("lenet-300-100", True)  # no BatchNorm: nothing is folded
    prepared = inference_model(model)
    masked = [m for m in model.modules() if isinstance(m, MASKED_TYPES)]
    plain = [m for m in prepared.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    assert len(masked) == len(plain)
    for m, p in zip(masked, plain):
        assert torch.equal(p.weight, m.weight * m.mask)


def test_training_mode_is_refused() -> None:
    """BatchNorm in training mode normalises with batch statistics: nothing to fold."""
    with pytest.raises(ValueError, match="eval mode"):
        inference_model(ticket_like("convnet", True).train())


def test_prepared_evaluation_agrees_and_caches_apart(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """evaluate(prepare=True) gives the clean flags of the ticket and PGD-20 flags equal up to rounding-decided
    examples (at most 1 of 200), in its own cache folder."""
    data = load_data("fashion-mnist", "embedded")
    model = trained_convnet()
    runs = {p: evaluate(model, data.test, ("pgd20",), 0.1, 200, 0, torch.device("cpu"), tmp_path, prepare=p)
            for p in (False, True)}
    plain, prepared = runs[False][0], runs[True][0]
    assert plain.clean_acc == prepared.clean_acc and plain.clean_acc > 0.3
    assert int((plain.robust != prepared.robust).sum()) <= 1
    assert model_folder(tmp_path, model, PREPARATION) != model_folder(tmp_path, model)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        p.name for p in (model_folder(tmp_path, model), model_folder(tmp_path, model, PREPARATION)) if p is not None)


def test_evaluation_runs_without_tf32_and_restores_the_settings() -> None:
    """Inside evaluate() float32 convolutions and matmuls are IEEE (cuDNN defaults to TF32); after it, as before."""
    seen = []

    class Probe(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append((torch.backends.cudnn.conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision))
            return x.flatten(1)[:, :10] * 0 + torch.arange(10.0)

    data = load_data("fashion-mnist", "embedded")
    before = (torch.backends.cudnn.conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision)
    evaluate(Probe(), data.test, ("pgd20",), 0.1, 20, 0, torch.device("cpu"), probes=False)
    assert seen and set(seen) == {("ieee", "ieee")}
    assert (torch.backends.cudnn.conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision) == before
