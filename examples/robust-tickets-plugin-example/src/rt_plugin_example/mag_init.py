"""Magnitude pruning at initialisation, then adversarial training of the survivors.

The "magnitude at init" control of Frankle et al. (2021, "Pruning Neural Networks at Initialization: Why Are We
Missing the Mark?"): the freshly initialised network is pruned once by |w| (same fraction per layer, or ranked
globally), and the surviving weights are trained with the spec's trainer under the fixed mask.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch.nn as nn

from bench.core.config import spec_field
from bench.methods import Method, RunContext, register
from bench.methods.stages import PRUNE_SCOPES, dense_initial, stage_epochs, train_weights
from bench.nn.masking import apply_masks, magnitude_scores


@dataclass(frozen=True)
class MagInitHparams:
    """Magnitude-at-init hyperparameters."""

    scope: str = spec_field("layer", "magnitude ranking: layer (same sparsity per layer) | global", choices=PRUNE_SCOPES)


@register("mag-init", "magnitude pruning at initialisation, then AT of the survivors (plugin example)")
class MagInit(Method):
    """Prune the initial weights by magnitude, train the rest."""

    Hparams = MagInitHparams
    bn_affine = True
    reference_select = "best"

    def find_ticket(self, ctx: RunContext) -> nn.Module:
        """Initialise, prune once by |w|, adversarially train the survivors."""
        model = dense_initial(ctx)
        apply_masks(model, magnitude_scores, ctx.spec.sparsity, ctx.hp.scope)
        return train_weights(ctx, model, stage_epochs(ctx, None), ctx.spec.lr, ctx.run_dir / "train", desc="mag-init train")
