"""Adversarially trained dense network: the reference every ticket is compared against.

``dense-at`` is the reference every ticket is compared against: the spec's
architecture with affine BatchNorm, every weight trained with the spec's
(adversarial) trainer and no pruning. The same network is the first stage of
``alth``, ``hydra`` and ``lwm``: :func:`bench.methods.stages.dense_stage` builds it
once per base (dataset, data, architecture, width, seed, training and attack
settings, epochs) as a shared stage, so those methods and ``dense-at`` runs
with the same base train it once.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch.nn as nn

from bench.core.config import spec_field
from bench.methods import Method, RunContext, register
from bench.methods.stages import DENSE_INITS, dense_stage
from bench.spec import RunSpec
from bench.trainers import TRAINERS


@dataclass(frozen=True)
class DenseATHparams:
    """Dense AT hyperparameters."""

    dense_init: str = spec_field("pytorch", "initialisation of the dense network: pytorch (layer defaults) | openlth "
                                 "| hydra | glorot (OpenLTH's, HYDRA's, Cosentino's code)", choices=DENSE_INITS)


@register("dense-at", "adversarially trained dense network (--trainer pgd | trades); sparsity must be 0")
class DenseAT(Method):
    """Dense adversarial training: the reference every ticket is compared against."""

    Hparams = DenseATHparams
    bn_affine = True
    dense = True

    def validate(self, spec: RunSpec) -> None:
        """Dense means no pruning; the trainer must be adversarial."""
        if spec.sparsity != 0:
            raise ValueError(f"dense-at trains a dense network: --sparsity must be 0 (or left out), got {spec.sparsity}")
        if not TRAINERS.get(spec.trainer).adversarial:
            raise ValueError(f"dense-at needs an adversarial trainer (e.g. --trainer pgd or trades), got {spec.trainer!r}")

    def find_ticket(self, ctx: RunContext) -> nn.Module:
        """The shared dense AT stage for this spec (trained now, or reused); its epoch as ``--select`` says."""
        ctx.info["select"] = ctx.spec.select
        return dense_stage(ctx, start_from=ctx.spec.select, init=ctx.hp.dense_init)
