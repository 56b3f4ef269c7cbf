"""TRADES (Zhang et al., 2019): clean cross-entropy plus beta times KL(f(x') || f(x))."""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from bench.attacks import PGD, no_param_grad
from bench.attacks.norms import ascent, project
from bench.trainers.base import TRAINERS, Trainer, TrainSettings

# TRADES starts its inner maximisation from x plus Gaussian noise of this std.
START_STD = 0.001


class Trades(Trainer):
    """TRADES: inner PGD on the KL divergence from the clean prediction, outer CE + beta * KL."""

    def craft(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: TrainSettings, attack: PGD,
              gen: torch.Generator) -> Tuple[torch.Tensor, int]:
        """PGD on KL(f(x') || f(x)) from a small Gaussian start, projected onto the eps-ball and [0,1]."""
        if cfg.train_steps == 0:
            return x, 0
        with torch.no_grad():
            p_clean = F.softmax(model(x), 1)
        x_adv = (x + START_STD * torch.randn(x.shape, generator=gen).to(x.device)).clamp(0, 1)
        with no_param_grad(model):
            for _ in range(cfg.train_steps):
                x_adv.requires_grad_(True)
                kl = F.kl_div(F.log_softmax(model(x_adv), 1), p_clean, reduction="sum")
                grad = torch.autograd.grad(kl, x_adv)[0]
                if attack.norm == "Linf":
                    x_adv = x_adv.detach() + cfg.train_step_size * grad.sign()
                    x_adv = torch.min(torch.max(x_adv, x - cfg.eps), x + cfg.eps).clamp(0, 1)
                else:
                    x_adv = project(x_adv.detach() + ascent(grad, cfg.train_step_size, attack.norm), x, cfg.eps, attack.norm)
        return x_adv.detach(), len(x) * (cfg.train_steps + 1)

    def loss(self, model: nn.Module, x: torch.Tensor, x_in: torch.Tensor, y: torch.Tensor,
             cfg: TrainSettings) -> Tuple[torch.Tensor, int]:
        """Clean cross-entropy plus ``trades_beta`` times the batch-mean KL at the crafted inputs."""
        logits = model(x)
        loss = F.cross_entropy(logits, y) + cfg.trades_beta * F.kl_div(
            F.log_softmax(model(x_in), 1), F.softmax(logits, 1), reduction="batchmean")
        return loss, 2 * len(x)


TRAINERS.add("trades", Trades(), "TRADES: clean CE + beta * KL(f(x') || f(x)) (set --trades-beta)")
