"""Dense AT on RST's network: the dense control the RST code trains (``train_full.py``).

The RST repository trains its dense comparison network with the same model
definition as the search: non-affine BatchNorm, no biases, the search's
signed Kaiming-constant initial weights (its "usc" configs), every weight
trained with adversarial training. ``dense-at-matched`` is that network, so
RST's ratio can be read against both it and the standard ``dense-at``
(affine BatchNorm, biases, PyTorch's default initialisation).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch.nn as nn

from bench.core.config import spec_field
from bench.methods import Method, Network, RunContext, register
from bench.methods.stages import WEIGHT_INITS, init_frozen_weights, train_weights
from bench.nn.masking import set_trainable
from bench.spec import RunSpec
from bench.trainers import TRAINERS


@dataclass(frozen=True)
class MatchedHparams:
    """Matched dense control hyperparameters."""

    weight_init: str = spec_field("signed-constant", "frozen random weights: signed-constant | kaiming-normal", choices=WEIGHT_INITS)


@register("dense-at-matched", "dense AT of RST's network (non-affine BN, no biases, RST's init); sparsity must be 0")
class DenseATMatched(Method):
    """Adversarial training of every weight of the network RST searches in."""

    Hparams = MatchedHparams
    bn_affine = False
    # RST's code keeps its best epoch (picked on the test set; here on the validation split).
    reference_select = "best"
    dense = True

    def network(self, spec: RunSpec) -> Network:
        """RST's network: non-affine BatchNorm, no linear biases."""
        return Network(bn_affine=False, linear_bias=False)

    def validate(self, spec: RunSpec) -> None:
        """Dense means no pruning; the trainer must be adversarial."""
        if spec.sparsity != 0:
            raise ValueError(f"dense-at-matched trains a dense network: --sparsity must be 0 (or left out), got {spec.sparsity}")
        if not TRAINERS.get(spec.trainer).adversarial:
            raise ValueError(f"dense-at-matched needs an adversarial trainer (e.g. --trainer pgd), got {spec.trainer!r}")

    def find_ticket(self, ctx: RunContext) -> nn.Module:
        """RST's initial network, every weight adversarially trained for ``--epochs``."""
        model = ctx.build_network(self.network(ctx.spec))
        # RST's initial weights (same generator seed as its search).
        init_frozen_weights(model, ctx.hp.weight_init, ctx.spec.seed)
        set_trainable(model, weights=True, scores=False)
        return train_weights(ctx, model, ctx.spec.epochs, ctx.spec.lr, ctx.run_dir / "train", desc="dense AT (matched)")
