"""Robust Scratch Tickets (Fu et al., NeurIPS 2021).

Learned masks over frozen random weights: every prunable weight gets a score,
the forward pass keeps the top-(1-sparsity) of |scores| in each layer, the
scores get a straight-through gradient and are trained on PGD adversarial
examples crafted against the current masked network. Weights stay at their
signed Kaiming-constant initialisation; BatchNorm is non-affine.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn

from bench.masking import prunable_layers, score_mask_refresher, set_trainable
from bench.methods import Method, RunContext, register
from bench.models import init_signed_kaiming_constant
from bench.spec import RunSpec


@dataclass(frozen=True)
class RSTHparams:
    """RST hyperparameters."""

    weight_init: str = "signed-constant"


@torch.no_grad()
def init_scores(model: nn.Module) -> None:
    """Kaiming-uniform scores (edge-popup's choice)."""
    for _name, layer in prunable_layers(model):
        nn.init.kaiming_uniform_(layer.scores, a=math.sqrt(5))


@register("rst", "Robust Scratch Ticket: adversarially learned mask over frozen random weights")
class RST(Method):
    """Robust Scratch Ticket search."""

    Hparams = RSTHparams
    bn_affine = False

    def validate(self, spec: RunSpec) -> None:
        """Weight init must be one this method knows."""
        if spec.hparams.weight_init not in ("signed-constant", "kaiming-normal"):
            raise ValueError(f"unknown rst weight_init {spec.hparams.weight_init!r}; choices: signed-constant, kaiming-normal")

    def find_ticket(self, ctx: RunContext) -> nn.Module:
        """Search the scores of a frozen random network under an adversarial loss."""
        model = ctx.build_model(bn_affine=False)
        # Frozen random weights at the chosen initialisation.
        if ctx.hp.weight_init == "signed-constant":
            init_signed_kaiming_constant(model, torch.Generator().manual_seed(ctx.spec.seed))
        else:
            for _name, layer in prunable_layers(model):
                nn.init.kaiming_normal_(layer.weight, mode="fan_in", nonlinearity="relu")
        init_scores(model)
        # Only the scores learn; masks come from |scores| once per step.
        set_trainable(model, weights=False, scores=True)
        refresh = score_mask_refresher(model, ctx.spec.sparsity)
        scores = [layer.scores for _name, layer in prunable_layers(model)]
        ctx.train(model, scores, ctx.train_config(), ctx.run_dir / "search", refresh, desc="rst search")
        set_trainable(model, weights=False, scores=False)
        return model
