"""Cosentino et al. (2019)'s adversarial loss: half clean, half adversarial cross-entropy.

Their training code (TensorFlow + cleverhans) minimises
``0.5 * CE(f(x), y) + 0.5 * CE(f(x'), y)`` with label smoothing 0.1, where
``x'`` is PGD (random start, last iterate) run without the true labels, so
cleverhans attacks the model's own predictions.
"""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from bench.attacks import PGD
from bench.trainers.base import TRAINERS, Trainer, TrainSettings

# Weight of the adversarial term and the label smoothing of both terms (their get_adversarial_loss / train_once).
ADV_WEIGHT = 0.5
LABEL_SMOOTHING = 0.1


class CosentinoMixed(Trainer):
    """0.5 clean + 0.5 adversarial cross-entropy (label smoothing 0.1), PGD on the predicted labels."""

    def craft(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: TrainSettings, attack: PGD,
              gen: torch.Generator) -> Tuple[torch.Tensor, int]:
        """The training PGD's last iterate against the model's own predictions (clean inputs with 0 steps)."""
        if cfg.train_steps == 0:
            return x, 0
        with torch.no_grad():
            predicted = model(x).argmax(1)
        return attack(model, x, predicted), len(x) * (cfg.train_steps + 1)

    def loss(self, model: nn.Module, x: torch.Tensor, x_in: torch.Tensor, y: torch.Tensor,
             cfg: TrainSettings) -> Tuple[torch.Tensor, int]:
        """Weighted clean and adversarial cross-entropy with label smoothing."""
        clean = F.cross_entropy(model(x), y, label_smoothing=LABEL_SMOOTHING)
        adv = F.cross_entropy(model(x_in), y, label_smoothing=LABEL_SMOOTHING)
        return (1 - ADV_WEIGHT) * clean + ADV_WEIGHT * adv, 2 * len(x)


TRAINERS.add("cosentino", CosentinoMixed(),
             "Cosentino et al.: 0.5 clean + 0.5 PGD cross-entropy, label smoothing 0.1, PGD on predicted labels")
