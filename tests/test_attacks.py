"""Invariants of every registered attack on a tiny linear model (seconds)."""
from __future__ import annotations

from typing import Tuple

import pytest
import torch
import torch.nn as nn

from bench.attacks import ATTACKS, PGD, AttackPreset, AutoAttackRunner, make_attack, no_param_grad

EPS = 0.05


# Tiny models run fastest on one thread (conftest.py's fixture), and a shared CPU does not thrash.
pytestmark = pytest.mark.usefixtures("single_thread")
ROW_SETTINGS = {"norm", "eps", "steps", "step_size", "restarts", "eot_samples", "version"}


def tiny(seed: int = 0) -> Tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A 10-class linear model on 1x8x8 images and 6 examples it classifies correctly."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()
    x = torch.rand(6, 1, 8, 8)
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, x, y


class NoisyLinear(nn.Module):
    """A randomised model: Gaussian noise on the input at every forward pass, also in eval mode."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x + 0.05 * torch.randn_like(x))


def fooled(model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-example misclassification."""
    with torch.no_grad():
        return model(x_adv).argmax(1) != y


@pytest.mark.parametrize("name", ATTACKS.names())
def test_attack_contract(name: str) -> None:
    """Same shape, inside the eps-ball and [0,1]; settings for the row; mode and grads untouched."""
    model, x, y = tiny()
    attack = make_attack(name, EPS)
    x_adv = attack(model, x, y)
    assert x_adv.shape == x.shape
    assert (x_adv - x).abs().max() <= EPS + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert ROW_SETTINGS <= set(attack.settings())
    assert attack.settings()["eps"] == EPS
    assert not model.training
    assert all(p.requires_grad for p in model.parameters())


def test_registry_rejects_duplicates_and_unknown_names() -> None:
    """Registering a name twice and asking for an unknown one are errors."""
    with pytest.raises(ValueError, match="duplicate"):
        ATTACKS.add("pgd20", AttackPreset(PGD))
    with pytest.raises(ValueError, match="choices"):
        make_attack("pgd7000", EPS)


def test_presets_have_their_documented_settings() -> None:
    """pgd20/50/100, cw20, fgsm and eot-pgd as described in `bench list`."""
    for name, steps in (("pgd20", 20), ("pgd50", 50), ("pgd100", 100)):
        s = make_attack(name, EPS).settings()
        assert (s["steps"], s["step_size"], s["loss"], s["random_start"]) == (steps, EPS / 4, "ce", True)
    assert make_attack("cw20", EPS).settings()["loss"] == "cw"
    fgsm = make_attack("fgsm", EPS).settings()
    assert (fgsm["steps"], fgsm["step_size"], fgsm["random_start"]) == (1, EPS, False)
    assert make_attack("eot-pgd", EPS).settings()["eot_samples"] == 20
    assert make_attack("autoattack-rand", EPS).settings()["eot_samples"] == 20


def test_name_overrides_set_any_field() -> None:
    """``base:key=value`` names carry settings through the comma-separated --attacks list."""
    pgd = make_attack("pgd:steps=50:restarts=3:step_size=0.01:random_start=false", EPS)
    assert isinstance(pgd, PGD)
    assert (pgd.steps, pgd.restarts, pgd.step_size, pgd.random_start) == (50, 3, 0.01, False)
    aa = make_attack("autoattack-custom:attacks=apgd-ce+square", EPS)
    assert isinstance(aa, AutoAttackRunner)
    assert aa.components == ("apgd-ce", "square")
    assert aa.settings()["version"] == "custom:apgd-ce+square"


@pytest.mark.parametrize("bad", ["pgd:foo=1", "pgd:steps=0", "pgd:steps=many", "pgd:eps=0.3", "pgd:steps",
                                 "autoattack:attacks=fab", "autoattack-plus:version=turbo", "cw:loss=l2"])
def test_bad_attack_names_are_value_errors(bad: str) -> None:
    """Every malformed name fails at lookup with a ValueError (what the CLI turns into exit 2)."""
    with pytest.raises(ValueError):
        ATTACKS.get(bad)


def test_bad_eps_is_value_error() -> None:
    """A non-positive budget is rejected."""
    with pytest.raises(ValueError, match="eps"):
        make_attack("pgd20", 0.0)


def test_early_stopping_never_weaker_than_last_iterate() -> None:
    """Keeping the first adversarial point fools at least the examples the last iterate fools."""
    model, x, y = tiny(1)
    x = torch.rand(200, 1, 8, 8)
    with torch.no_grad():
        y = model(x).argmax(1)
    early = fooled(model, PGD(0.02, steps=10)(model, x, y), y)
    last = fooled(model, PGD(0.02, steps=10, early_stop=False)(model, x, y), y)
    assert bool((early | ~last).all())
    assert 0 < int(early.sum()) < len(y)


def test_eot_equals_pgd_on_a_deterministic_model() -> None:
    """Averaging identical gradients changes nothing: EOT-PGD reduces to PGD."""
    model, x, y = tiny()
    assert torch.equal(PGD(EPS, steps=5, eot_samples=3)(model, x, y), PGD(EPS, steps=5)(model, x, y))


def test_eot_attacks_run_on_a_random_model() -> None:
    """EOT-PGD and AutoAttack-rand accept any module whose forward is random."""
    torch.manual_seed(0)
    model = NoisyLinear().eval()
    x = torch.rand(4, 1, 8, 8)
    y = torch.zeros(4, dtype=torch.long)
    for name in ("eot-pgd", "autoattack-rand"):
        x_adv = make_attack(name, EPS)(model, x, y)
        assert (x_adv - x).abs().max() <= EPS + 1e-6


def test_autoattack_breakdown_names_the_breaking_sub_attack() -> None:
    """Every point marked broken by sub-attack k is misclassified; unbroken points are unchanged."""
    model, x, y = tiny()
    runner = make_attack("autoattack", EPS)
    assert isinstance(runner, AutoAttackRunner)
    x_adv, broken_by = runner.detailed(model, x, y)
    hit = broken_by >= 0
    assert bool(fooled(model, x_adv, y)[hit].all())
    assert torch.equal(x_adv[~hit], x[~hit])
    assert int(broken_by.max()) < len(runner.components)


def test_no_param_grad_restores_flags() -> None:
    """Parameter requires_grad flags come back exactly as they were."""
    model = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 2))
    model[1].weight.requires_grad_(False)
    before = [p.requires_grad for p in model.parameters()]
    with no_param_grad(model):
        assert not any(p.requires_grad for p in model.parameters())
    assert [p.requires_grad for p in model.parameters()] == before


def test_training_pgd_returns_last_iterate_in_budget() -> None:
    """The training variant (no early stop) runs every step and stays in the ball."""
    model, x, y = tiny()
    x_adv = PGD(EPS, steps=3, early_stop=False)(model, x, y)
    assert (x_adv - x).abs().max() <= EPS + 1e-6
    assert not torch.equal(x_adv, x)
