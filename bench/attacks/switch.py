"""Attacks on random switches (R2S): against one candidate (non-adaptive) or the whole ensemble (adaptive).

A random switch picks one of ``n_candidates`` deterministic networks per
forward call; it exposes ``candidate(k)`` and ``ensemble()`` views (see
:class:`SwitchModel`). A model that is not a switch is its own single
candidate and its own one-member ensemble, so both attacks are plain PGD there.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional

import torch
import torch.nn as nn

from bench.attacks.expectation import SwitchModel
from bench.attacks.pgd import PGD
from bench.attacks.registry import ATTACKS, AttackPreset


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
        protocol = "early-stop" if self.early_stop else "full-steps"
        return {**super().settings(), "version": f"candidate:{which}:{protocol}"}

    def pick(self, n_candidates: int) -> int:
        """The candidate index this attack targets among ``n_candidates``."""
        if self.candidate == -1:
            return int(torch.randint(n_candidates, (1,), generator=torch.Generator().manual_seed(self.seed)))
        if self.candidate >= n_candidates:
            raise ValueError(f"candidate {self.candidate} out of range: the switch has {n_candidates} candidates")
        return self.candidate

    @property
    def adaptive(self) -> bool:
        """Crafted on one deterministic candidate: never adaptive, EOT samples or not."""
        return False

    def gradient_model(self, model: nn.Module) -> nn.Module:
        """The picked candidate's deterministic view."""
        return model.candidate(self.pick(model.n_candidates)) if isinstance(model, SwitchModel) else model

    def judged_on(self, model: nn.Module) -> Optional[nn.Module]:
        """The R2S paper's protocol: points judged on the source candidate only (deterministic rules)."""
        return None


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

    def gradient_model(self, model: nn.Module) -> nn.Module:
        """The switch's mean-logit ensemble view."""
        return model.ensemble() if isinstance(model, SwitchModel) else model


ATTACKS.add("r2s-nonadaptive", AttackPreset(CandidatePGD, {"steps": 20}),
            "PGD-20 crafted against one randomly drawn candidate of a random switch (the R2S paper's evaluation)")
ATTACKS.add("r2s-nonadaptive-full", AttackPreset(CandidatePGD, {"steps": 20, "early_stop": False}),
            "PGD-20 crafted against one random candidate, last iterate of all 20 steps (transfers better than early-stopped points)")
ATTACKS.add("ensemble-pgd", AttackPreset(EnsemblePGD, {"steps": 20}),
            "PGD-20 on the mean logits of all candidates of a random switch (adaptive)")
