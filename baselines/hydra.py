"""HYDRA (Sehwag et al., NeurIPS 2020): importance scores learned under the robust loss.

Three stages, all through the shared training loop:

1. the shared dense AT stage (one artifact for every method with this base);
2. weights frozen; every prunable weight gets a score initialised to
   ``sqrt(6 / fan_in) * w / max|w|`` (so the first mask is the magnitude
   mask); the scores are trained under the spec's robust loss with the
   straight-through mask (top ``1 - sparsity`` of ``|scores|`` per layer,
   refreshed every optimiser step). Only the scores learn in this stage;
   BatchNorm's affine parameters stay frozen with the weights (HYDRA's code
   lets them train by default; freezing keeps "weights frozen" literal);
3. the mask fixed, the surviving weights fine-tuned with AT at
   ``finetune_lr_scale * --lr`` (HYDRA: 0.1 then 0.01).

HYDRA's paper trains with TRADES; here every stage uses the spec's
``--trainer`` so HYDRA, LWM, ALTH and RST are compared under one loss (pass
``--trainer trades`` to get the paper's choice for every method alike).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.nn as nn

from bench.masking import prunable_layers, score_mask_refresher, set_trainable
from bench.methods import Method, RunContext, register
from bench.spec import RunSpec
from bench.stages import check_epochs, check_lr_scale, dense_stage, stage_epochs, train_weights


@dataclass(frozen=True)
class HydraHparams:
    """HYDRA hyperparameters."""

    pretrain_epochs: Optional[int] = field(default=None, metadata={"help": "dense AT epochs (none = --epochs)"})
    score_epochs: Optional[int] = field(default=None, metadata={"help": "score-learning epochs, weights frozen (none = --epochs)"})
    finetune_epochs: Optional[int] = field(default=None, metadata={"help": "AT fine-tuning epochs after pruning (none = --epochs)"})
    finetune_lr_scale: float = field(default=0.1, metadata={"help": "fine-tuning learning rate as a fraction of --lr"})


@torch.no_grad()
def init_scores_from_weights(model: nn.Module) -> None:
    """HYDRA's score initialisation: ``sqrt(6 / fan_in) * w / max|w|`` per layer."""
    for _name, layer in prunable_layers(model):
        w = layer.weight.detach()
        fan_in = w[0].numel()
        layer.scores.copy_(math.sqrt(6.0 / fan_in) * w / w.abs().max().clamp_min(1e-12))


@register("hydra", "HYDRA: dense AT, scores (init ~|w|) learned under the robust loss, AT fine-tuning")
class Hydra(Method):
    """Pruning by learned importance scores under the adversarial loss."""

    Hparams = HydraHparams
    bn_affine = True

    def validate(self, spec: RunSpec) -> None:
        """Per-stage epochs and the fine-tuning lr must be valid."""
        hp = spec.hparams
        check_epochs(pretrain_epochs=hp.pretrain_epochs, score_epochs=hp.score_epochs, finetune_epochs=hp.finetune_epochs)
        check_lr_scale(hp.finetune_lr_scale)

    def find_ticket(self, ctx: RunContext) -> nn.Module:
        """Dense AT, score learning over frozen weights, AT fine-tuning of the survivors."""
        hp = ctx.hp
        model = dense_stage(ctx, hp.pretrain_epochs)
        # Stage 2: only the scores learn; masks follow |scores| each step.
        init_scores_from_weights(model)
        set_trainable(model, weights=False, scores=True)
        refresh = score_mask_refresher(model, ctx.spec.sparsity)
        refresh()
        scores = [layer.scores for _name, layer in prunable_layers(model)]
        ctx.train(model, scores, ctx.train_config(epochs=stage_epochs(ctx, hp.score_epochs)), ctx.run_dir / "scores",
                  refresh, desc="hydra scores")
        set_trainable(model, weights=False, scores=False)
        # Stage 3: the mask is fixed; AT fine-tuning of the surviving weights.
        return train_weights(ctx, model, stage_epochs(ctx, hp.finetune_epochs), ctx.spec.lr * hp.finetune_lr_scale,
                             ctx.run_dir / "finetune", desc="hydra finetune")
