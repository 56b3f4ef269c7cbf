"""A new attack or trainer is one class registered in one file: here, this test file alone.

The toy attack below is registered in this file only; the cascade places
it, the flags check it, and it reaches result rows and tables with no other
edit. The same for a toy trainer: the spec accepts it, the training loop
calls it, and ``bench list`` shows it.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Dict, Iterator, Tuple

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from bench.attacks import ATTACKS, PGD, Attack, AttackPreset
from bench.commands.listing import registry_listing
from bench.core.config import spec_field
from bench.evaluation.evaluate import evaluate
from bench.harness import run_spec
from bench.reporting.render import to_markdown
from bench.reporting.tables import build_table
from bench.spec import METHODS, RunSpec
from bench.trainers import TRAINERS, Trainer, TrainSettings

EPS = 0.3


@dataclass(frozen=True)
class RandomCorners(Attack):
    """Black-box random search over the corners of the eps-ball: keeps the first corner that fools the model."""

    tries: int = 30

    cascade_only: ClassVar[bool] = True
    whitebox: ClassVar[bool] = False

    @property
    def cost(self) -> int:
        return self.tries

    def settings(self) -> Dict[str, Any]:
        return {"norm": "Linf", "eps": self.eps, "steps": self.tries, "step_size": self.eps, "restarts": 1,
                "loss": "", "random_start": True, "eot_samples": 1, "version": "corners"}

    @torch.no_grad()
    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        gen = torch.Generator().manual_seed(self.seed)
        best = x.clone()
        open_ = torch.ones(len(x), dtype=torch.bool)
        for _ in range(self.tries):
            corner = (x + self.eps * (torch.randint(0, 2, x.shape, generator=gen) * 2 - 1)).clamp(0, 1)
            hit = open_ & (model(corner).argmax(1) != y)
            best[hit] = corner[hit]
            open_ &= ~hit
        return best


class Quantised(nn.Module):
    """A linear classifier on inputs rounded to {0, 1}: its input gradient is zero (masked) everywhere."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(64, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(torch.round(x).flatten(1))


@pytest.fixture
def toy_attack() -> Iterator[str]:
    """``toy-corners`` registered for one test only."""
    ATTACKS.add("toy-corners", AttackPreset(RandomCorners), "black-box random corners (test only)")
    yield "toy-corners"
    ATTACKS.remove("toy-corners")


def test_toy_attack_is_cascaded_and_flagged(toy_attack: str, tiny_bundle: Any) -> None:
    """On a gradient-masked model PGD fails and the black-box toy succeeds: the cascade runs it last, flags fire."""
    model = Quantised().eval()
    test = tiny_bundle.test
    results = {r.attack: r for r in evaluate(model, test, [toy_attack, "pgd20"], EPS, 100, 100, torch.device("cpu"))}
    # Cascade: cascade-only runs after PGD, on PGD's survivors.
    assert results[toy_attack].scope == "after:pgd20"
    assert results[toy_attack].robust_acc <= results["pgd20"].robust_acc
    # The black-box component broke points every white-box attack failed on; gradients are masked.
    assert "square_beats_whitebox" in results[toy_attack].flags
    assert "vanishing_gradients" in results["pgd20"].flags


def test_toy_attack_reaches_rows_and_tables(toy_attack: str, tmp_path: Path, tiny_spec_kwargs: Dict[str, Any]) -> None:
    """``bench run`` with the toy attack writes its row; the tables pick it up as an attack like any other."""
    spec = RunSpec(**{**tiny_spec_kwargs, "method": "rst", "eval_attacks": ("pgd20", toy_attack)})
    rows = run_spec(spec, tmp_path, show=False)
    toy = rows[rows["attack"] == toy_attack].iloc[0]
    assert toy["scope"] == "after:pgd20" and toy["version"] == "corners"
    table = build_table(rows, "sparsity", attack=toy_attack)
    assert toy_attack in to_markdown(table)


class ScaledCE(Trainer):
    """Madry PGD-AT with the loss scaled by 0.5 (a trainer defined in a test file)."""

    calls: ClassVar[int] = 0

    def craft(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: TrainSettings, attack: PGD,
              gen: torch.Generator) -> Tuple[torch.Tensor, int]:
        ScaledCE.calls += 1
        return attack(model, x, y), len(x) * cfg.train_steps

    def loss(self, model: nn.Module, x: torch.Tensor, x_in: torch.Tensor, y: torch.Tensor,
             cfg: TrainSettings) -> Tuple[torch.Tensor, int]:
        return 0.5 * F.cross_entropy(model(x_in), y), len(x)


@pytest.fixture
def toy_trainer() -> Iterator[str]:
    """``toy-half`` registered for one test only."""
    TRAINERS.add("toy-half", ScaledCE(), "half-weighted PGD-AT (test only)")
    yield "toy-half"
    TRAINERS.remove("toy-half")


def test_toy_trainer_is_a_choice_trains_and_is_listed(toy_trainer: str, tmp_path: Path,
                                                       tiny_spec_kwargs: Dict[str, Any]) -> None:
    """The spec accepts the new trainer, the shared loop calls it, rows record it, ``bench list`` shows it."""
    with pytest.raises(ValueError, match="unknown trainer 'toy-nope'"):
        RunSpec(**{**tiny_spec_kwargs, "trainer": "toy-nope"})
    ScaledCE.calls = 0
    rows = run_spec(RunSpec(**{**tiny_spec_kwargs, "method": "rst", "trainer": toy_trainer}), tmp_path, show=False)
    assert ScaledCE.calls > 0
    assert set(rows["trainer"]) == {toy_trainer}
    assert "toy-half" in registry_listing()


def _choice_fields() -> Iterator[Tuple[str, str, Tuple[str, ...]]]:
    """(method, hyperparameter, choices) for every hyperparameter with choices, over the method registry."""
    for name, entry in METHODS.items():
        for f in dataclasses.fields(entry.obj.Hparams):
            if "choices" in f.metadata:
                yield name, f.name, tuple(f.metadata["choices"])


@pytest.mark.parametrize("method, field, choices", list(_choice_fields()), ids=lambda v: str(v))
def test_every_hparam_choice_is_checked(method: str, field: str, choices: Tuple[str, ...],
                                        tiny_spec_kwargs: Dict[str, Any]) -> None:
    """A value outside a hyperparameter's choices is a ValueError naming the method, the field and the choices."""
    with pytest.raises(ValueError, match=f"unknown {method} {field} 'bogus'; choices: {choices[0]}"):
        RunSpec(**{**tiny_spec_kwargs, "method": method, "sparsity": 0.0 if method == "dense-at" else 0.5,
                   "hparams": {field: "bogus"}})


@pytest.mark.parametrize("method", METHODS.names())
def test_unknown_hparam_is_rejected(method: str, tiny_spec_kwargs: Dict[str, Any]) -> None:
    """Every method's hyperparameters reject unknown keys."""
    with pytest.raises(ValueError, match="unknown .* key"):
        RunSpec(**{**tiny_spec_kwargs, "method": method, "hparams": {"no_such_hparam": 1}})


def test_spec_field_choices_reach_argparse() -> None:
    """``spec_field(choices=...)`` is what the generated flag offers (one source for CLI and validation)."""
    f = spec_field("a", "help", choices=("a", "b"))
    assert f.metadata["choices"] == ("a", "b") and f.default == "a"
