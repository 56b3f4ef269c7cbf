"""Madry et al.'s PGD adversarial training: cross-entropy on the training PGD's last iterate."""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from bench.attacks import PGD
from bench.trainers.base import TRAINERS, Trainer, TrainSettings


class MadryPGD(Trainer):
    """Madry PGD-AT: cross-entropy on PGD examples crafted against the current network."""

    def craft(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: TrainSettings, attack: PGD,
              gen: torch.Generator) -> Tuple[torch.Tensor, int]:
        """The training PGD's last iterate (clean inputs with 0 steps)."""
        if cfg.train_steps == 0:
            return x, 0
        return attack(model, x, y), len(x) * cfg.train_steps

    def loss(self, model: nn.Module, x: torch.Tensor, x_in: torch.Tensor, y: torch.Tensor,
             cfg: TrainSettings) -> Tuple[torch.Tensor, int]:
        """Mean cross-entropy on the crafted inputs."""
        return F.cross_entropy(model(x_in), y), len(x)


TRAINERS.add("pgd", MadryPGD(), "Madry PGD adversarial training (cross-entropy on PGD examples)")
