"""The one attack contract: ``attack(model, x, y) -> x_adv``.

Every attack is a frozen dataclass deriving from :class:`Attack` with the
budget ``eps`` first and a ``seed``. Inputs are in [0,1] and normalisation
lives inside the model. The base class's final ``__call__`` (and
:meth:`Attack.detailed`) switches parameter gradients off while the attack
runs and re-checks the eps-ball and the [0,1] box on what it returns; the
harness owns train/eval mode. Evaluation asks an attack what it is
(``cascade_only``, ``whitebox``, ``adaptive``, ``cost``, ``components``,
``black_box_components``, ``batch_size``, ``settings()``), never its class.
"""
from __future__ import annotations

import abc
import contextlib
from dataclasses import dataclass
from typing import Any, ClassVar, Dict, FrozenSet, Iterator, Optional, Tuple, final

import torch
import torch.nn as nn

from bench.attacks.norms import check_norm, perturbation_norm
from bench.core.config import check_choices

# Slack on the eps-ball check (float rounding of x + delta).
BUDGET_SLACK = 1e-5


@contextlib.contextmanager
def no_param_grad(model: nn.Module) -> Iterator[None]:
    """Temporarily stop gradients to every parameter (input gradients only)."""
    saved = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in saved:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in saved:
            p.requires_grad_(flag)


def check_budget(x: torch.Tensor, x_adv: torch.Tensor, eps: float, norm: str = "Linf") -> None:
    """Never trust an attack's output blindly: re-check the eps-ball in ``norm`` and the [0,1] box (a NaN point
    fails too)."""
    if x_adv.shape != x.shape or not bool(torch.isfinite(x_adv).all()):
        raise RuntimeError("attack returned a point that is not a finite input of the right shape")
    # The slack is relative for L2/L1, whose norms sum many rounded coordinates.
    slack = BUDGET_SLACK * (1 if norm == "Linf" else max(1.0, eps))
    outside = len(x) > 0 and bool((perturbation_norm(x_adv - x, norm) > eps + slack).any())
    if outside or x_adv.min() < 0 or x_adv.max() > 1:
        raise RuntimeError(f"attack returned a point outside the {norm} eps-ball or [0,1]")


@dataclass(frozen=True)
class Attack(abc.ABC):
    """Base class of every attack: budget ``eps`` (pixel units) in the threat model ``norm``, and a ``seed``.

    Subclasses implement :meth:`perturb` (and :meth:`perturb_detailed` when
    they know which of their components broke each point), :meth:`settings`
    and :attr:`cost`.
    """

    eps: float
    seed: int = 0
    norm: str = "Linf"

    # The attack's name in error messages ("unknown PGD loss ...").
    label: ClassVar[str] = "attack"
    # Cascade placement: cheap attacks run on every clean-correct point, cascade-only ones on the survivors.
    cascade_only: ClassVar[bool] = False
    # Whether the attack uses the model's gradients (black-box ones only query it).
    whitebox: ClassVar[bool] = True
    # The threat models the attack implements.
    norms: ClassVar[Tuple[str, ...]] = ("Linf",)

    def __post_init__(self) -> None:
        check_choices(self, self.label)
        check_norm(self.norm)
        if self.norm not in self.norms:
            raise ValueError(f"{self.label} attacks in {', '.join(self.norms)} only, not {self.norm}")
        self.check()

    def check(self) -> None:
        """Raise ``ValueError`` for settings out of range (fields with ``choices`` are already checked)."""

    @property
    def adaptive(self) -> bool:
        """Whether the attack accounts for a randomised model (EOT gradients, whole-ensemble attack)."""
        return False

    @property
    @abc.abstractmethod
    def cost(self) -> int:
        """Forward(-backward) passes per example in the worst case (orders the cascade)."""

    @property
    def components(self) -> Tuple[str, ...]:
        """The sub-attacks run in order ("which component broke a point" indexes this); ``()``: the attack itself."""
        return ()

    @property
    def black_box_components(self) -> FrozenSet[str]:
        """The components that only query the model."""
        return frozenset() if self.whitebox else frozenset(self.components)

    @property
    def batch_size(self) -> Optional[int]:
        """Examples per call the attack wants (``None``: the harness's chunk size)."""
        return None

    @abc.abstractmethod
    def settings(self) -> Dict[str, Any]:
        """Settings recorded in every result row (norm, eps, steps, step_size, restarts, loss, ..., version)."""

    @abc.abstractmethod
    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Adversarial points for ``(x, y)``; called with parameter gradients off."""

    def perturb_detailed(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Adversarial points and, per example, the index in ``components`` that broke it (-1: none; ``None``: unknown)."""
        return self.perturb(model, x, y), None

    @final
    def detailed(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """:meth:`perturb_detailed` with parameter gradients off and the budget checked."""
        x = x.detach()
        with no_param_grad(model):
            x_adv, broken_by = self.perturb_detailed(model, x, y)
        check_budget(x, x_adv, self.eps, self.norm)
        return x_adv.detach(), broken_by

    @final
    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Adversarial points for ``(x, y)`` (parameter gradients off, budget checked)."""
        x = x.detach()
        with no_param_grad(model):
            x_adv = self.perturb(model, x, y)
        check_budget(x, x_adv, self.eps, self.norm)
        return x_adv.detach()
