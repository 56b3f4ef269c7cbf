"""Random-mask controls: a uniformly random mask at the target sparsity.

Two controls, chosen with ``--weights``; each answers one question
(``docs/methods.md``):

- ``frozen``: the mask is drawn over the *same* frozen random weights RST
  searches (signed Kaiming constant, same seed), nothing is trained. Does
  RST's *learned* mask matter, or would any mask over these weights do? (By
  construction it sits near chance: the floor, not a competitor.) BatchNorm
  running statistics are estimated in one pass over the training data on the
  trainer's examples crafted against the current network, as RST's search
  estimates them (cumulative average, no gradient step); that pass is counted
  as compute.
- ``trained``: the mask is drawn at initialisation and the surviving weights
  are adversarially trained from scratch for ``--epochs`` at ``--lr`` (random
  pruning at init + AT). Is RST's mask search worth more than training the
  weights of a random sparse network of the same shape and budget?

``--network matched`` (default) builds RST's network for both: non-affine
BatchNorm, no linear biases, signed Kaiming-constant initial weights from the
same seed, so the control differs from RST only in how the mask is chosen and
whether the weights train. ``--network standard`` is the pre-protocol-2
control (affine BatchNorm, biases, PyTorch's default initialisation for
``trained``). The mask keeps the same fraction in every layer, like RST.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn as nn

from bench.core.config import spec_field
from bench.data import batches
from bench.methods import Method, Network, RunContext, register
from bench.methods.stages import init_frozen_weights, signed_constant_regenerator, train_weights
from bench.nn.masking import MaskedMixin, ScoreFn, apply_masks, frozen_fingerprint, set_trainable
from bench.spec import RunSpec
from bench.train import Compute, training_attack
from bench.trainers import TRAINERS

WEIGHTS = ("frozen", "trained")
NETWORKS = ("matched", "standard")


@dataclass(frozen=True)
class RandomHparams:
    """Random-mask control hyperparameters."""

    weights: str = spec_field("frozen", "frozen (RST's random weights, untrained) | trained (AT from scratch)", choices=WEIGHTS)
    network: str = spec_field("matched", "matched (RST's network: non-affine BN, no biases, signed-constant init) "
                              "| standard (affine BN, biases, default init)", choices=NETWORKS)


def random_scores(seed: int) -> ScoreFn:
    """A score function drawing i.i.d. uniform scores from a seeded generator."""
    gen = torch.Generator().manual_seed(seed)

    def score(_name: str, layer: MaskedMixin) -> torch.Tensor:
        return torch.rand(layer.weight.shape, generator=gen).to(layer.weight.device)

    return score


@torch.no_grad()
def _forward_train_mode(model: nn.Module, x: torch.Tensor) -> None:
    """One forward pass in train mode (updates BatchNorm running statistics only)."""
    model.train()
    model(x)
    model.eval()


def calibrate_bn(ctx: RunContext, model: nn.Module) -> None:
    """Estimate BatchNorm running statistics on training PGD examples (one pass, no gradient step)."""
    cfg = ctx.train_config()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None
    trainer = TRAINERS.get(cfg.trainer)
    attack = training_attack(cfg, ctx.spec.seed)
    gen = torch.Generator().manual_seed(ctx.spec.seed * 1000)
    t0, passes = time.perf_counter(), 0
    # Same examples the training loop would see: the trainer's inputs against the current network, crafted
    # with BatchNorm in the spec's craft mode.
    for x, y in batches(ctx.data.train, cfg.batch_size, ctx.device, generator=gen):
        model.train(cfg.craft_bn == "train")
        x_in, crafted = trainer.craft(model, x, y, cfg, attack, gen)
        passes += crafted + len(x)
        _forward_train_mode(model, x_in)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.momentum = 0.1
    model.eval()
    ctx.compute.add(Compute(time.perf_counter() - t0, passes))
    ctx.info.setdefault("stages", []).append({"stage": "random bn calibration", "passes": passes})


@register("random", "random-mask control over RST's network: frozen random weights, or the survivors AT-trained")
class RandomMask(Method):
    """A uniformly random mask at the target sparsity."""

    Hparams = RandomHparams
    granularities = ("weight", "channel")

    def network(self, spec: RunSpec) -> Network:
        """RST's network (non-affine BatchNorm, no biases) unless ``--network standard``."""
        matched = spec.hparams.network == "matched"
        return Network(bn_affine=not matched, linear_bias=not matched)

    def regenerate_weights(self, spec: RunSpec) -> Optional[Callable[[nn.Module], None]]:
        """The frozen control's weights are RST's, from the seed alone."""
        if spec.hparams.weights != "frozen":
            return None
        return signed_constant_regenerator(spec.seed)

    def find_ticket(self, ctx: RunContext) -> nn.Module:
        """Draw the mask; calibrate BatchNorm (frozen) or adversarially train the survivors (trained)."""
        model = ctx.build_network(self.network(ctx.spec))
        frozen = ctx.hp.weights == "frozen"
        if frozen or ctx.hp.network == "matched":
            # RST's frozen random weights: same init, same generator seed.
            init_frozen_weights(model, "signed-constant", ctx.spec.seed)
        apply_masks(model, random_scores(ctx.spec.seed + 1), ctx.spec.sparsity, scope="layer",
                    granularity=ctx.spec.granularity)
        set_trainable(model, weights=False, scores=False)
        if frozen:
            # Fingerprint of the frozen weights: evaluation flags `frozen_moved` if they change.
            ctx.info["frozen_fingerprint"] = frozen_fingerprint(model)
            calibrate_bn(ctx, model)
            return model
        return train_weights(ctx, model, ctx.spec.epochs, ctx.spec.lr, ctx.run_dir / "train", desc="random-mask AT")
