"""Randomised models as attacks see them: the random-switch protocol and the expected accuracy of a point.

A random switch picks one of ``n_candidates`` deterministic networks per
forward call (or per example) uniformly at random. Single draws say little
about such a model: an attack on it must judge its iterates by the expected
accuracy, which for a switch is exact, the mean correctness over its
candidates (K forward passes; exact for per-call and per-example draws alike,
since each example's candidate is uniform either way).
"""
from __future__ import annotations

import typing
from typing import Protocol, Sequence

import torch
import torch.nn as nn


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


def is_randomized(model: nn.Module) -> bool:
    """Whether attacks must judge their points on ``model`` by expected accuracy (a random switch)."""
    return isinstance(model, SwitchModel)


@torch.no_grad()
def expected_correct(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per example, the probability that ``model`` classifies it correctly: exact over a switch's
    candidates, the 0/1 correctness of a deterministic model."""
    if not isinstance(model, SwitchModel):
        logits: torch.Tensor = model(x)
        return (logits.argmax(1) == y).float()
    votes = [(model.candidate(k)(x).argmax(1) == y).float() for k in range(model.n_candidates)]
    return torch.stack(votes).mean(0)
