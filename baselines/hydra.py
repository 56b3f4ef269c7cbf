"""HYDRA (Sehwag et al., NeurIPS 2020): importance scores learned under the robust loss.

Three stages, all through the shared training loop:

1. the shared dense AT stage (one artifact for every method with this base);
2. weights frozen; every prunable weight gets a score initialised to
   ``sqrt(6 / fan_in) * w / max|w|`` (so the first mask is the magnitude
   mask); the scores are trained under the spec's robust loss with the
   straight-through mask (top ``1 - sparsity`` of ``|scores|`` per layer,
   refreshed every optimiser step). The scores and, as in HYDRA's code
   (no ``--freeze-bn``), BatchNorm's affine parameters learn in this stage
   (``--score-bn frozen`` freezes them too);
3. the mask fixed, the surviving weights fine-tuned with AT at
   ``finetune_lr_scale * --lr`` (HYDRA: 0.1 then 0.01).

Each stage starts from the previous one's best-validation state, or with
``--start-from last`` from its last epoch (HYDRA's scripts load
``checkpoint.pth.tar``, the last epoch). HYDRA's paper trains with TRADES;
here every stage uses the spec's ``--trainer`` so HYDRA, LWM, ALTH and RST are
compared under one loss. ``configs/presets/hydra-reference.yaml`` sets HYDRA's
own defaults (TRADES with 10 steps, weight decay 1e-4, 100 pre-training, 20
score and 100 fine-tuning epochs, last-epoch hand-over).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.nn as nn

from bench.core.config import spec_field
from bench.methods import Method, RunContext, register
from bench.methods.stages import (
    DENSE_INITS,
    INIT_FROM_HELP,
    START_FROM,
    bn_parameters,
    check_epochs,
    check_given_network,
    check_init_from,
    check_lr_scale,
    dense_network,
    last_epoch_state,
    stage_epochs,
    train_weights,
)
from bench.nn.masking import prunable_layers, score_mask_refresher, set_trainable
from bench.spec import RunSpec

SCORE_BN = ("trained", "frozen")


@dataclass(frozen=True)
class HydraHparams:
    """HYDRA hyperparameters."""

    pretrain_epochs: Optional[int] = field(default=None, metadata={"help": "dense AT epochs (none = --epochs)"})
    score_epochs: Optional[int] = field(default=None, metadata={"help": "score-learning epochs, weights frozen (none = --epochs)"})
    finetune_epochs: Optional[int] = field(default=None, metadata={"help": "AT fine-tuning epochs after pruning (none = --epochs)"})
    finetune_lr_scale: float = field(default=0.1, metadata={"help": "fine-tuning learning rate as a fraction of --lr"})
    score_bn: str = spec_field("trained", "BatchNorm's affine tensors in the score stage: trained (HYDRA's code) "
                               "| frozen", choices=SCORE_BN)
    start_from: str = spec_field("best", "next stage starts from the previous stage's best-validation or last epoch "
                                 "(OpenLTH, HYDRA: last)", choices=START_FROM)
    dense_init: str = spec_field("pytorch", "initialisation of the dense network: pytorch (layer defaults) | openlth "
                                 "| hydra | glorot (OpenLTH's, HYDRA's, Cosentino's code)", choices=DENSE_INITS)
    init_from: Optional[str] = field(default=None, metadata={"help": INIT_FROM_HELP})


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
    # HYDRA's code keeps its best epoch (picked on the test set; here on the validation split).
    reference_select = "best"
    granularities = ("weight", "channel")

    def validate(self, spec: RunSpec) -> None:
        """Per-stage epochs and the fine-tuning lr must be valid."""
        hp = spec.hparams
        check_epochs(pretrain_epochs=hp.pretrain_epochs, score_epochs=hp.score_epochs, finetune_epochs=hp.finetune_epochs)
        check_lr_scale(hp.finetune_lr_scale)
        check_init_from(hp.init_from)

    def validate_model(self, spec: RunSpec, model: nn.Module) -> None:
        """A given dense network (``--init-from``) must be the spec's architecture, checked before anything runs."""
        check_given_network(spec, model)

    def find_ticket(self, ctx: RunContext) -> nn.Module:
        """Dense AT, score learning over frozen weights, AT fine-tuning of the survivors."""
        hp = ctx.hp
        model = dense_network(ctx, hp.pretrain_epochs, hp.start_from, hp.dense_init, hp.init_from)
        # Stage 2: the scores (and BatchNorm's affine tensors unless frozen) learn; masks follow |scores| each step.
        init_scores_from_weights(model)
        set_trainable(model, weights=False, scores=True)
        trained = [layer.scores for _name, layer in prunable_layers(model)]
        if hp.score_bn == "trained":
            trained += bn_parameters(model)
            for p in bn_parameters(model):
                p.requires_grad_(True)
        refresh = score_mask_refresher(model, ctx.spec.sparsity, ctx.spec.granularity)
        refresh()
        ctx.train(model, trained, ctx.train_config(epochs=stage_epochs(ctx, hp.score_epochs)), ctx.run_dir / "scores",
                  refresh, desc="hydra scores")
        if hp.start_from == "last" and last_epoch_state(model, ctx.run_dir / "scores", ctx.device):
            refresh()
        set_trainable(model, weights=False, scores=False)
        # Stage 3: the mask is fixed; AT fine-tuning of the surviving weights.
        return train_weights(ctx, model, stage_epochs(ctx, hp.finetune_epochs), ctx.spec.lr * hp.finetune_lr_scale,
                             ctx.run_dir / "finetune", desc="hydra finetune")
