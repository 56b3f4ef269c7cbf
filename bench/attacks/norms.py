"""Threat models: the norm of a perturbation, projection onto its eps-ball (intersected with the [0,1] box), the
steepest-ascent step and a random start, for L-inf, L2 and L1.

L-inf keeps the exact operations PGD always used (sign step, elementwise clamp), so L-inf numbers do not move.
L2 projects by rescaling; clamping to the box afterwards never leaves the ball (each coordinate moves towards the
clean image). L1 projects with the sort-based simplex projection of Duchi et al. (2008)."""
from __future__ import annotations

import math
from typing import Dict, Optional, Tuple

import torch

NORMS = ("Linf", "L2", "L1")
# Budgets with a standard in the field, per dataset and norm (RobustBench: CIFAR-10 L2 0.5; Croce & Hein 2021,
# "Mind the box": CIFAR-10 L1 12). L-inf defaults live with the datasets.
STANDARD_EPS: Dict[Tuple[str, str], float] = {("cifar10", "L2"): 0.5, ("cifar100", "L2"): 0.5, ("cifar10", "L1"): 12.0,
                                              ("cifar100", "L1"): 12.0}


def check_norm(norm: str) -> None:
    """A known threat model, else a ``ValueError`` listing them."""
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; choices: {', '.join(NORMS)}")


def largest_budget(norm: str, dims: int) -> float:
    """The diameter of the [0,1] box of ``dims`` pixels in ``norm``: a larger budget allows nothing more."""
    if norm == "Linf":
        return 1.0
    return math.sqrt(dims) if norm == "L2" else float(dims)


def check_budget_value(eps: float, norm: str, dims: int) -> None:
    """A budget must be finite, positive and at most the box's diameter in ``norm`` (a ``ValueError`` naming
    ``--eps`` otherwise)."""
    top = largest_budget(norm, dims)
    if not (math.isfinite(eps) and 0 < eps <= top):
        raise ValueError(f"--eps must be in (0, {top:g}] for {norm} on images of {dims} pixel values (the box's "
                         f"diameter), got {eps}")


def standard_eps(dataset: str, norm: str) -> Optional[float]:
    """The field's budget for ``dataset`` under an L2 or L1 threat model, if there is one."""
    return STANDARD_EPS.get((dataset, norm))


def perturbation_norm(delta: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-example norm of ``delta`` (N, ...)."""
    flat = delta.flatten(1)
    size: torch.Tensor
    if norm == "Linf":
        size = flat.abs().amax(1)
    elif norm == "L2":
        size = flat.norm(p=2, dim=1)
    else:
        size = flat.abs().sum(1)
    return size


def _per_example(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A per-example vector shaped to broadcast over ``like``."""
    return v.view(-1, *([1] * (like.dim() - 1)))


def _project_l1(delta: torch.Tensor, eps: float) -> torch.Tensor:
    """Euclidean projection of each example's ``delta`` onto the L1 ball of radius ``eps`` (Duchi et al. 2008)."""
    flat = delta.flatten(1)
    inside = flat.abs().sum(1) <= eps
    u = flat.abs().sort(dim=1, descending=True).values
    css = u.cumsum(1)
    k = torch.arange(1, flat.shape[1] + 1, device=flat.device, dtype=flat.dtype)
    rho = ((u * k) > (css - eps)).to(flat.dtype).mul(k).argmax(1, keepdim=True)
    theta = (css.gather(1, rho) - eps) / (rho + 1).to(flat.dtype)
    shrunk = flat.sign() * (flat.abs() - theta).clamp(min=0)
    return torch.where(inside[:, None], flat, shrunk).view_as(delta)


def project(xa: torch.Tensor, x: torch.Tensor, eps: float, norm: str, lo: Optional[torch.Tensor] = None,
            hi: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``xa`` moved into the eps-ball around ``x`` and the [0,1] box. For L-inf, ``lo``/``hi`` (the ball's corners
    clamped to the box) are the exact elementwise bounds PGD uses."""
    if norm == "Linf":
        low = (x - eps).clamp(min=0) if lo is None else lo
        high = (x + eps).clamp(max=1) if hi is None else hi
        return torch.min(torch.max(xa, low), high)
    delta = xa - x
    if norm == "L2":
        size = perturbation_norm(delta, "L2")
        delta = delta * _per_example((eps / size.clamp(min=1e-12)).clamp(max=1.0), delta)
    else:
        delta = _project_l1(delta, eps)
    return (x + delta).clamp(0, 1)


def ascent(grad: torch.Tensor, alpha: float, norm: str) -> torch.Tensor:
    """The steepest-ascent step of length ``alpha`` in ``norm``: sign (L-inf), normalised gradient (L2), or the
    largest-magnitude coordinate of each example (L1)."""
    if norm == "Linf":
        return alpha * grad.sign()
    if norm == "L2":
        size = perturbation_norm(grad, "L2")
        return alpha * grad / _per_example(size.clamp(min=1e-12), grad)
    flat = grad.flatten(1)
    top = flat.abs().argmax(1, keepdim=True)
    step = torch.zeros_like(flat).scatter_(1, top, flat.gather(1, top).sign())
    return (alpha * step).view_as(grad)


def random_start(x: torch.Tensor, eps: float, norm: str, generator: torch.Generator) -> torch.Tensor:
    """A random point of the eps-ball around ``x`` (in the box): uniform per coordinate (L-inf), or a random
    direction at a uniform fraction of the radius (L2, L1)."""
    if norm == "Linf":
        noise = (torch.rand(x.shape, generator=generator) * 2 - 1).to(x.device) * eps
        return torch.min(torch.max(x + noise, (x - eps).clamp(min=0)), (x + eps).clamp(max=1))
    direction = torch.randn(x.shape, generator=generator).to(x.device)
    if norm == "L1":
        direction = direction.sign() * torch.rand(x.shape, generator=generator).to(x.device)
    radius = torch.rand(len(x), generator=generator).to(x.device) * eps
    direction = direction * _per_example(radius / perturbation_norm(direction, norm).clamp(min=1e-12), direction)
    return project(x + direction, x, eps, norm)
