"""The trainer contract: how one optimiser step crafts its inputs and what loss it minimises.

A trainer is one file in :mod:`bench.trainers` with a class deriving from
:class:`Trainer` and ``TRAINERS.add(name, instance)``; the registry imports
every module of the package on first use, so ``--trainer NAME`` (and its
validation, ``bench list`` and the tests) pick a new one up with no other
edit. The shared training loop (:mod:`bench.train`) calls :meth:`Trainer.craft`
with BatchNorm in the spec's ``craft_bn`` mode (eval or train), then :meth:`Trainer.loss`
in train mode.
"""
from __future__ import annotations

import abc
from typing import ClassVar, Protocol, Tuple

import torch
import torch.nn as nn

from bench.attacks import PGD
from bench.core.registry import Registry


class TrainSettings(Protocol):
    """The training settings a trainer reads (a ``TrainConfig`` has them)."""

    @property
    def eps(self) -> float: ...

    @property
    def train_steps(self) -> int: ...

    @property
    def train_step_size(self) -> float: ...

    @property
    def trades_beta(self) -> float: ...


class Trainer(abc.ABC):
    """One training loss: inner maximisation (``craft``) and outer minimisation (``loss``)."""

    # Whether the trainer trains on adversarial inputs (model selection then uses PGD robust accuracy).
    adversarial: ClassVar[bool] = True

    @abc.abstractmethod
    def craft(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: TrainSettings, attack: PGD,
              gen: torch.Generator) -> Tuple[torch.Tensor, int]:
        """The inputs this step trains on (BatchNorm mode set by the loop) and the example passes spent.

        ``attack`` is the step's seeded training PGD (last iterate, no early stop).
        """

    @abc.abstractmethod
    def loss(self, model: nn.Module, x: torch.Tensor, x_in: torch.Tensor, y: torch.Tensor,
             cfg: TrainSettings) -> Tuple[torch.Tensor, int]:
        """The loss to minimise (model in train mode) and the example passes spent."""


TRAINERS: Registry[Trainer] = Registry("trainer", plugins=("bench.trainers",), entry_points="robust_tickets.trainers")
