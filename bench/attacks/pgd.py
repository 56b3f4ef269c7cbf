"""PGD in L-inf or L2 (CE or CW-margin loss) with random start, restarts and EOT; the FGSM/PGD/CW presets."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Dict, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from bench.attacks.base import Attack
from bench.attacks.expectation import expected_correct, is_randomized
from bench.attacks.norms import ascent, project, random_start
from bench.attacks.registry import ATTACKS, AttackPreset
from bench.core.config import spec_field

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def ce_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-example cross-entropy."""
    return F.cross_entropy(logits, y, reduction="none")


def cw_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Carlini-Wagner margin: max other logit minus true logit (per example)."""
    true = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.clone()
    other.scatter_(1, y[:, None], float("-inf"))
    return other.max(1).values - true


LOSSES: Dict[str, Loss] = {"ce": ce_loss, "cw": cw_loss}


@dataclass(frozen=True)
class PGD(Attack):
    """PGD with CE or CW-margin loss, random start, restarts and EOT, in L-inf (sign steps, the default) or L2
    (normalised-gradient steps, projection by rescaling); both then clamp to the [0,1] box.

    With ``eot_samples > 1`` every step averages the input gradient over that
    many forward passes (expectation over transformation, for randomised
    models) and success is judged on the mean softmax of those passes.
    With ``early_stop`` (evaluation) an example that is misclassified at any
    step keeps that adversarial point and is no longer updated; without it
    (training) all examples run every step and the last iterate is returned.
    The step is ``step_size`` when given, else ``rel_step * eps`` (eps/4).

    On a randomised model (a random switch) one draw's misclassification
    says little, so there is no early stopping: every restart runs all its
    steps and each example keeps the iterate with the lowest expected
    accuracy (exact over the switch's candidates).
    """

    steps: int = 20
    step_size: Optional[float] = None
    rel_step: float = 0.25
    loss: str = spec_field("ce", "ce (cross-entropy) | cw (Carlini-Wagner margin)", choices=tuple(LOSSES))
    restarts: int = 1
    random_start: bool = True
    early_stop: bool = True
    eot_samples: int = 1

    label: ClassVar[str] = "PGD"
    norms: ClassVar[Tuple[str, ...]] = ("Linf", "L2")

    def check(self) -> None:
        """Steps, restarts and EOT samples >= 1; positive step sizes."""
        for name in ("steps", "restarts", "eot_samples"):
            if getattr(self, name) < 1:
                raise ValueError(f"PGD {name} must be >= 1, got {getattr(self, name)}")
        if self.step_size is not None and not self.step_size > 0:
            raise ValueError(f"PGD step_size must be > 0, got {self.step_size}")
        if not self.rel_step > 0:
            raise ValueError(f"PGD rel_step must be > 0, got {self.rel_step}")

    def settings(self) -> Dict[str, Any]:
        """Settings recorded in every result row."""
        return {"norm": self.norm, "eps": self.eps, "steps": self.steps, "step_size": self.alpha,
                "restarts": self.restarts, "loss": self.loss, "random_start": self.random_start,
                "eot_samples": self.eot_samples, "version": ""}

    @property
    def cost(self) -> int:
        """Forward-backward passes per example in the worst case."""
        return self.steps * self.restarts * self.eot_samples

    @property
    def adaptive(self) -> bool:
        """Averaging gradients over random forward passes (EOT) accounts for randomness."""
        return self.eot_samples > 1

    @property
    def alpha(self) -> float:
        """The step size in pixel units."""
        return self.step_size if self.step_size is not None else self.eps * self.rel_step

    def gradient_model(self, model: nn.Module) -> nn.Module:
        """The model whose loss gradient the steps follow (the attacked model itself)."""
        return model

    def judged_on(self, model: nn.Module) -> Optional[nn.Module]:
        """The randomised model iterates are judged on by expected accuracy (``None``: deterministic rules)."""
        return model if is_randomized(model) else None

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """PGD on :meth:`gradient_model`; judged by expected accuracy on a randomised model."""
        judge = self.judged_on(model)
        if judge is not None:
            return self._perturb_expected(self.gradient_model(model), judge, x, y)
        return self._perturb_deterministic(self.gradient_model(model), x, y)

    def _perturb_expected(self, grad_model: nn.Module, judge: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """All steps of every restart; per example the iterate with the lowest expected accuracy on ``judge``."""
        loss_fn = LOSSES[self.loss]
        gen = torch.Generator().manual_seed(self.seed)
        lo, hi = (x - self.eps).clamp(min=0), (x + self.eps).clamp(max=1)
        best = x.clone()
        best_e = torch.full((len(x),), float("inf"), device=x.device)

        # Keep, per example, the point the model is least likely to classify correctly.
        def keep(xa: torch.Tensor) -> None:
            e = expected_correct(judge, xa, y)
            better = e < best_e
            best[better] = xa[better]
            best_e[better] = e[better]

        for _ in range(self.restarts):
            xa = self._start(x, lo, hi, gen)
            keep(xa)
            for _ in range(self.steps):
                if bool((best_e == 0).all()):
                    return best
                grad, _ = self._forward(grad_model, xa, y, loss_fn)
                xa = project(xa + ascent(grad, self.alpha, self.norm), x, self.eps, self.norm, lo, hi).detach()
                keep(xa)
        return best

    def _perturb_deterministic(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Restarts of :meth:`_run`; with early stopping, only examples not yet fooled restart."""
        loss_fn = LOSSES[self.loss]
        gen = torch.Generator().manual_seed(self.seed)
        best = x.clone()
        fooled = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        for _ in range(self.restarts):
            active = (~fooled).nonzero().squeeze(1) if self.early_stop else torch.arange(len(x), device=x.device)
            if len(active) == 0:
                break
            x_a, done = self._run(model, x[active], y[active], loss_fn, gen)
            if self.early_stop:
                best[active] = x_a
                fooled[active] = done
            else:
                best = x_a
        return best

    def _forward(self, model: nn.Module, xa: torch.Tensor, y: torch.Tensor, loss_fn: Loss) -> Tuple[torch.Tensor, torch.Tensor]:
        """Input gradient of the loss (averaged over EOT samples) and the predicted class."""
        grad = torch.zeros_like(xa)
        probs: Optional[torch.Tensor] = None
        for _ in range(self.eot_samples):
            xg = xa.detach().requires_grad_(True)
            logits = model(xg)
            grad += torch.autograd.grad(loss_fn(logits, y).sum(), xg)[0]
            if self.eot_samples > 1:
                p = logits.detach().softmax(1)
                probs = p if probs is None else probs + p
            else:
                probs = logits.detach()
        assert probs is not None  # eot_samples >= 1 (checked in __post_init__)
        return grad, probs.argmax(1)

    @torch.no_grad()
    def _predict(self, model: nn.Module, xa: torch.Tensor) -> torch.Tensor:
        """Predicted class (mean softmax over EOT samples for randomised models)."""
        logits: torch.Tensor = model(xa)
        if self.eot_samples == 1:
            return logits.argmax(1)
        total = logits.softmax(1)
        for _ in range(self.eot_samples - 1):
            total = total + model(xa).softmax(1)
        return total.argmax(1)

    def _start(self, x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """The first iterate: random in the eps-ball (intersected with the box), or ``x`` without a random start."""
        if not self.random_start:
            return x.clone()
        return random_start(x, self.eps, self.norm, gen)

    def _run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: Loss,
             gen: torch.Generator) -> Tuple[torch.Tensor, torch.Tensor]:
        """One restart on (x, y); returns the adversarial points and which fooled the model."""
        eps, alpha = self.eps, self.alpha
        lo, hi = (x - eps).clamp_(min=0), (x + eps).clamp_(max=1)
        xa = self._start(x, lo, hi, gen)
        done = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        if not self.early_stop:
            # Training: every example runs every step; the last iterate is returned.
            for _ in range(self.steps):
                grad, _ = self._forward(model, xa, y, loss_fn)
                xa = project(xa + ascent(grad, alpha, self.norm), x, eps, self.norm, lo, hi)
            return xa.detach(), done
        # Evaluation: work on a compact set of still-correct examples only.
        out = xa.clone()
        idx = torch.arange(len(x), device=x.device)
        xs, ys, xs0, los, his = xa, y, x, lo, hi
        for _ in range(self.steps):
            grad, pred = self._forward(model, xs, ys, loss_fn)
            hit = pred != ys
            if hit.any():
                # Keep the first adversarial point found and stop updating it.
                out[idx[hit]] = xs[hit]
                done[idx[hit]] = True
                keep = ~hit
                idx, xs, ys, xs0, los, his, grad = idx[keep], xs[keep], ys[keep], xs0[keep], los[keep], his[keep], grad[keep]
                if len(idx) == 0:
                    return out, done
            # Ascent step, projected onto the eps-ball intersected with the image box.
            xs = project(xs + ascent(grad, alpha, self.norm), xs0, eps, self.norm, los, his)
        final_hit = self._predict(model, xs) != ys
        done[idx[final_hit]] = True
        out[idx] = xs
        return out, done


# The PGD family: cheap white-box attacks, step eps/4 and a uniform random start unless overridden.
ATTACKS.add("pgd", AttackPreset(PGD), "PGD (the run's norm: L-inf or L2), CE loss, 20 steps of eps/4, random start; any setting in the name, e.g. pgd:steps=50:restarts=5")
ATTACKS.add("cw", AttackPreset(PGD, {"loss": "cw"}), "L-inf PGD with the Carlini-Wagner margin loss; same settings as pgd")
ATTACKS.add("fgsm", AttackPreset(PGD, {"steps": 1, "rel_step": 1.0, "random_start": False}),
            "FGSM: one signed-gradient step of size eps, no random start")
ATTACKS.add("pgd20", AttackPreset(PGD, {"steps": 20}), "L-inf PGD, 20 steps, CE loss, step eps/4, random start")
ATTACKS.add("pgd50", AttackPreset(PGD, {"steps": 50}), "L-inf PGD, 50 steps, CE loss, step eps/4, random start")
ATTACKS.add("pgd100", AttackPreset(PGD, {"steps": 100}), "L-inf PGD, 100 steps, CE loss, step eps/4, random start")
ATTACKS.add("cw20", AttackPreset(PGD, {"steps": 20, "loss": "cw"}), "L-inf PGD, 20 steps, Carlini-Wagner margin loss, step eps/4, random start")
ATTACKS.add("eot-pgd", AttackPreset(PGD, {"steps": 20, "eot_samples": 20}),
            "PGD-20 with each gradient averaged over 20 forward passes (EOT), for randomised models")
