"""Attacks on random switches (R2S): against one candidate (non-adaptive) or the whole ensemble (adaptive).

A random switch picks one of ``n_candidates`` deterministic networks per
forward call; it exposes ``candidate(k)`` and ``ensemble()`` views (see
:class:`SwitchModel`). A model that is not a switch is its own single
candidate and its own one-member ensemble, so both attacks are plain PGD there.
"""
from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Any, Dict, Protocol, Sequence

import torch
import torch.nn as nn

from bench.attacks.pgd import PGD
from bench.attacks.registry import ATTACKS, AttackPreset


@typing.runtime_checkable
class SwitchModel(Protocol):
    """A randomised model that picks one of ``n_candidates`` deterministic networks per forward call."""

    @property
    def n_candidates(self) -> int: ...

    @property
    def sparsities(self) -> Sequence[float]: ...

    def candidate(self, k: int) -> nn.Module: ...

    def ensemble(self) -> nn.Module: ...

    def reseed(self, seed: int) -> None: ...


def as_switch(model: nn.Module) -> SwitchModel:
    """``model`` as a random switch; a ValueError when it is not one."""
    if not isinstance(model, SwitchModel):
        raise ValueError(f"{type(model).__name__} is not a random switch (n_candidates, sparsities, candidate(k), ensemble(), reseed())")
    return model


@dataclass(frozen=True)
class CandidatePGD(PGD):
    """PGD crafted against one candidate of a random switch (the R2S paper's non-adaptive attack).

    ``candidate=-1`` draws the candidate from ``seed`` (the same one for every
    call of this attack); ``candidate=k`` fixes it.
    """

    candidate: int = -1

    def check(self) -> None:
        """PGD's checks; the candidate is -1 or an index."""
        super().check()
        if self.candidate < -1:
            raise ValueError(f"candidate must be -1 (random) or a candidate index >= 0, got {self.candidate}")

    def settings(self) -> Dict[str, Any]:
        """PGD's settings; the version says which candidate the attack targets."""
        which = "random" if self.candidate == -1 else str(self.candidate)
        return {**super().settings(), "version": f"candidate:{which}"}

    def pick(self, n_candidates: int) -> int:
        """The candidate index this attack targets among ``n_candidates``."""
        if self.candidate == -1:
            return int(torch.randint(n_candidates, (1,), generator=torch.Generator().manual_seed(self.seed)))
        if self.candidate >= n_candidates:
            raise ValueError(f"candidate {self.candidate} out of range: the switch has {n_candidates} candidates")
        return self.candidate

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """PGD on the picked candidate's deterministic view."""
        target = model.candidate(self.pick(model.n_candidates)) if isinstance(model, SwitchModel) else model
        return super().perturb(target, x, y)


@dataclass(frozen=True)
class EnsemblePGD(PGD):
    """PGD on the mean logits of every candidate of a random switch at once (an adaptive attack)."""

    @property
    def adaptive(self) -> bool:
        """Attacking every candidate at once accounts for the switch's randomness."""
        return True

    def settings(self) -> Dict[str, Any]:
        """PGD's settings, version ``ensemble:mean-logits``."""
        return {**super().settings(), "version": "ensemble:mean-logits"}

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """PGD on the switch's mean-logit ensemble view."""
        return super().perturb(model.ensemble() if isinstance(model, SwitchModel) else model, x, y)


ATTACKS.add("r2s-nonadaptive", AttackPreset(CandidatePGD, {"steps": 20}),
            "PGD-20 crafted against one randomly drawn candidate of a random switch (the R2S paper's evaluation)")
ATTACKS.add("ensemble-pgd", AttackPreset(EnsemblePGD, {"steps": 20}),
            "PGD-20 on the mean logits of all candidates of a random switch (adaptive)")
