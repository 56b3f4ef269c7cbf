"""AutoAttack through PyPI ``pyautoattack``: standard, plus, rand, custom and each sub-attack alone."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Dict, FrozenSet, Optional, Tuple

import torch
import torch.nn as nn
from pyautoattack import AutoAttack
from pyautoattack.autopgd_base import APGDAttack

from bench.attacks.base import Attack
from bench.attacks.expectation import expected_correct, is_randomized
from bench.attacks.registry import ATTACKS, AttackPreset
from bench.core.config import spec_field
from bench.core.progress import bar

AA_VERSIONS: Dict[str, Tuple[str, ...]] = {
    "standard": ("apgd-ce", "apgd-t", "fab-t", "square"),
    "plus": ("apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t"),
    "rand": ("apgd-ce", "apgd-dlr"),
    "custom": ("apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t"),
}
# Sub-attacks that only query the model.
BLACK_BOX = frozenset({"square"})
# Rough forward(-backward) passes per example of each sub-attack (orders the AutoAttack family).
PASSES = {"apgd-ce": 100, "apgd-dlr": 100, "apgd-t": 900, "fab": 100, "fab-t": 900, "square": 5000}
# The untargeted APGD sub-attacks and their losses (run directly on randomised models).
APGD_LOSSES = {"apgd-ce": "ce", "apgd-dlr": "dlr"}
# The rand version averages APGD gradients over this many forward passes.
RAND_EOT = 20


@dataclass(frozen=True)
class AutoAttackRunner(Attack):
    """AutoAttack through PyPI ``pyautoattack``.

    ``version`` is standard, plus, rand or custom. With standard/plus/rand,
    ``attacks`` (optional) restricts the run to some of that version's
    attacks with that version's settings (how ``apgd-t`` or ``square`` run on
    their own). With custom, ``attacks`` is the list run with pyautoattack's
    custom settings. Sub-attacks run one after another, each on the points
    still robust, exactly as in ``run_standard_evaluation``, so which
    sub-attack broke each point is known.
    """

    version: str = spec_field("standard", "standard | plus | rand | custom", choices=tuple(AA_VERSIONS))
    attacks: Tuple[str, ...] = ()
    batch_size: int = 500  # examples per call (pyautoattack batches within it)

    label: ClassVar[str] = "AutoAttack"
    cascade_only: ClassVar[bool] = True
    norms: ClassVar[Tuple[str, ...]] = ("Linf", "L2", "L1")

    def check(self) -> None:
        """The sub-attacks belong to the version; custom names them; a positive batch size."""
        allowed = AA_VERSIONS[self.version]
        bad = [a for a in self.attacks if a not in allowed]
        if bad:
            raise ValueError(f"AutoAttack {self.version} has no attack(s) {', '.join(bad)}; choices: {', '.join(allowed)}")
        if self.version == "custom" and not self.attacks:
            raise ValueError("AutoAttack custom needs attacks=..., e.g. autoattack-custom:attacks=apgd-ce+square")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")

    @property
    def components(self) -> Tuple[str, ...]:
        """The sub-attacks run, in order."""
        return tuple(self.attacks) if self.attacks else AA_VERSIONS[self.version]

    @property
    def black_box_components(self) -> FrozenSet[str]:
        """Square only queries the model."""
        return BLACK_BOX & frozenset(self.components)

    @property
    def adaptive(self) -> bool:
        """The rand version averages APGD gradients over 20 forward passes (EOT)."""
        return self.version == "rand"

    @property
    def cost(self) -> int:
        """Rough forward(-backward) passes per example."""
        eot = RAND_EOT if self.version == "rand" else 1
        return sum(PASSES[c] for c in self.components) * eot

    def settings(self) -> Dict[str, Any]:
        """Settings recorded in every result row."""
        detail = self.version if not self.attacks else f"{self.version}:{'+'.join(self.attacks)}"
        restarts = {"plus": 5, "custom": 5}.get(self.version, 1)
        steps = 5000 if self.components == ("square",) else 100
        return {"norm": self.norm, "eps": self.eps, "steps": steps, "step_size": "", "restarts": restarts,
                "loss": "", "random_start": True, "eot_samples": RAND_EOT if self.version == "rand" else 1,
                "version": detail}

    def _library(self, model: nn.Module, device: torch.device) -> Any:
        """A configured pyautoattack ``AutoAttack`` object."""
        custom = self.version == "custom"
        aa = AutoAttack(model, eps=self.eps, norm=self.norm, version=self.version,
                        attacks=list(self.attacks) if custom else None, seed=self.seed, device=device)
        aa.verbose = False
        return aa

    def perturb_detailed(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Adversarial points and, per example, the index in ``components`` that broke it (-1: none)."""
        if is_randomized(model):
            return self._perturb_randomized(model, x, y)
        aa = self._library(model, x.device)
        x_adv = x.clone()
        broken_by = torch.full((len(x),), -1, dtype=torch.long, device=x.device)
        robust = torch.ones(len(x), dtype=torch.bool, device=x.device)
        # A bar per sub-attack says which one runs and on how many points (AutoAttack runs for minutes).
        with bar(total=len(self.components), desc=f"AutoAttack {self.version}", unit="sub-attack", leave=False) as pbar:
            for k, name in enumerate(self.components):
                idx = robust.nonzero().squeeze(1)
                if len(idx) == 0:
                    break
                pbar.set_postfix_str(f"{name} on {len(idx)} of {len(x)} points")
                # One sub-attack on the points still robust, in pyautoattack's own batching.
                aa.attacks_to_run = [name]
                adv, y_adv = aa.run_standard_evaluation(x[idx], y[idx], batch_size=self.batch_size)
                hit = y_adv.to(y.device) != y[idx]
                x_adv[idx[hit]] = adv.to(x.device)[hit]
                broken_by[idx[hit]] = k
                robust[idx[hit]] = False
                pbar.update(1)
        return x_adv, broken_by

    def _component_points(self, model: nn.Module, name: str, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One sub-attack's points on every example: APGD's highest-loss point, else the library's output."""
        if name in APGD_LOSSES:
            eot = RAND_EOT if self.version == "rand" else 1
            restarts = {"plus": 5, "custom": 5}.get(self.version, 1)
            apgd = APGDAttack(model, n_iter=100, norm=self.norm, n_restarts=restarts, eps=self.eps, seed=self.seed,
                              loss=APGD_LOSSES[name], eot_iter=eot, rho=0.75, device=x.device)
            # APGD draws its random starts from torch's global generator: seeded here, restored after.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed)
                points: torch.Tensor = apgd.perturb(x, y, best_loss=True)
            return points.detach()
        aa = self._library(model, x.device)
        aa.attacks_to_run = [name]
        adv, _ = aa.run_standard_evaluation(x, y, batch_size=self.batch_size)
        library_points: torch.Tensor = adv
        return library_points.detach().to(x.device)

    def _perturb_randomized(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """On a random switch: every sub-attack on every example (no single-draw filtering, never the clean
        image as a fallback), then per example the sub-attack's point of lowest expected accuracy."""
        best = x.clone()
        best_e = torch.full((len(x),), float("inf"), device=x.device)
        chosen = torch.full((len(x),), -1, dtype=torch.long, device=x.device)
        for k, name in enumerate(self.components):
            points = self._component_points(model, name, x, y)
            e = expected_correct(model, points, y)
            better = e < best_e
            best[better] = points[better]
            best_e[better] = e[better]
            chosen[better] = k
        # A point counts as broken by its component when the switch is more likely wrong than right there.
        broken_by = torch.where(best_e < 0.5, chosen, torch.full_like(chosen, -1))
        return best, broken_by

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The adversarial points of :meth:`perturb_detailed`."""
        return self.perturb_detailed(model, x, y)[0]


# The AutoAttack family: expensive; in the cascade it runs only on points still robust.
ATTACKS.add("autoattack", AttackPreset(AutoAttackRunner), "AutoAttack standard (APGD-CE, APGD-T, FAB-T, Square) via pyautoattack")
ATTACKS.add("autoattack-plus", AttackPreset(AutoAttackRunner, {"version": "plus"}), "AutoAttack plus (6 attacks, 5 restarts) via pyautoattack")
ATTACKS.add("autoattack-rand", AttackPreset(AutoAttackRunner, {"version": "rand"}),
            "AutoAttack rand (APGD-CE, APGD-DLR with 20 EOT samples), for randomised models")
ATTACKS.add("autoattack-custom", AttackPreset(AutoAttackRunner, {"version": "custom", "attacks": ("apgd-ce", "apgd-t")}),
            "AutoAttack custom attack list (default apgd-ce+apgd-t), e.g. autoattack-custom:attacks=apgd-ce+square")
ATTACKS.add("apgd-ce", AttackPreset(AutoAttackRunner, {"attacks": ("apgd-ce",)}), "AutoAttack's APGD-CE alone, standard-version settings")
ATTACKS.add("apgd-t", AttackPreset(AutoAttackRunner, {"attacks": ("apgd-t",)}), "AutoAttack's APGD-T (9 targets) alone, standard-version settings")
ATTACKS.add("fab-t", AttackPreset(AutoAttackRunner, {"attacks": ("fab-t",)}), "AutoAttack's FAB-T (9 targets) alone, standard-version settings")
ATTACKS.add("square", AttackPreset(AutoAttackRunner, {"attacks": ("square",)}), "AutoAttack's Square (5000 queries, black-box) alone, standard-version settings")
