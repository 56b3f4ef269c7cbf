"""Adversarially trained dense network, and the stages pruned methods share with it.

``dense-at`` is the reference every ticket is compared against: the spec's
architecture with affine BatchNorm, every weight trained with the spec's
trainer (Madry PGD-AT or TRADES) and no pruning. The same network is the first
stage of ``alth``, ``hydra`` and ``lwm``: :func:`dense_stage` builds it once
per base (dataset, data, architecture, width, seed, training and attack
settings, epochs) as a shared stage, so those methods and ``dense-at`` runs
with the same base train it once. :func:`train_weights` is the AT
fine-tuning stage (fixed mask, surviving weights trained) that several
methods end with.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Optional

import torch.nn as nn

from bench.data import resolve_source
from bench.masking import set_trainable
from bench.methods import Method, RunContext, register
from bench.spec import RunSpec

DENSE_STAGE = "dense-at"
RECORD = "record.json"
# Spec fields that do not define the dense network: the method, its pruning
# target, its hyperparameters and the main-stage epochs (set per stage).
NOT_IN_DENSE_KEY = ("method", "sparsity", "hparams", "epochs")


def stage_epochs(ctx: RunContext, epochs: Optional[int]) -> int:
    """A stage's epochs: ``None`` means the spec's ``--epochs``."""
    return ctx.spec.epochs if epochs is None else int(epochs)


def check_epochs(**stages: Optional[int]) -> None:
    """Per-stage epoch hyperparameters must be ``None`` or ``>= 0``."""
    for name, value in stages.items():
        if value is not None and value < 0:
            raise ValueError(f"{name} must be >= 0 (or none = same as --epochs), got {value}")


def dense_key(spec: RunSpec, epochs: int) -> Dict[str, Any]:
    """Identity of the dense AT network a spec's shared stage would build."""
    key = {k: v for k, v in spec.canonical().items() if k not in NOT_IN_DENSE_KEY}
    key["data_source"] = resolve_source(spec.dataset, spec.data_source)
    key["epochs"] = epochs
    key["eps"] = spec.resolve().eps
    key["bn_affine"] = True
    return key


def read_record(stage_dir: Path) -> Dict[str, Any]:
    """The training record a shared stage wrote next to its model."""
    path = stage_dir / RECORD
    return json.loads(path.read_text()) if path.exists() else {}


def dense_stage(ctx: RunContext, epochs: Optional[int] = None) -> nn.Module:
    """The dense AT network for this spec's base: trained once, then loaded by every run."""
    n_epochs = stage_epochs(ctx, epochs)
    key = dense_key(ctx.spec, n_epochs)

    # Build: seeded initialisation (the rewind point of ``alth``), AT of every tensor.
    def build(stage_dir: Path) -> nn.Module:
        model = ctx.build_model(bn_affine=True)
        set_trainable(model, weights=True, scores=False)
        params = [p for p in model.parameters() if p.requires_grad]
        result = ctx.train(model, params, ctx.train_config(epochs=n_epochs), stage_dir / "train", desc="dense AT")
        (stage_dir / RECORD).write_text(json.dumps({"best_epoch": result.best_epoch, "val_clean": result.val_clean,
                                                    "val_robust": result.val_robust}))
        return model

    model = ctx.shared_stage(DENSE_STAGE, key, build, lambda: ctx.build_model(bn_affine=True))
    stage_dir = ctx.stage_path(DENSE_STAGE, key)
    ctx.info["dense_stage"] = {"stage": stage_dir.name, "epochs": n_epochs, **read_record(stage_dir)}
    set_trainable(model, weights=False, scores=False)
    return model


def train_weights(ctx: RunContext, model: nn.Module, epochs: int, lr: float, stage_dir: Path, desc: str) -> nn.Module:
    """AT of the surviving weights under a fixed mask (scores frozen, masks untouched)."""
    set_trainable(model, weights=True, scores=False)
    params = [p for p in model.parameters() if p.requires_grad]
    ctx.train(model, params, ctx.train_config(epochs=epochs, lr=lr), stage_dir, desc=desc)
    set_trainable(model, weights=False, scores=False)
    return model


@register("dense-at", "adversarially trained dense network (--trainer pgd | trades); sparsity must be 0")
class DenseAT(Method):
    """Dense adversarial training: the reference every ticket is compared against."""

    bn_affine = True

    def validate(self, spec: RunSpec) -> None:
        """Dense means no pruning; the trainer must be adversarial."""
        if spec.sparsity != 0:
            raise ValueError(f"dense-at trains a dense network: --sparsity must be 0, got {spec.sparsity}")
        if spec.trainer not in ("pgd", "trades"):
            raise ValueError(f"dense-at needs an adversarial trainer: --trainer pgd or trades, got {spec.trainer!r}")

    def find_ticket(self, ctx: RunContext) -> nn.Module:
        """The shared dense AT stage for this spec (trained now, or reused)."""
        return dense_stage(ctx)
