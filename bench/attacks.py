"""Attack registry. Every attack is ``attack(model, x, y) -> x_adv``.

Inputs are in [0,1] and normalisation lives inside the model. Attacks never
touch train/eval mode (the harness owns it) and switch parameter gradients
off while they run, so only the input gradient is computed.
"""
from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, Optional, Protocol, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from bench.registry import Registry


class Attack(Protocol):
    """The one attack signature."""

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor: ...

    def settings(self) -> Dict[str, Any]: ...


AttackFactory = Callable[..., Attack]
ATTACKS: Registry[AttackFactory] = Registry("attack")


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


def ce_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-example cross-entropy."""
    return F.cross_entropy(logits, y, reduction="none")


def cw_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Carlini-Wagner margin: max other logit minus true logit (per example)."""
    true = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.clone()
    other.scatter_(1, y[:, None], float("-inf"))
    return other.max(1).values - true


LOSSES: Dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {"ce": ce_loss, "cw": cw_loss}


@dataclass(frozen=True)
class PGD:
    """L-inf PGD with CE or CW-margin loss, random start and restarts.

    With ``early_stop`` (evaluation) an example that is misclassified at any
    step keeps that adversarial point and is no longer updated; without it
    (training) all examples run every step and the last iterate is returned.
    """

    eps: float
    steps: int = 20
    step_size: Optional[float] = None
    loss: str = "ce"
    restarts: int = 1
    random_start: bool = True
    early_stop: bool = True
    seed: int = 0

    def settings(self) -> Dict[str, Any]:
        """Settings recorded in every result row."""
        return {"norm": "Linf", "eps": self.eps, "steps": self.steps, "step_size": self._alpha,
                "restarts": self.restarts, "loss": self.loss, "random_start": self.random_start,
                "eot_samples": 1, "version": ""}

    @property
    def _alpha(self) -> float:
        return self.step_size if self.step_size is not None else self.eps / 4

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.loss not in LOSSES:
            raise ValueError(f"unknown PGD loss {self.loss!r}; choices: {', '.join(LOSSES)}")
        loss_fn = LOSSES[self.loss]
        gen = torch.Generator().manual_seed(self.seed)
        x = x.detach()
        best = x.clone()
        fooled = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        with no_param_grad(model):
            for _ in range(max(1, self.restarts)):
                active = (~fooled).nonzero().squeeze(1) if self.early_stop else torch.arange(len(x), device=x.device)
                if len(active) == 0:
                    break
                adv = self._run(model, x[active], y[active], loss_fn, gen)
                if self.early_stop:
                    x_a, y_a, done = adv
                    best[active] = x_a
                    fooled[active] = done
                else:
                    best = adv[0]
        return best

    def _run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: Callable, gen: torch.Generator) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One restart on (x, y); returns adversarial points and which fooled the model."""
        eps, alpha = self.eps, self._alpha
        delta = torch.zeros_like(x)
        if self.random_start:
            delta = (torch.rand(x.shape, generator=gen) * 2 - 1).to(x.device) * eps
        x_adv = (x + delta).clamp_(0, 1)
        out = x_adv.clone()
        done = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        idx = torch.arange(len(x), device=x.device)
        for _ in range(self.steps):
            xa = x_adv[idx].requires_grad_(True)
            logits = model(xa)
            grad = torch.autograd.grad(loss_fn(logits, y[idx]).sum(), xa)[0]
            xa = xa.detach()
            if self.early_stop:
                # Keep the first adversarial point found and stop updating it.
                hit = logits.detach().argmax(1) != y[idx]
                out[idx[hit]] = xa[hit]
                done[idx[hit]] = True
                keep = ~hit
                idx, xa, grad = idx[keep], xa[keep], grad[keep]
                if len(idx) == 0:
                    return out, y, done
            # Ascent step, then project onto the eps-ball and the image box.
            step = xa + alpha * grad.sign()
            x_adv[idx] = torch.min(torch.max(step, x[idx] - eps), x[idx] + eps).clamp_(0, 1)
        if self.early_stop:
            with torch.no_grad():
                final_hit = model(x_adv[idx]).argmax(1) != y[idx]
            done[idx[final_hit]] = True
            out[idx] = x_adv[idx]
            return out, y, done
        return x_adv.detach(), y, done


@dataclass(frozen=True)
class AutoAttackRunner:
    """AutoAttack through PyPI ``pyautoattack`` (standard, plus, rand or custom)."""

    eps: float
    version: str = "standard"
    attacks: Tuple[str, ...] = ()
    seed: int = 0
    batch_size: int = 500

    def settings(self) -> Dict[str, Any]:
        """Settings recorded in every result row."""
        detail = self.version if not self.attacks else f"{self.version}:{'+'.join(self.attacks)}"
        return {"norm": "Linf", "eps": self.eps, "steps": 100, "step_size": None, "restarts": 1,
                "loss": "", "random_start": True, "eot_samples": 20 if self.version == "rand" else 1,
                "version": detail}

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        from pyautoattack import AutoAttack

        custom = self.version == "custom"
        aa = AutoAttack(model, eps=self.eps, norm="Linf", version=self.version,
                        attacks=list(self.attacks) if custom else None, seed=self.seed, device=x.device)
        with no_param_grad(model):
            x_adv, _ = aa.run_standard_evaluation(x, y, batch_size=self.batch_size)
        return x_adv.to(x.device)


def _preset(name: str, description: str, factory: Callable[[float], Attack]) -> None:
    """Register an attack preset taking eps (plus optional overrides)."""

    def make(eps: float, **overrides: Any) -> Attack:
        attack = factory(eps)
        return dataclasses.replace(attack, **overrides) if overrides else attack

    ATTACKS.add(name, make, description)


_preset("pgd20", "L-inf PGD, 20 steps, CE loss, step eps/4, random start", lambda eps: PGD(eps, steps=20))
_preset("cw20", "L-inf PGD, 20 steps, Carlini-Wagner margin loss, step eps/4, random start", lambda eps: PGD(eps, steps=20, loss="cw"))
_preset("autoattack", "AutoAttack standard (APGD-CE, APGD-T, FAB-T, Square) via pyautoattack", lambda eps: AutoAttackRunner(eps))


def make_attack(name: str, eps: float, **overrides: Any) -> Attack:
    """Instantiate registered attack ``name`` at budget ``eps``."""
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    return ATTACKS.get(name)(eps, **overrides)
