"""Attack registry. Every attack is ``attack(model, x, y) -> x_adv``.

Inputs are in [0,1] and normalisation lives inside the model. Attacks never
touch train/eval mode (the harness owns it) and switch parameter gradients
off while they run, so only the input gradient is computed.

Registered names are presets (``pgd20``, ``cw20``, ``autoattack``...). Any
field of the preset's attack class can be overridden in the name itself,
``base:key=value:key=value`` (lists joined with ``+``), e.g.
``pgd:steps=50:restarts=5`` or ``autoattack-custom:attacks=apgd-ce+square``;
so the CLI's comma-separated ``--attacks`` list can carry any setting.
"""
from __future__ import annotations

import contextlib
import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Protocol, Tuple, Type

import torch
import torch.nn as nn
import torch.nn.functional as F

from bench.registry import Registry


class Attack(Protocol):
    """The one attack signature."""

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor: ...

    def settings(self) -> Dict[str, Any]: ...


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
    """L-inf PGD with CE or CW-margin loss, random start, restarts and EOT.

    With ``eot_samples > 1`` every step averages the input gradient over that
    many forward passes (expectation over transformation, for randomised
    models) and success is judged on the mean softmax of those passes.
    With ``early_stop`` (evaluation) an example that is misclassified at any
    step keeps that adversarial point and is no longer updated; without it
    (training) all examples run every step and the last iterate is returned.
    The step is ``step_size`` when given, else ``rel_step * eps`` (eps/4).
    """

    eps: float
    steps: int = 20
    step_size: Optional[float] = None
    rel_step: float = 0.25
    loss: str = "ce"
    restarts: int = 1
    random_start: bool = True
    early_stop: bool = True
    seed: int = 0
    eot_samples: int = 1

    # Cascade placement: cheap white-box attacks run on every clean-correct point.
    cascade_only: typing.ClassVar[bool] = False
    whitebox: typing.ClassVar[bool] = True

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"unknown PGD loss {self.loss!r}; choices: {', '.join(LOSSES)}")
        for name in ("steps", "restarts", "eot_samples"):
            if getattr(self, name) < 1:
                raise ValueError(f"PGD {name} must be >= 1, got {getattr(self, name)}")
        if self.step_size is not None and not self.step_size > 0:
            raise ValueError(f"PGD step_size must be > 0, got {self.step_size}")
        if not self.rel_step > 0:
            raise ValueError(f"PGD rel_step must be > 0, got {self.rel_step}")

    def settings(self) -> Dict[str, Any]:
        """Settings recorded in every result row."""
        return {"norm": "Linf", "eps": self.eps, "steps": self.steps, "step_size": self._alpha,
                "restarts": self.restarts, "loss": self.loss, "random_start": self.random_start,
                "eot_samples": self.eot_samples, "version": ""}

    @property
    def cost(self) -> int:
        """Forward-backward passes per example in the worst case (orders the cascade)."""
        return self.steps * self.restarts * self.eot_samples

    @property
    def uses_eot(self) -> bool:
        """Whether gradients are averaged over random forward passes."""
        return self.eot_samples > 1

    @property
    def _alpha(self) -> float:
        return self.step_size if self.step_size is not None else self.eps * self.rel_step

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss_fn = LOSSES[self.loss]
        gen = torch.Generator().manual_seed(self.seed)
        x = x.detach()
        best = x.clone()
        fooled = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        with no_param_grad(model):
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

    def _forward(self, model: nn.Module, xa: torch.Tensor, y: torch.Tensor, loss_fn: Callable) -> Tuple[torch.Tensor, torch.Tensor]:
        """Input gradient of the loss (averaged over EOT samples) and the predicted class."""
        grad = torch.zeros_like(xa)
        probs = None
        for _ in range(self.eot_samples):
            xg = xa.detach().requires_grad_(True)
            logits = model(xg)
            grad += torch.autograd.grad(loss_fn(logits, y).sum(), xg)[0]
            if self.eot_samples > 1:
                p = logits.detach().softmax(1)
                probs = p if probs is None else probs + p
            else:
                probs = logits.detach()
        return grad, probs.argmax(1)

    @torch.no_grad()
    def _predict(self, model: nn.Module, xa: torch.Tensor) -> torch.Tensor:
        """Predicted class (mean softmax over EOT samples for randomised models)."""
        if self.eot_samples == 1:
            return model(xa).argmax(1)
        return sum(model(xa).softmax(1) for _ in range(self.eot_samples)).argmax(1)

    def _run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: Callable,
             gen: torch.Generator) -> Tuple[torch.Tensor, torch.Tensor]:
        """One restart on (x, y); returns the adversarial points and which fooled the model."""
        eps, alpha = self.eps, self._alpha
        lo, hi = (x - eps).clamp_(min=0), (x + eps).clamp_(max=1)
        if self.random_start:
            noise = (torch.rand(x.shape, generator=gen) * 2 - 1).to(x.device) * eps
            xa = torch.min(torch.max(x + noise, lo), hi)
        else:
            xa = x.clone()
        done = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        if not self.early_stop:
            # Training: every example runs every step; the last iterate is returned.
            for _ in range(self.steps):
                grad, _ = self._forward(model, xa, y, loss_fn)
                xa = torch.min(torch.max(xa + alpha * grad.sign(), lo), hi)
            return xa.detach(), done
        # Evaluation: work on a compact set of still-correct examples only.
        out = xa.clone()
        idx = torch.arange(len(x), device=x.device)
        xs, ys, los, his = xa, y, lo, hi
        for _ in range(self.steps):
            grad, pred = self._forward(model, xs, ys, loss_fn)
            hit = pred != ys
            if hit.any():
                # Keep the first adversarial point found and stop updating it.
                out[idx[hit]] = xs[hit]
                done[idx[hit]] = True
                keep = ~hit
                idx, xs, ys, los, his, grad = idx[keep], xs[keep], ys[keep], los[keep], his[keep], grad[keep]
                if len(idx) == 0:
                    return out, done
            # Ascent step, projected onto the eps-ball intersected with the image box.
            xs = torch.min(torch.max(xs + alpha * grad.sign(), los), his)
        final_hit = self._predict(model, xs) != ys
        done[idx[final_hit]] = True
        out[idx] = xs
        return out, done


@typing.runtime_checkable
class SwitchModel(Protocol):
    """A randomised model that picks one of ``n_candidates`` deterministic networks per forward call."""

    n_candidates: int

    def candidate(self, k: int) -> nn.Module: ...

    def ensemble(self) -> nn.Module: ...


@dataclass(frozen=True)
class CandidatePGD(PGD):
    """PGD crafted against one candidate of a random switch (the R2S paper's non-adaptive attack).

    ``candidate=-1`` draws the candidate from ``seed`` (the same one for every
    call of this attack); ``candidate=k`` fixes it. A model that is not a
    switch is its own single candidate, so this is plain PGD there.
    """

    candidate: int = -1

    def __post_init__(self) -> None:
        super().__post_init__()
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

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        target = model.candidate(self.pick(model.n_candidates)) if isinstance(model, SwitchModel) else model
        return super().__call__(target, x, y)


@dataclass(frozen=True)
class EnsemblePGD(PGD):
    """PGD on the mean logits of every candidate of a random switch at once (an adaptive attack).

    A model that is not a switch is its own one-member ensemble (plain PGD).
    """

    def settings(self) -> Dict[str, Any]:
        """PGD's settings, version ``ensemble:mean-logits``."""
        return {**super().settings(), "version": "ensemble:mean-logits"}

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return super().__call__(model.ensemble() if isinstance(model, SwitchModel) else model, x, y)


AA_VERSIONS: Dict[str, Tuple[str, ...]] = {
    "standard": ("apgd-ce", "apgd-t", "fab-t", "square"),
    "plus": ("apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t"),
    "rand": ("apgd-ce", "apgd-dlr"),
    "custom": ("apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t"),
}
BLACK_BOX = frozenset({"square"})


@dataclass(frozen=True)
class AutoAttackRunner:
    """AutoAttack through PyPI ``pyautoattack``.

    ``version`` is standard, plus, rand or custom. With standard/plus/rand,
    ``attacks`` (optional) restricts the run to some of that version's
    attacks with that version's settings (how ``apgd-t`` or ``square`` run on
    their own). With custom, ``attacks`` is the list run with pyautoattack's
    custom settings. Sub-attacks run one after another, each on the points
    still robust, exactly as in ``run_standard_evaluation``, so which
    sub-attack broke each point is known.
    """

    eps: float
    version: str = "standard"
    attacks: Tuple[str, ...] = ()
    seed: int = 0
    batch_size: int = 500

    cascade_only: typing.ClassVar[bool] = True
    whitebox: typing.ClassVar[bool] = True

    def __post_init__(self) -> None:
        if self.version not in AA_VERSIONS:
            raise ValueError(f"unknown AutoAttack version {self.version!r}; choices: {', '.join(AA_VERSIONS)}")
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
    def uses_eot(self) -> bool:
        """The rand version averages APGD gradients over 20 forward passes."""
        return self.version == "rand"

    @property
    def cost(self) -> int:
        """Rough forward(-backward) passes per example (orders AutoAttack-family attacks)."""
        per = {"apgd-ce": 100, "apgd-dlr": 100, "apgd-t": 900, "fab": 100, "fab-t": 900, "square": 5000}
        eot = 20 if self.version == "rand" else 1
        return sum(per[c] for c in self.components) * eot

    def settings(self) -> Dict[str, Any]:
        """Settings recorded in every result row."""
        detail = self.version if not self.attacks else f"{self.version}:{'+'.join(self.attacks)}"
        restarts = {"plus": 5, "custom": 5}.get(self.version, 1)
        steps = 5000 if self.components == ("square",) else 100
        return {"norm": "Linf", "eps": self.eps, "steps": steps, "step_size": "", "restarts": restarts,
                "loss": "", "random_start": True, "eot_samples": 20 if self.version == "rand" else 1,
                "version": detail}

    def _library(self, model: nn.Module, device: torch.device) -> Any:
        """A configured pyautoattack ``AutoAttack`` object."""
        from pyautoattack import AutoAttack

        custom = self.version == "custom"
        aa = AutoAttack(model, eps=self.eps, norm="Linf", version=self.version,
                        attacks=list(self.attacks) if custom else None, seed=self.seed, device=device)
        aa.verbose = False
        return aa

    def run_detailed(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Adversarial points and, per example, the index in ``components`` that broke it (-1: none)."""
        aa = self._library(model, x.device)
        x_adv = x.detach().clone()
        broken_by = torch.full((len(x),), -1, dtype=torch.long, device=x.device)
        robust = torch.ones(len(x), dtype=torch.bool, device=x.device)
        with no_param_grad(model):
            for k, name in enumerate(self.components):
                idx = robust.nonzero().squeeze(1)
                if len(idx) == 0:
                    break
                # One sub-attack on the points still robust, in pyautoattack's own batching.
                aa.attacks_to_run = [name]
                adv, y_adv = aa.run_standard_evaluation(x[idx], y[idx], batch_size=self.batch_size)
                hit = (y_adv.to(y.device) != y[idx])
                x_adv[idx[hit]] = adv.to(x.device)[hit]
                broken_by[idx[hit]] = k
                robust[idx[hit]] = False
        return x_adv, broken_by

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.run_detailed(model, x, y)[0]


@dataclass(frozen=True)
class AttackPreset:
    """A registered attack: its class and default settings; call with ``eps`` and overrides."""

    cls: Type[Any]
    defaults: Mapping[str, Any] = field(default_factory=dict)

    def __call__(self, eps: float, **overrides: Any) -> Attack:
        fields = {f.name for f in dataclasses.fields(self.cls)}
        unknown = sorted(set(overrides) - fields)
        if unknown:
            raise ValueError(f"{self.cls.__name__} has no setting(s) {', '.join(unknown)}; choices: {', '.join(sorted(fields - {'eps'}))}")
        return self.cls(eps, **{**self.defaults, **overrides})

    def with_text_overrides(self, pairs: List[str], name: str) -> "AttackPreset":
        """A preset with ``key=value`` strings applied (typed from the class's fields)."""
        from bench.spec import coerce

        types = typing.get_type_hints(self.cls)
        values = dict(self.defaults)
        for pair in pairs:
            key, sep, raw = pair.partition("=")
            if not sep or not key:
                raise ValueError(f"attack {name!r}: expected key=value after ':', got {pair!r}")
            if key == "eps":
                raise ValueError(f"attack {name!r}: eps comes from the run spec, not the attack name")
            if key not in types or key.startswith("_"):
                allowed = sorted(f.name for f in dataclasses.fields(self.cls) if f.name != "eps")
                raise ValueError(f"attack {name!r}: unknown setting {key!r}; choices: {', '.join(allowed)}")
            values[key] = coerce(raw.replace("+", ",") if "+" in raw else raw, types[key], f"attack {name!r} {key}")
        return AttackPreset(self.cls, values)


class AttackRegistry(Registry[AttackPreset]):
    """The attack registry; ``get`` also resolves ``base:key=value`` names."""

    def get(self, name: str) -> AttackPreset:
        """The preset ``name``, with any ``:key=value`` overrides applied and checked."""
        base, *pairs = name.split(":")
        preset = super().get(base)
        if not pairs:
            return preset
        resolved = preset.with_text_overrides(pairs, name)
        # Build once with a unit budget so bad values fail now, not mid-evaluation.
        resolved(1.0)
        return resolved


ATTACKS = AttackRegistry("attack")

# PGD family (cheap white-box; step eps/4 and a uniform random start unless overridden).
ATTACKS.add("pgd", AttackPreset(PGD), "L-inf PGD, CE loss, 20 steps of eps/4, random start; any setting in the name, e.g. pgd:steps=50:restarts=5")
ATTACKS.add("cw", AttackPreset(PGD, {"loss": "cw"}), "L-inf PGD with the Carlini-Wagner margin loss; same settings as pgd")
ATTACKS.add("fgsm", AttackPreset(PGD, {"steps": 1, "rel_step": 1.0, "random_start": False}),
            "FGSM: one signed-gradient step of size eps, no random start")
ATTACKS.add("pgd20", AttackPreset(PGD, {"steps": 20}), "L-inf PGD, 20 steps, CE loss, step eps/4, random start")
ATTACKS.add("pgd50", AttackPreset(PGD, {"steps": 50}), "L-inf PGD, 50 steps, CE loss, step eps/4, random start")
ATTACKS.add("pgd100", AttackPreset(PGD, {"steps": 100}), "L-inf PGD, 100 steps, CE loss, step eps/4, random start")
ATTACKS.add("cw20", AttackPreset(PGD, {"steps": 20, "loss": "cw"}), "L-inf PGD, 20 steps, Carlini-Wagner margin loss, step eps/4, random start")
ATTACKS.add("eot-pgd", AttackPreset(PGD, {"steps": 20, "eot_samples": 20}),
            "PGD-20 with each gradient averaged over 20 forward passes (EOT), for randomised models")
# Attacks on random switches (R2S): against one candidate (non-adaptive) or the whole ensemble (adaptive).
ATTACKS.add("r2s-nonadaptive", AttackPreset(CandidatePGD, {"steps": 20}),
            "PGD-20 crafted against one randomly drawn candidate of a random switch (the R2S paper's evaluation)")
ATTACKS.add("ensemble-pgd", AttackPreset(EnsemblePGD, {"steps": 20}),
            "PGD-20 on the mean logits of all candidates of a random switch (adaptive)")
# AutoAttack family (expensive; in the cascade it runs only on points still robust).
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


def make_attack(name: str, eps: float, **overrides: Any) -> Attack:
    """Instantiate registered attack ``name`` (``base:key=value`` allowed) at budget ``eps``."""
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    return ATTACKS.get(name)(eps, **overrides)
