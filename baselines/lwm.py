"""Least weight magnitude (LWM): one-shot magnitude pruning of a dense AT network, then AT fine-tuning.

The simplest strong pruned-AT baseline (HYDRA's comparison point): the shared
dense AT stage (its best-validation or, with ``--start-from last``, its last
epoch, as HYDRA's scripts hand over), the smallest ``|w|`` pruned to the target sparsity in one
shot (same fraction per layer, or ranked globally with ``--scope global``),
then the surviving weights fine-tuned with the spec's trainer at
``finetune_lr_scale * --lr`` under the fixed mask.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch.nn as nn

from bench.core.config import spec_field
from bench.methods import Method, RunContext, register
from bench.methods.stages import (
    DENSE_INITS,
    INIT_FROM_HELP,
    PRUNE_SCOPES,
    START_FROM,
    check_epochs,
    check_given_network,
    check_init_from,
    check_lr_scale,
    dense_network,
    stage_epochs,
    train_weights,
)
from bench.nn.masking import apply_masks, check_granularity, magnitude_scores
from bench.spec import RunSpec


@dataclass(frozen=True)
class LWMHparams:
    """LWM hyperparameters."""

    scope: str = spec_field("layer", "magnitude ranking: layer (same sparsity per layer) | global", choices=PRUNE_SCOPES)
    pretrain_epochs: Optional[int] = field(default=None, metadata={"help": "dense AT epochs (none = --epochs)"})
    finetune_epochs: Optional[int] = field(default=None, metadata={"help": "AT fine-tuning epochs after pruning (none = --epochs)"})
    finetune_lr_scale: float = field(default=0.1, metadata={"help": "fine-tuning learning rate as a fraction of --lr"})
    start_from: str = spec_field("best", "the dense network pruned: its best-validation or last epoch (HYDRA's "
                                 "scripts: last)", choices=START_FROM)
    dense_init: str = spec_field("pytorch", "initialisation of the dense network: pytorch (layer defaults) | openlth "
                                 "| hydra | glorot (OpenLTH's, HYDRA's, Cosentino's code)", choices=DENSE_INITS)
    init_from: Optional[str] = field(default=None, metadata={"help": INIT_FROM_HELP})


@register("lwm", "least weight magnitude: dense AT, one-shot |w| pruning, AT fine-tuning")
class LWM(Method):
    """One-shot magnitude pruning of the shared dense AT network."""

    Hparams = LWMHparams
    bn_affine = True
    # HYDRA's code keeps its best epoch (picked on the test set; here on the validation split).
    reference_select = "best"
    granularities = ("weight", "channel")

    def validate(self, spec: RunSpec) -> None:
        """Per-stage epochs and the fine-tuning lr must be valid (the scope is a checked choice)."""
        hp = spec.hparams
        check_epochs(pretrain_epochs=hp.pretrain_epochs, finetune_epochs=hp.finetune_epochs)
        check_lr_scale(hp.finetune_lr_scale)
        check_init_from(hp.init_from)
        check_granularity(spec.granularity, hp.scope)

    def validate_model(self, spec: RunSpec, model: nn.Module) -> None:
        """A given dense network (``--init-from``) must be the spec's architecture, checked before anything runs."""
        check_given_network(spec, model)

    def find_ticket(self, ctx: RunContext) -> nn.Module:
        """Dense AT, prune the smallest weights once, fine-tune the survivors with AT."""
        hp = ctx.hp
        model = dense_network(ctx, hp.pretrain_epochs, hp.start_from, hp.dense_init, hp.init_from)
        # One-shot magnitude pruning to the target sparsity (weights, or whole channels by their filters' L1 norm).
        apply_masks(model, magnitude_scores, ctx.spec.sparsity, hp.scope, ctx.spec.granularity)
        # AT fine-tuning of the surviving weights under the fixed mask.
        return train_weights(ctx, model, stage_epochs(ctx, hp.finetune_epochs), ctx.spec.lr * hp.finetune_lr_scale,
                             ctx.run_dir / "finetune", desc="lwm finetune")
