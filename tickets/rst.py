"""Robust Scratch Tickets (Fu et al., NeurIPS 2021).

Learned masks over frozen random weights: every prunable weight gets a score,
the forward pass keeps the top-(1-sparsity) of |scores| in each layer, the
scores get a straight-through gradient and are trained on PGD adversarial
examples crafted against the current masked network. Weights stay at their
signed Kaiming-constant initialisation; BatchNorm is non-affine and, as in
the reference code (every layer built with ``bias=False``), no linear layer
has a bias (``--linear-bias true`` is the pre-protocol-2 network, whose
classifier kept a frozen random bias).

``--finetune inherit|reinit`` adds the paper's fine-tuning variants: after the
search the mask is fixed and the surviving weights are trained with the
spec's adversarial trainer, starting from the frozen random weights they
had (``inherit``, "FT_RST_Inherit") or from a fresh Kaiming-normal
initialisation (fan_in, ReLU gain; ``reinit``, "FT_RST_Reinit"; ``--reinit-init
pytorch-default`` is the pre-protocol-2 choice), for ``finetune_epochs``
(none = ``--epochs``) at ``finetune_lr_scale * --lr`` (default 1: the
reference fine-tunes at its config's learning rate and schedule). BatchNorm
stays non-affine.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
import torch.nn as nn

from bench.core.config import spec_field
from bench.methods import Method, Network, RunContext, register
from bench.methods.stages import WEIGHT_INITS, check_epochs, check_lr_scale, init_frozen_weights, keep_selected, signed_constant_regenerator, stage_epochs, train_weights
from bench.nn.masking import frozen_fingerprint, prunable_layers, score_mask_refresher, set_trainable
from bench.spec import RunSpec

FINETUNES = ("none", "inherit", "reinit")
REINIT_INITS = ("kaiming-normal", "pytorch-default")


@dataclass(frozen=True)
class RSTHparams:
    """RST hyperparameters."""

    weight_init: str = spec_field("signed-constant", "frozen random weights: signed-constant | kaiming-normal", choices=WEIGHT_INITS)
    finetune: str = spec_field("none", "AT fine-tuning of the surviving weights: none | inherit | reinit", choices=FINETUNES)
    finetune_epochs: Optional[int] = field(default=None, metadata={"help": "AT fine-tuning epochs after pruning (none = --epochs)"})
    finetune_lr_scale: float = field(default=1.0, metadata={"help": "fine-tuning learning rate as a fraction of --lr"})
    reinit_init: str = spec_field("kaiming-normal", "with --finetune reinit: kaiming-normal (fan_in, relu; the reference) "
                                  "| pytorch-default (kaiming-uniform a=sqrt(5))", choices=REINIT_INITS)
    linear_bias: bool = field(default=False, metadata={"help": "linear layers with (frozen random) biases; the "
                                                               "references have none"})


@torch.no_grad()
def reinit_weights(model: nn.Module, fresh: nn.Module, init: str) -> None:
    """Re-initialise the prunable weights of ``model``; masks untouched.

    ``kaiming-normal`` draws them in place (fan_in, ReLU gain, the reference's
    choice); ``pytorch-default`` copies those of ``fresh``, a newly built model.
    """
    new = dict(prunable_layers(fresh))
    for name, layer in prunable_layers(model):
        if init == "kaiming-normal":
            nn.init.kaiming_normal_(layer.weight, mode="fan_in", nonlinearity="relu")
        else:
            layer.weight.copy_(new[name].weight)


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
    # RST's code keeps its best epoch (picked on the test set; here on the validation split).
    reference_select = "best"
    granularities = ("weight", "channel")

    def network(self, spec: RunSpec) -> Network:
        """Non-affine BatchNorm; linear biases only with ``--linear-bias true``."""
        return Network(bn_affine=False, linear_bias=bool(spec.hparams.linear_bias))

    def regenerate_weights(self, spec: RunSpec) -> Optional[Callable[[nn.Module], None]]:
        """Signed Kaiming-constant weights come from the seed alone (unless fine-tuning trained them)."""
        if spec.hparams.finetune != "none" or spec.hparams.weight_init != "signed-constant":
            return None
        return signed_constant_regenerator(spec.seed)

    def validate(self, spec: RunSpec) -> None:
        """Fine-tuning epochs and lr must be valid (weight init and fine-tuning are checked choices)."""
        hp = spec.hparams
        check_epochs(finetune_epochs=hp.finetune_epochs)
        check_lr_scale(hp.finetune_lr_scale)

    def find_ticket(self, ctx: RunContext) -> nn.Module:
        """Search the scores of a frozen random network under an adversarial loss."""
        net = self.network(ctx.spec)
        model = ctx.build_network(net)
        # Frozen random weights at the chosen initialisation.
        init_frozen_weights(model, ctx.hp.weight_init, ctx.spec.seed)
        init_scores(model)
        # Fingerprint of the frozen weights: evaluation flags `frozen_moved` if they change.
        if ctx.hp.finetune == "none":
            ctx.info["frozen_fingerprint"] = frozen_fingerprint(model)
        # Only the scores learn; masks come from |scores| once per step.
        set_trainable(model, weights=False, scores=True)
        refresh = score_mask_refresher(model, ctx.spec.sparsity, ctx.spec.granularity)
        scores = [layer.scores for _name, layer in prunable_layers(model)]
        ctx.train(model, scores, ctx.train_config(), ctx.run_dir / "search", refresh, desc="rst search")
        set_trainable(model, weights=False, scores=False)
        if ctx.hp.finetune == "none":
            return keep_selected(ctx, model, ctx.run_dir / "search", refresh)
        # Optional AT fine-tuning of the survivors under the fixed mask.
        if ctx.hp.finetune == "reinit":
            reinit_weights(model, ctx.build_network(net, seed_offset=1), ctx.hp.reinit_init)
        return train_weights(ctx, model, stage_epochs(ctx, ctx.hp.finetune_epochs), ctx.spec.lr * ctx.hp.finetune_lr_scale,
                             ctx.run_dir / "finetune", desc=f"rst finetune ({ctx.hp.finetune})")
