"""Our attacks against the reference libraries, on a small model adversarially trained here.

Same model, eps, steps and examples: PGD-20 vs torchattacks' PGD, CW-20 vs an
independent margin-loss PGD written below, AutoAttack rows vs a direct
``pyautoattack`` call.
"""
from __future__ import annotations

from typing import Tuple

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchattacks
from conftest import train_mlp
from pyautoattack import AutoAttack

from bench.attacks import make_attack
from bench.data import Split, to_float
from bench.evaluation.evaluate import evaluate

EPS = 0.1
TOLERANCE = 0.015
CPU = torch.device("cpu")


# Tiny models run fastest on one thread (conftest.py's fixture), and a shared CPU does not thrash.
pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def trained() -> Tuple[nn.Module, Split]:
    """An MLP trained for a few seconds with PGD-3 adversarial training; the 1000 test examples."""
    attack = make_attack("pgd", EPS, steps=3, step_size=0.04, early_stop=False)

    def loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(model(x), y) + F.cross_entropy(model(attack(model, x, y)), y)

    return train_mlp(64, 3000, 3, 128, 1e-3, loss)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Plain accuracy."""
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def reference_cw(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, alpha: float, steps: int) -> torch.Tensor:
    """Independent L-inf PGD on the CW margin (one-hot masking, last iterate, no early stop)."""
    gen = torch.Generator().manual_seed(123)
    x_adv = (x + (torch.rand(x.shape, generator=gen) * 2 - 1) * eps).clamp(0, 1)
    onehot = F.one_hot(y, 10).bool()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        z = model(x_adv)
        margin = z.masked_fill(onehot, -1e9).amax(1) - z[onehot]
        (g,) = torch.autograd.grad(margin.sum(), x_adv)
        x_adv = x_adv.detach() + alpha * g.sign()
        x_adv = (x + (x_adv - x).clamp(-eps, eps)).clamp(0, 1)
    return x_adv


def test_model_is_meaningfully_robust(trained: Tuple[nn.Module, Split]) -> None:
    """The comparison only means something if the model is neither broken nor trivially robust."""
    model, test = trained
    x, y = to_float(test.x, CPU), test.y
    robust = accuracy(model, make_attack("pgd20", EPS)(model, x, y), y)
    assert 0.2 < robust < accuracy(model, x, y)


def test_pgd20_matches_torchattacks(trained: Tuple[nn.Module, Split]) -> None:
    """Our PGD-20 is within 1.5 points of torchattacks' PGD-20 and never weaker beyond that."""
    model, test = trained
    x, y = to_float(test.x, CPU), test.y
    ours = accuracy(model, make_attack("pgd20", EPS)(model, x, y), y)
    torch.manual_seed(0)
    theirs = accuracy(model, torchattacks.PGD(model, eps=EPS, alpha=EPS / 4, steps=20, random_start=True)(x, y), y)
    assert abs(ours - theirs) <= TOLERANCE
    assert ours <= theirs + TOLERANCE


def test_cw20_matches_independent_margin_pgd(trained: Tuple[nn.Module, Split]) -> None:
    """Our CW-20 is within 1.5 points of a separately written margin-loss PGD."""
    model, test = trained
    x, y = to_float(test.x, CPU), test.y
    ours = accuracy(model, make_attack("cw20", EPS)(model, x, y), y)
    theirs = accuracy(model, reference_cw(model, x, y, EPS, EPS / 4, 20), y)
    assert abs(ours - theirs) <= TOLERANCE
    assert ours <= theirs + TOLERANCE


def _direct_autoattack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, **kw: object) -> torch.Tensor:
    """Per-example robustness from a direct pyautoattack call."""
    aa = AutoAttack(model, device=CPU, eps=EPS, norm="Linf", seed=0, **kw)
    _x_adv, y_adv = aa.run_standard_evaluation(x, y, batch_size=500)
    return y_adv == y


def test_autoattack_custom_row_equals_direct_call(trained: Tuple[nn.Module, Split]) -> None:
    """The harness's AutoAttack row (custom: APGD-T) equals pyautoattack on the same examples."""
    model, test = trained
    n = 100
    [row] = evaluate(model, test, ["autoattack-custom:attacks=apgd-t"], EPS, n, n, CPU)
    direct = _direct_autoattack(model, to_float(test.x[:n], CPU), test.y[:n], attacks=["apgd-t"], version="custom")
    assert row.scope == "alone"
    assert torch.equal(row.robust, direct)
    assert row.robust_acc == pytest.approx(float(direct.float().mean()))


@pytest.mark.slow
def test_autoattack_standard_row_equals_direct_call(trained: Tuple[nn.Module, Split]) -> None:
    """The harness's AutoAttack-standard row equals a direct standard pyautoattack call."""
    model, test = trained
    n = 100
    [row] = evaluate(model, test, ["autoattack"], EPS, n, n, CPU)
    direct = _direct_autoattack(model, to_float(test.x[:n], CPU), test.y[:n], version="standard")
    assert torch.equal(row.robust, direct)
