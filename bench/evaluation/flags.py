"""Sanity checks of an evaluation: each adds a named flag to result rows and never changes a number.

Documented one by one in docs/flags.md. The checks ask each attack what it
is (``cascade_only``, ``whitebox``, ``settings()["loss"]``,
``black_box_components``), never its class, so a new attack takes part in
them with no edit here.
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from pyautoattack import checks

from bench.attacks import PGD, Attack, no_param_grad
from bench.core.io import model_fingerprint, tensor_digest
from bench.core.store import Arrays
from bench.data import Split, to_float

# Thresholds of the sanity checks.
VANISHING_GRAD = 1e-12
VANISHING_SHARE = 0.1
SPARSITY_TOLERANCE = 0.005
NONDETERMINISM_TOL = 1e-4
NONDETERMINISM_PASSES = 5  # AutoAttack's own count (checks.check_randomized)
SQUARE_SHARE = 0.002  # AutoAttack's own threshold (checks.check_square_sr)
N_PROBE = 256
# Attack probes: the first clean-correct examples, PGD-20 against PGD-100, and PGD-20 at three budgets.
N_ATTACK_PROBE = 100
CONVERGENCE_GAP = 0.02
EPS_FACTORS = (0.5, 1.0, 2.0)
EPS_SLACK = 1  # examples a larger budget may leave robust beyond a smaller one (random starts differ)

FLAG_DESCRIPTIONS: Dict[str, str] = {
    "probabilities": "the model returns probabilities, not logits (CE/CW gradients are distorted)",
    "train_mode": "a module was in training mode or BatchNorm statistics changed during evaluation",
    "vanishing_gradients": "many clean-correct examples have (near) zero input gradient: possible gradient masking",
    "aa_above_pgd": "AutoAttack left more examples robust than a PGD (CE) attack on the same examples",
    "square_beats_whitebox": "the black-box Square attack broke more than 0.2% of examples every white-box attack failed on",
    "nondeterministic": "two identical forward passes differ, and only deterministic (non-EOT) attacks were run",
    "sparsity_off_target": "measured sparsity differs from the target by more than 0.005",
    "frozen_moved": "weights that should be frozen changed (during the search or during evaluation)",
    "non_adaptive": "a randomised ticket evaluated without any adaptive attack (EOT or whole-ensemble): over-rated",
    "dynamic_defense": "AutoAttack's check: the forward pass itself computes gradients (a dynamic defense)",
    "not_converged": "PGD-100 on a probe of clean-correct examples beat PGD-20 by more than 2 points: more steps needed",
    "fmn_beats_attacks": "the curve's minimum-norm attack (FMN; FAB in L2/L1) found an adversarial within eps on an example every fixed-eps attack left robust",
    "fmn_weaker": "the curve's minimum-norm attack (FMN; FAB in L2/L1) left more than 2% of the examples robust at eps "
                  "that a fixed-eps attack broke: the security curve is an upper bound",
    "eps_not_monotone": "PGD-20 robust accuracy on a probe did not fall as eps grew (eps/2, eps, 2 eps): a broken attack or model",
}


class _Collect:
    """A logger stand-in that keeps pyautoattack's check messages."""

    def __init__(self) -> None:
        self.messages: List[str] = []

    def warning(self, msg: str) -> None:
        self.messages.append(msg)


def describe_flags(flags: Iterable[str]) -> List[str]:
    """One warning line per flag, pointing to docs/flags.md."""
    return [f"WARNING {f}: {FLAG_DESCRIPTIONS.get(f, f)} (docs/flags.md#{f})" for f in sorted(set(flags))]


def probe_flags(model: nn.Module, test: Split, correct: torch.Tensor, device: torch.device, any_adaptive: bool) -> Set[str]:
    """Checks on a probe batch before attacking: outputs, randomness, input gradients, modes."""
    flags: Set[str] = set()
    if any(m.training for m in model.modules()):
        flags.add("train_mode")
    n = min(N_PROBE, len(correct))
    if n == 0:
        return flags
    x, y = to_float(test.x[:n], device), test.y[:n].to(device)
    with torch.no_grad():
        outs = [model(x) for _ in range(NONDETERMINISM_PASSES)]
    out1 = outs[0]
    # Probabilities instead of logits: non-negative rows summing to one.
    if out1.min() >= 0 and out1.max() <= 1 and (out1.sum(1) - 1).abs().max() < 1e-3:
        flags.add("probabilities")
    # A random forward pass (any of 5 differs) attacked only with deterministic attacks.
    spread = max(float((o - out1).abs().max()) for o in outs[1:])
    if spread > NONDETERMINISM_TOL * (1 + float(out1.abs().max())) and not any_adaptive:
        flags.add("nondeterministic")
    flags |= library_check_flags(model, x, y, any_adaptive)
    # Input gradients of the CE loss, once for the whole probe (each example's own: eval mode).
    with no_param_grad(model):
        xg = x.clone().requires_grad_(True)
        grad = torch.autograd.grad(F.cross_entropy(model(xg), y, reduction="sum"), xg)[0].flatten(1).abs()
    # Vanishing on the clean-correct probes, or exactly zero on a tenth of the probe (AutoAttack's
    # check_zero_gradients warns on any such point).
    ok = correct[:n].to(device)
    vanishing = bool(ok.any()) and float((grad[ok].max(1).values <= VANISHING_GRAD).float().mean()) > VANISHING_SHARE
    if vanishing or float((grad.sum(1) == 0).float().mean()) > VANISHING_SHARE:
        flags.add("vanishing_gradients")
    return flags


def library_check_flags(model: nn.Module, x: torch.Tensor, y: torch.Tensor, any_adaptive: bool) -> Set[str]:
    """pyautoattack's own checks (randomised model, probability outputs, dynamic defense) as flags."""
    flags: Set[str] = set()
    found = _Collect()
    checks.check_randomized(model, x, y, n=NONDETERMINISM_PASSES, logger=found)
    if found.messages and not any_adaptive:
        flags.add("nondeterministic")
    for check, flag in ((checks.check_range_output, "probabilities"), (checks.check_dynamic, "dynamic_defense")):
        found = _Collect()
        check(model, x, logger=found)
        if found.messages:
            flags.add(flag)
    return flags


def _robust_count(model: nn.Module, attack: Attack, x: torch.Tensor, y: torch.Tensor) -> int:
    """Examples of ``(x, y)`` still classified correctly at ``attack``'s points."""
    x_adv = attack(model, x, y)
    with torch.no_grad():
        return int((model(x_adv).argmax(1) == y).sum())


def attack_probe_flags(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, seed: int,
                       norm: str = "Linf") -> Set[str]:
    """Convergence and eps checks on a probe of clean-correct examples (deterministic models).

    ``not_converged``: PGD-100 leaves more than 2 points fewer robust than
    PGD-20. ``eps_not_monotone``: PGD-20 robust accuracy at eps/2, eps, 2 eps
    rises somewhere as eps grows.
    """
    flags: Set[str] = set()
    if len(x) == 0:
        return flags
    pgd20 = _robust_count(model, PGD(eps, steps=20, seed=seed, norm=norm), x, y)
    pgd100 = _robust_count(model, PGD(eps, steps=100, seed=seed, norm=norm), x, y)
    if (pgd20 - pgd100) / len(x) > CONVERGENCE_GAP:
        flags.add("not_converged")
    # An L-inf budget above 1 is the whole box; L2/L1 budgets are not capped.
    budgets = [min(1.0, f * eps) if norm == "Linf" else f * eps for f in EPS_FACTORS]
    curve = [_robust_count(model, PGD(b, steps=20, seed=seed, norm=norm), x, y) for b in budgets]
    if any(later > earlier + EPS_SLACK for earlier, later in zip(curve, curve[1:])):
        flags.add("eps_not_monotone")
    return flags


def meta_flags(meta: Optional[Mapping[str, Any]], model: nn.Module) -> Set[str]:
    """Checks from the ticket's meta: sparsity on target, frozen weights unchanged."""
    flags: Set[str] = set()
    if not meta:
        return flags
    target, measured = meta.get("target_sparsity"), meta.get("measured_sparsity")
    if target is not None and measured is not None and abs(float(measured) - float(target)) > SPARSITY_TOLERANCE:
        flags.add("sparsity_off_target")
    frozen = meta.get("frozen_fingerprint") or {}
    state = model.state_dict()
    if any(k not in state or tensor_digest(state[k]) != v for k, v in frozen.items()):
        flags.add("frozen_moved")
    return flags


def after_attack_flags(model: nn.Module, before: Mapping[str, str]) -> Set[str]:
    """Checks after attacking: no module in training mode, parameters and buffers unchanged."""
    flags: Set[str] = set()
    if any(m.training for m in model.modules()):
        flags.add("train_mode")
    after = model_fingerprint(model)
    changed = [k for k in before if after.get(k) != before[k]]
    buffers = {k for k, _ in model.named_buffers()}
    if any(k in buffers for k in changed):
        flags.add("train_mode")
    if any(k not in buffers for k in changed):
        flags.add("frozen_moved")
    return flags


def _fit(t: torch.Tensor, n: int, fill: Any) -> torch.Tensor:
    """``t`` cut or padded with ``fill`` to length ``n``."""
    return torch.cat([t[:n], torch.full((max(0, n - len(t)),), fill, dtype=t.dtype)])


def row_flags(order: Sequence[Tuple[str, Attack, int]], stores: Mapping[str, Arrays],
              correct: torch.Tensor) -> Dict[str, Set[str]]:
    """Per-row checks: a cascade-only attack above a CE white-box one, black-box success where white-box failed.

    ``order`` lists (name, attack, n_eval); ``stores`` holds each attack's
    ``tried``, ``robust`` and ``broken_by`` arrays; ``robust`` may be an
    expected robustness in [0, 1] (a randomised model's mean over draws); an
    example counts as broken below 0.5.
    """
    out: Dict[str, Set[str]] = {name: set() for name, _, _ in order}
    n_all = len(correct)
    tried = {name: _fit(stores[name]["tried"], n_all, False) & correct for name, _, _ in order}
    robust = {name: _fit(stores[name]["robust"].float(), n_all, 0.0) for name, _, _ in order}
    # The cheap white-box attacks: the evidence a strong or black-box attack is compared with.
    whitebox = [name for name, a, _ in order if a.whitebox and not a.cascade_only]
    ce_refs = [name for name, a, _ in order if a.whitebox and not a.cascade_only and a.settings().get("loss") == "ce"]
    wb_tried = torch.zeros(n_all, dtype=torch.bool)
    wb_broken = torch.zeros(n_all, dtype=torch.bool)
    for name in whitebox:
        wb_tried |= tried[name]
        wb_broken |= tried[name] & (robust[name] < 0.5)
    for name, attack, n in order:
        if not attack.cascade_only:
            continue
        # A strong (cascade-only) attack must never be weaker than PGD-CE on the examples both attacked.
        if attack.whitebox:
            for p in ce_refs:
                both = tried[name] & tried[p]
                if float(robust[name][both].sum()) > float(robust[p][both].sum()) + 1e-9:
                    out[name].add("aa_above_pgd")
        # A black-box component succeeding where every white-box attack failed.
        comps = list(attack.components) or [name]
        black = attack.black_box_components if attack.components else (frozenset() if attack.whitebox else frozenset({name}))
        for k, comp in enumerate(comps):
            if comp not in black:
                continue
            by_k = _fit(stores[name]["broken_by"], n_all, -1) == k if attack.components else torch.ones(n_all, dtype=torch.bool)
            broken = tried[name] & (robust[name] < 0.5) & by_k
            internal_wb = any(c not in black for c in comps[:k])
            evidence = ~wb_broken & (wb_tried | internal_wb)
            if float((broken & evidence).sum()) > SQUARE_SHARE * n:
                out[name].add("square_beats_whitebox")
    return out
