"""Standard (non-adversarial) training: cross-entropy on the clean inputs."""
from __future__ import annotations

from typing import ClassVar, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from bench.attacks import PGD
from bench.trainers.base import TRAINERS, Trainer, TrainSettings


class Clean(Trainer):
    """Clean training (a control; model selection uses clean validation accuracy)."""

    adversarial: ClassVar[bool] = False

    def craft(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: TrainSettings, attack: PGD,
              gen: torch.Generator) -> Tuple[torch.Tensor, int]:
        """The clean inputs, unchanged."""
        return x, 0

    def loss(self, model: nn.Module, x: torch.Tensor, x_in: torch.Tensor, y: torch.Tensor,
             cfg: TrainSettings) -> Tuple[torch.Tensor, int]:
        """Mean cross-entropy on the clean inputs."""
        return F.cross_entropy(model(x_in), y), len(x)


TRAINERS.add("clean", Clean(), "clean training (no adversarial examples; a control)")
