"""Attacks: one base class (:mod:`bench.attacks.base`), one registry of named presets, one file per family.

Every attack is ``attack(model, x, y) -> x_adv`` on [0,1] inputs with
normalisation inside the model. A new attack is one module here: a frozen
dataclass deriving from :class:`Attack` plus ``ATTACKS.add(...)`` for its
presets; the registry imports every module of this package on first use.
"""
from bench.attacks.autoattack import AA_VERSIONS, BLACK_BOX, AutoAttackRunner
from bench.attacks.base import Attack, check_budget, no_param_grad
from bench.attacks.expectation import SwitchModel, as_switch, expected_correct, is_randomized
from bench.attacks.pgd import LOSSES, PGD, ce_loss, cw_loss
from bench.attacks.registry import ATTACKS, AttackPreset, AttackRegistry, attack_for_run, attack_norms, make_attack
from bench.attacks.switch import CandidatePGD, EnsemblePGD

__all__ = [
    "AA_VERSIONS", "ATTACKS", "BLACK_BOX", "LOSSES", "PGD", "Attack", "AttackPreset", "AttackRegistry",
    "AutoAttackRunner", "CandidatePGD", "EnsemblePGD", "SwitchModel", "ce_loss", "check_budget", "cw_loss",
    "as_switch", "attack_for_run", "attack_norms", "expected_correct", "is_randomized", "make_attack", "no_param_grad",
]
