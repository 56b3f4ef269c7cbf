"""Security curves: robust accuracy against eps from a minimum-norm attack (PyPI ``adv-lib``).

A fixed-eps attack answers one question (robust at the spec's eps or not); a
minimum-norm attack finds, per example, the smallest perturbation that
changes the prediction, so one run gives robust accuracy at every eps: the
fraction of examples whose minimal perturbation exceeds it (APB's security
curves). The attack per threat model (:data:`MIN_NORM_ATTACKS`): FMN (Pintor
et al., NeurIPS 2021) in L-inf; FAB (Croce and Hein, ICML 2020; untargeted,
adv-lib) in L2 and L1. On tests/test_security.py's linear models, whose
exact minimal distances are known, adv-lib 0.2.8's FMN found no adversarial
for 2 to 11 of 40 examples in L2 and 1 to 5 in L1 (200 or 1 000 steps,
initial step 0.1 to 10), DDN was up to 8x above the exact distance when the
distances were small (1 000 steps), and FAB (100 iterations) found all 40
within 1.5 % in both norms.
The distances live in the run's evaluation cache (one store per model,
norm, steps and preparation), so more examples only attack the new ones.

The curve is checked against the fixed-eps attacks at the spec's eps on the
same examples (:func:`agreement_flags`): FMN finding an adversarial inside
eps that every fixed-eps attack missed means those attacks overstate
robustness (``fmn_beats_attacks``); FMN leaving many more examples robust than
they did means the curve itself is only an upper bound (``fmn_weaker``).
"""
from __future__ import annotations

import importlib
import math
import time
import warnings
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Set

import torch
import torch.nn as nn

from bench.core.io import digest
from bench.core.progress import bar
from bench.core.results import EVAL_VERSION, AttackResult
from bench.core.store import Store
from bench.data import Split, to_float
from bench.evaluation.evaluate import CHANNELS_LAST, clean_correct, clean_store, model_folder
from bench.nn.inference import PREPARATION, ieee_float32, inference_model

# FMN's optimisation steps (the FMN paper's robustness evaluations use 100 to 1 000) and its step size
# schedule (adv-lib's defaults: alpha 1 annealed to 1/100, gamma 0.05 to 0.001).
FMN_STEPS = 200
# The eps grid of a curve: GRID_POINTS evenly spaced budgets from 0 to GRID_SPAN x the spec's eps.
GRID_POINTS = 16
GRID_SPAN = 2.0
# Examples per FMN call.
BATCH_SIZE = 500
# fmn_weaker: FMN leaves more than this share of the examples robust at eps that a fixed-eps attack broke. FMN is
# untargeted, so AutoAttack's targeted attacks break a few more: on RST-0.9 (Fashion-MNIST, first 500) FMN left 6
# examples (1.2 %) robust that the worst case broke, the same with 200 or 1 000 steps and alpha 0.3 to 3
# (benchmarks/fmn_settings.py).
WEAKER_SHARE = 0.02
# A perturbation this much above eps still counts as inside it (float rounding of x + delta).
DISTANCE_SLACK = 1e-6
INSTALL_HINT = "pip install -e '.[security]' (adv-lib's visdom dependency builds only with setuptools<81: " \
               "PIP_CONSTRAINT=constraints/build.txt)"
# The minimal-perturbation attack of each threat model, by its row name (see the module docstring).
MIN_NORM_ATTACKS = {"Linf": "fmn", "L2": "fab", "L1": "fab"}
# adv-lib's module of each attack.
ADV_LIB_MODULES = {"fmn": "adv_lib.attacks.fast_minimum_norm", "fab": "adv_lib.attacks.fast_adaptive_boundary"}
# The norm order of each threat model (the attacks' ``norm`` argument and the distance).
NORM_ORDERS = {"Linf": float("inf"), "L2": 2.0, "L1": 1.0}
# The store of one model's minimal perturbations: tried, and the smallest norm found (inf = none found).
DISTANCE_ARRAYS = {"tried": (torch.bool, False, ()), "distance": (torch.float32, float("nan"), ())}


class SecurityMissing(ImportError, ValueError):
    """adv-lib (the ``security`` extra) is not installed."""


def min_norm_function(attack: str = "fmn") -> Callable[..., torch.Tensor]:
    """adv-lib's ``fmn`` or ``fab`` attack; a clear error naming the extra when adv-lib is absent."""
    try:
        # adv-lib's own import warns about distutils' LooseVersion; not ours to fix.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            module = importlib.import_module(ADV_LIB_MODULES[attack])
    except ModuleNotFoundError as exc:
        raise SecurityMissing(f"security curves need adv-lib: module {exc.name!r} is missing; install with {INSTALL_HINT}") from exc
    return getattr(module, attack)  # type: ignore[no-any-return]


def fmn_function() -> Callable[..., torch.Tensor]:
    """adv-lib's ``fmn`` attack (:func:`min_norm_function`)."""
    return min_norm_function("fmn")


def min_norm_distances(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, alpha: float = 1.0,
                  norm: str = "Linf") -> torch.Tensor:
    """Per example, the ``norm`` of the smallest adversarial perturbation found (0: misclassified already; inf:
    none) by the threat model's attack (:data:`MIN_NORM_ATTACKS`).

    adv-lib returns the input itself where it found nothing, so every returned point is re-classified here:
    only a point the model gets wrong counts, whatever the attack reports. ``alpha``: FMN's initial step size
    (adv-lib's default 1, annealed to 1/100 of it).
    """
    if norm not in MIN_NORM_ATTACKS:
        raise ValueError(f"unknown norm {norm!r}; choices: {', '.join(MIN_NORM_ATTACKS)}")
    attack = min_norm_function(MIN_NORM_ATTACKS[norm])
    with torch.enable_grad():
        if MIN_NORM_ATTACKS[norm] == "fab":
            x_adv = attack(model, x, y, norm=NORM_ORDERS[norm], n_iter=steps).detach()
        else:
            x_adv = attack(model, x, y, norm=NORM_ORDERS[norm], steps=steps, α_init=alpha).detach()
    with torch.no_grad():
        wrong = model(x_adv).argmax(1) != y
    norms = (x_adv - x).flatten(1).norm(p=NORM_ORDERS[norm], dim=1)
    return torch.where(wrong, norms, torch.full_like(norms, math.inf)).float()


def distance_store(folder: Optional[Path], steps: int, norm: str = "Linf") -> Store:
    """The minimal-perturbation store of one model in ``norm`` at ``steps`` steps (L-inf: FMN's, as before norms)."""
    attack = MIN_NORM_ATTACKS[norm]
    config = {"attack": attack, "library": "adv-lib", "norm": norm, "steps": steps, "eval_version": EVAL_VERSION}
    return Store(folder / f"{attack}-{digest(config, 10)}" if folder else None, DISTANCE_ARRAYS, config)


@dataclass
class MinNorm:
    """Minimal perturbations of the first ``len(distance)`` test examples and what they cost."""

    distance: torch.Tensor
    correct: torch.Tensor
    steps: int
    seconds: float
    norm: str = "Linf"


@ieee_float32()
def min_norm(model: nn.Module, test: Split, n_eval: int, device: torch.device, cache_dir: Optional[Path] = None,
             steps: int = FMN_STEPS, batch_size: int = BATCH_SIZE, prepare: bool = False, norm: str = "Linf") -> MinNorm:
    """The minimal ``norm`` perturbation of each of the first ``n_eval`` test examples (0 = all), cached per model.

    Clean-misclassified examples have distance 0 without an attack. With ``prepare`` the passes go through
    :func:`bench.nn.inference.inference_model`'s copy, as :func:`bench.evaluation.evaluate.evaluate`'s do.
    """
    if steps < 1:
        raise ValueError(f"FMN steps must be >= 1, got {steps}")
    model.eval()
    n = len(test.head(n_eval))
    attacked = inference_model(model, channels_last=CHANNELS_LAST) if prepare else model
    folder = model_folder(cache_dir, model, PREPARATION if prepare else "")
    correct = clean_correct(clean_store(folder), attacked, test, n, device, batch_size)
    store = distance_store(folder, steps, norm)
    store.grow(n)
    # Misclassified examples need no attack; the correct ones not yet tried go through FMN chunk by chunk.
    store["distance"][:n][~correct] = 0.0
    store["tried"][:n] |= ~correct
    todo = (~store["tried"][:n]).nonzero().squeeze(1)
    with bar(total=len(todo), desc=MIN_NORM_ATTACKS[norm], unit="pt", leave=False, disable=len(todo) == 0) as pbar:
        for start in range(0, len(todo), batch_size):
            sel = todo[start : start + batch_size]
            x, y = to_float(test.x[sel], device), test.y[sel].to(device)
            t0 = time.perf_counter()
            store["distance"][sel] = min_norm_distances(attacked, x, y, steps, norm=norm).cpu()
            store["tried"][sel] = True
            store.add_seconds(time.perf_counter() - t0)
            store.save()
            pbar.update(len(sel))
    store.save()
    return MinNorm(store["distance"][:n].clone(), correct, steps, store.seconds, norm)


# Bounds of the settings: beyond them a curve is a run that does not end (FMN's papers use 1 000 steps).
MAX_FMN_STEPS = 10_000
MAX_GRID_POINTS = 1_000
MAX_GRID_SPAN = 1_000.0


def check_settings(steps: int, points: int, span: float) -> None:
    """``ValueError`` naming the flag for FMN steps or an eps grid out of bounds (NaN and infinity included)."""
    if not 1 <= steps <= MAX_FMN_STEPS:
        raise ValueError(f"--steps must be in [1, {MAX_FMN_STEPS}], got {steps}")
    if not 2 <= points <= MAX_GRID_POINTS:
        raise ValueError(f"--grid-points must be in [2, {MAX_GRID_POINTS}], got {points}")
    if not (math.isfinite(span) and 0 < span <= MAX_GRID_SPAN):
        raise ValueError(f"--grid-span must be a finite number in (0, {MAX_GRID_SPAN:g}], got {span}")


def eps_grid(eps: float, points: int = GRID_POINTS, span: float = GRID_SPAN) -> List[float]:
    """``points`` evenly spaced budgets from 0 to ``span`` x ``eps``, with ``eps`` itself among them."""
    if not (2 <= points <= MAX_GRID_POINTS and math.isfinite(span) and 0 < span <= MAX_GRID_SPAN):
        raise ValueError(f"an eps grid needs 2 to {MAX_GRID_POINTS} points and a finite span in (0, "
                         f"{MAX_GRID_SPAN:g}], got {points} points, span {span}")
    grid = {round(span * eps * i / (points - 1), 10) for i in range(points)} | {round(eps, 10)}
    return sorted(grid)


def robust_at(distance: torch.Tensor, eps: float) -> torch.Tensor:
    """Per example: no adversarial within ``eps`` (minimal perturbation larger than it)."""
    return distance > eps + DISTANCE_SLACK


def median_distance(distance: torch.Tensor) -> float:
    """The median minimal perturbation over the examples (0 for misclassified, inf where none was found): the eps
    at which robust accuracy falls to one half (the lower median for an even count)."""
    if len(distance) == 0:
        return float("nan")
    return float(distance.sort().values[(len(distance) - 1) // 2])


def agreement_flags(distance: torch.Tensor, eps: float, reference: torch.Tensor) -> Set[str]:
    """The curve at ``eps`` against the fixed-eps attacks' per-example robust flags ``reference`` (same examples)."""
    n = min(len(distance), len(reference))
    fmn_robust, ref = robust_at(distance[:n], eps), reference[:n].bool()
    flags = set()
    if bool((ref & ~fmn_robust).any()):
        flags.add("fmn_beats_attacks")
    if n and int((fmn_robust & ~ref).sum()) > WEAKER_SHARE * n:
        flags.add("fmn_weaker")
    return flags


def curve_results(found: MinNorm, eps: float, grid: Sequence[float], reference: Optional[torch.Tensor] = None,
                  version: str = "") -> List[AttackResult]:
    """One row per budget of ``grid`` (attack ``fmn``, or ``fab`` in L2 and L1, in the curve's norm): robust accuracy =
    share of examples with a larger minimal perturbation.

    Every row carries the median minimal perturbation, and the flags of the check against ``reference`` at ``eps``.
    The rows' ``version`` is ``version`` and the step count (``adv-lib 0.2.8 fmn-200``): part of the row key, so a
    curve of another step count gets rows of its own.
    """
    attack = MIN_NORM_ATTACKS[found.norm]
    n = len(found.distance)
    flags = tuple(sorted(agreement_flags(found.distance, eps, reference))) if reference is not None else ()
    stats: Dict[str, Any] = {"median_distance": round(median_distance(found.distance), 6)}
    clean = float(found.correct.float().mean()) if n else float("nan")
    results = []
    for budget in grid:
        robust = robust_at(found.distance, budget) & found.correct
        settings = {"norm": found.norm, "eps": budget, "steps": found.steps, "step_size": "", "restarts": 1,
                    "eot_samples": 1, "version": f"{version} {attack}-{found.steps}".strip()}
        results.append(AttackResult(attack, settings, n, clean, float(robust.float().mean()) if n else float("nan"),
                                    found.seconds, robust, "alone", flags, dict(stats)))
    return results


def adv_lib_version() -> str:
    """The installed adv-lib's version, as rows record it ('adv-lib 0.2.8')."""
    try:
        return f"adv-lib {package_version('adv-lib')}"
    except PackageNotFoundError:
        return "adv-lib"
