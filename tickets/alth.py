"""Adversarial lottery tickets: iterative magnitude pruning with AT and rewinding.

Lottery-ticket search (Frankle & Carbin 2019) with adversarial training
(Cosentino et al. 2019), in OpenLTH's level structure:

- level 0 is the shared dense AT stage (one artifact for every method with
  this base);
- each level prunes ``prune_fraction`` of the *remaining* weights by
  magnitude in every hidden layer and ``output_prune_fraction`` in the output
  (classifier) layer (Frankle & Carbin's and Cosentino et al.'s 20 % / 10 %),
  or ranks all weights together with ``--scope global`` (OpenLTH's
  ``sparse_global``; one fraction), from the previous level's *last-epoch*
  weights (OpenLTH, Cosentino; ``--start-from best`` uses the best-validation
  epoch, the pre-protocol-2 choice), rewinds
  the survivors (and every other tensor but the masks) to the dense
  network's initialisation (``--rewind init``), to its weights after
  ``rewind_epochs`` epochs of AT (``early``), to the trained dense network
  level 1 prunes (``dense``: what Cosentino et al.'s code does, its
  ``reinit_orig`` keeping the level-0 trained kernels as "init") or not at
  all (``none``, the "keep training" control), then retrains them with AT;
- ``--init-from FILE`` gives the dense network (a state dict of the spec's
  architecture) instead of the dense stage: it has no initialisation, so it
  rewinds to itself (``dense``) or not at all (``none``); its levels are
  shared stages keyed by the file's sha256, not its name;
- layer ``i`` has sparsity ``1 - (1 - f_i)^l`` after level ``l``; the target
  (fraction of zeros among all prunable weights) maps to the first level that
  reaches it, and that last level is partial (a fractional level ``x`` with
  the overall sparsity equal to the target; each layer rounds its count of
  zeros, so the measured value is within a few weights of it).

The loss is the spec's ``--trainer`` like every method's;
``configs/presets/cosentino.yaml`` reproduces Cosentino et al.'s setting
(LeNet-300-100 without BatchNorm or biases, Adam 1.2e-3, batch 60, their
0.5 clean + 0.5 adversarial loss with label smoothing, PGD eps 0.3).

Masks only shrink: pruned weights score ``-inf``. Every level is a shared
stage keyed by the dense base, the hyperparameters and the sparsities of
all levels so far, so ALTH runs at several target sparsities share their
common levels; each level stores its masks and a record (target and measured
sparsity, validation accuracies), collected in ``meta.json`` under
``levels``. Compute of every level (and of the dense stage) is counted in
every run that uses it.

The ``early`` rewind point is a separate shared stage: AT from the same
initialisation for ``rewind_epochs`` epochs at constant learning rate,
keeping the last epoch's weights. It is the start of the dense trajectory
exactly when ``--lr-schedule constant`` (same data order and attack seeds),
and close to it otherwise.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from bench.core import paths
from bench.core.config import spec_field
from bench.core.io import atomic_save
from bench.methods import Method, RunContext, register
from bench.methods.stages import (
    DENSE_INITS,
    DENSE_STAGE,
    INIT_FROM_HELP,
    PRUNE_SCOPES,
    START_FROM,
    check_epochs,
    check_given_network,
    check_init_from,
    dense_initial,
    dense_key,
    dense_stage,
    keep_selected,
    last_epoch_state,
    load_dense,
    read_record,
    stage_epochs,
    write_record,
)
from bench.nn.masking import apply_masks, iter_masks, magnitude_scores, measured_sparsity, prunable_layers, set_trainable
from bench.spec import RunSpec

REWINDS = ("init", "early", "dense", "none")
# The rewind points a given dense network (--init-from) has: itself, or none (it comes without its initialisation).
GIVEN_REWINDS = ("dense", "none")
# The most pruning levels one run may have (20 % per level reaches 0.999 in 31).
MAX_LEVELS = 200
MASKS = "masks.pt"


@dataclass(frozen=True)
class ALTHHparams:
    """Adversarial lottery-ticket hyperparameters."""

    prune_fraction: float = field(default=0.2, metadata={"help": "fraction of the remaining weights pruned per level"})
    output_prune_fraction: float = field(default=0.1, metadata={
        "help": "with --scope layer: fraction of the output layer's remaining weights pruned per level"})
    start_from: str = spec_field("last", "next stage starts from the previous stage's best-validation or last epoch "
                                 "(OpenLTH, HYDRA: last)", choices=START_FROM)
    scope: str = spec_field("layer", "magnitude ranking: layer (same sparsity per layer) | global", choices=PRUNE_SCOPES)
    rewind: str = spec_field("init", "rewind survivors to: init | early (after rewind_epochs of AT) | dense (the trained "
                             "dense network, Cosentino's code) | none", choices=REWINDS)
    rewind_epochs: int = field(default=1, metadata={"help": "with --rewind early: epochs of AT before the rewind point"})
    pretrain_epochs: Optional[int] = field(default=None, metadata={"help": "dense AT epochs (none = --epochs)"})
    level_epochs: Optional[int] = field(default=None, metadata={"help": "AT retraining epochs per level (none = --epochs)"})
    dense_init: str = spec_field("pytorch", "initialisation of the dense network, the rewind point of --rewind init: "
                                 "pytorch (layer defaults) | openlth | hydra | glorot (OpenLTH's, HYDRA's, Cosentino's code)", choices=DENSE_INITS)
    init_from: Optional[str] = field(default=None, metadata={
        "help": INIT_FROM_HELP + "; rewinds with --rewind dense or none"})


def levels_needed(target: float, fraction: float) -> float:
    """Levels of ``fraction`` per level that reach ``target`` in every layer: an upper bound on the schedule's
    length (``inf`` when the fraction is too small to ever get there in floating point)."""
    if target <= 0:
        return 0.0
    step = math.log1p(-fraction)
    return math.inf if step == 0 else math.ceil(math.log1p(-target) / step)


def level_sparsities(target: float, prune_fraction: float) -> List[float]:
    """Sparsity after each level with one fraction everywhere; the last (partial) level is exactly ``target``."""
    return [level for level, _ in level_schedule(target, [1], [prune_fraction])]


def level_schedule(target: float, sizes: Sequence[int], fractions: Sequence[float]) -> List[Tuple[float, List[float]]]:
    """(overall sparsity, per-layer sparsities) after each level, for layers of ``sizes`` weights.

    Layer ``i`` loses ``fractions[i]`` of its remaining weights per level, so
    after (fractional) level ``x`` its sparsity is ``1 - (1 - f_i)^x``. Whole
    levels run while the overall sparsity stays below ``target``; the last
    level is the fractional ``x`` whose overall sparsity equals ``target``.
    """
    if target <= 0:
        return []
    total = float(sum(sizes))

    def layer_sparsities(x: float) -> List[float]:
        return [1 - (1 - f) ** x for f in fractions]

    def overall(x: float) -> float:
        return sum(n * s for n, s in zip(sizes, layer_sparsities(x))) / total

    # Whole levels below the target, then the fractional level that meets it (bisection; overall is increasing).
    out: List[Tuple[float, List[float]]] = []
    level = 1
    while overall(level) < target - 1e-12:
        if level >= MAX_LEVELS:
            raise ValueError(f"prune_fraction {sorted(set(fractions))} needs more than {MAX_LEVELS} pruning levels "
                             f"to reach sparsity {target:g}; at most {MAX_LEVELS} are allowed: raise --prune-fraction "
                             "(or --output-prune-fraction)")
        out.append((overall(level), layer_sparsities(level)))
        level += 1
    lo, hi = float(level - 1), float(level)
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if overall(mid) < target else (lo, mid)
    out.append((float(target), layer_sparsities(hi)))
    return out


@torch.no_grad()
def prune_and_rewind(model: nn.Module, sparsity: Any, scope: str, rewind_state: Optional[Dict[str, torch.Tensor]]) -> None:
    """Prune by magnitude to ``sparsity`` (a number, or layer name -> sparsity; masks only shrink), then rewind
    all but the masks."""
    apply_masks(model, magnitude_scores, sparsity, scope)
    if rewind_state is None:
        return
    masks = {name: mask.clone() for name, mask in iter_masks(model)}
    model.load_state_dict({k: v for k, v in rewind_state.items()})
    for name, layer_mask in iter_masks(model):
        layer_mask.copy_(masks[name])


def load_masks(stage_dir: Path) -> Dict[str, torch.Tensor]:
    """The per-layer masks a level stored (for inspection and tests)."""
    return torch.load(stage_dir / MASKS, map_location="cpu", weights_only=True)


@register("alth", "adversarial lottery ticket: dense AT, iterative magnitude pruning + rewinding + AT retraining")
class ALTH(Method):
    """Iterative magnitude pruning with adversarial training and rewinding."""

    Hparams = ALTHHparams
    bn_affine = True
    # OpenLTH and Cosentino et al. keep the last epoch of each level.
    reference_select = "last"

    def validate(self, spec: RunSpec) -> None:
        """Fraction in (0, 1) and valid epochs (scope and rewind point are checked choices)."""
        hp = spec.hparams
        if not 0 < hp.prune_fraction < 1:
            raise ValueError(f"prune_fraction must be in (0, 1), got {hp.prune_fraction}")
        if not 0 < hp.output_prune_fraction < 1:
            raise ValueError(f"output_prune_fraction must be in (0, 1), got {hp.output_prune_fraction}")
        if hp.rewind_epochs < 1:
            raise ValueError(f"rewind_epochs must be >= 1, got {hp.rewind_epochs}")
        # The level count is bounded up front: a tiny fraction would need millions of levels (a run that never ends).
        # The fastest-pruning layer gives a lower bound; level_schedule checks the exact count once sizes are known.
        levels = levels_needed(spec.sparsity, max(hp.prune_fraction, hp.output_prune_fraction)
                               if hp.scope == "layer" else hp.prune_fraction)
        if levels > MAX_LEVELS:
            raise ValueError(f"prune_fraction {hp.prune_fraction:g} (output {hp.output_prune_fraction:g}) needs "
                             f"{levels:.3g} pruning levels to reach sparsity {spec.sparsity:g}; at most {MAX_LEVELS} "
                             "are allowed: raise --prune-fraction")
        check_epochs(pretrain_epochs=hp.pretrain_epochs, level_epochs=hp.level_epochs)
        check_init_from(hp.init_from)
        if hp.init_from is not None and hp.rewind not in GIVEN_REWINDS:
            raise ValueError(f"rewind {hp.rewind} with --init-from: a given network comes without its initialisation "
                             "or early weights; rewind to it (--rewind dense) or not at all (--rewind none)")

    def validate_model(self, spec: RunSpec, model: nn.Module) -> None:
        """The level schedule on this architecture's layer sizes is within :data:`MAX_LEVELS`; a given dense network
        (``--init-from``) is the spec's architecture."""
        self.plan(spec, model)
        check_given_network(spec, model)

    def rewind_state(self, ctx: RunContext, base: Dict[str, Any], dense: nn.Module,
                     dense_train: Optional[Path]) -> Optional[Dict[str, torch.Tensor]]:
        """The weights survivors are rewound to (``None`` for no rewinding); ``dense`` is the dense network (the
        stage's, trained in ``dense_train``, or the given one)."""
        if ctx.hp.rewind == "none":
            return None
        if ctx.hp.rewind == "dense":
            # The state level 1 prunes: the given network, or the dense stage's epoch that --start-from names.
            state = {k: v.clone() for k, v in dense.state_dict().items()}
            if dense_train is not None and ctx.hp.start_from == "last":
                copy = ctx.build_model(bn_affine=True)
                copy.load_state_dict(state)
                last_epoch_state(copy, dense_train, ctx.device)
                state = {k: v.clone() for k, v in copy.state_dict().items()}
            return state
        if ctx.hp.rewind == "init":
            # The dense stage starts from this seeded initialisation.
            return {k: v.clone() for k, v in dense_initial(ctx, ctx.hp.dense_init).state_dict().items()}
        epochs = ctx.hp.rewind_epochs

        # Early rewind point: last-epoch weights after a short constant-lr AT run.
        def build(stage_dir: Path) -> nn.Module:
            model = dense_initial(ctx, ctx.hp.dense_init)
            set_trainable(model, weights=True, scores=False)
            params = [p for p in model.parameters() if p.requires_grad]
            ctx.train(model, params, ctx.train_config(epochs=epochs, lr_schedule="constant"), stage_dir / "train",
                      desc="alth rewind point")
            last = torch.load(paths.checkpoint(stage_dir / "train"), map_location=ctx.device, weights_only=True)
            model.load_state_dict(last["model"])
            return model

        key = {**base, "epochs": epochs, "lr_schedule": "constant"}
        model = ctx.shared_stage("alth-rewind", key, build, lambda: ctx.build_model(bn_affine=True))
        return {k: v.clone() for k, v in model.state_dict().items()}

    def plan(self, spec: RunSpec, model: nn.Module) -> List[Tuple[float, Any]]:
        """Each level's target: (overall sparsity, what :func:`prune_and_rewind` prunes to)."""
        hp = spec.hparams
        if hp.scope == "global":
            return [(s, s) for s in level_sparsities(spec.sparsity, hp.prune_fraction)]
        # Layer-wise: the output (last prunable) layer at its own fraction.
        layers = prunable_layers(model)
        fractions = [hp.prune_fraction] * (len(layers) - 1) + [hp.output_prune_fraction]
        plan = level_schedule(spec.sparsity, [layer.weight.numel() for _, layer in layers], fractions)
        return [(overall, {name: s for (name, _), s in zip(layers, per_layer)}) for overall, per_layer in plan]

    def find_ticket(self, ctx: RunContext) -> nn.Module:
        """Dense AT, then prune / rewind / retrain level by level up to the target."""
        hp = ctx.hp
        pre_epochs = stage_epochs(ctx, hp.pretrain_epochs)
        previous_train: Optional[Path]
        if hp.init_from is None:
            model = dense_stage(ctx, hp.pretrain_epochs, init=hp.dense_init)
            base = dense_key(ctx.spec, pre_epochs, hp.dense_init)
            previous_train = ctx.stage_path(DENSE_STAGE, base) / "train"
        else:
            # A given dense network: the levels are keyed by its contents and the training setting, not its name.
            model = load_dense(ctx, hp.init_from)
            base = {**{k: v for k, v in dense_key(ctx.spec, 0).items() if k != "epochs"},
                    "init_from": ctx.info["init_from"]["sha256"]}
            previous_train = None
        rewind_state = self.rewind_state(ctx, base, model, previous_train)
        epochs = stage_epochs(ctx, hp.level_epochs)
        done: List[float] = []
        levels: List[Dict[str, Any]] = []
        # One shared stage per level; each starts from the previous level's network.
        for level, (sparsity, prune_to) in enumerate(self.plan(ctx.spec, model), start=1):
            done.append(sparsity)
            key = {"dense": base, "prune_fraction": hp.prune_fraction, "scope": hp.scope, "rewind": hp.rewind,
                   "rewind_epochs": hp.rewind_epochs if hp.rewind == "early" else None, "level_epochs": epochs,
                   "sparsities": list(done), "start_from": hp.start_from,
                   "output_prune_fraction": hp.output_prune_fraction if hp.scope == "layer" else None}
            previous = model

            def build(stage_dir: Path, previous: nn.Module = previous, level: int = level, sparsity: float = sparsity,
                      prune_to: Any = prune_to, previous_train: Optional[Path] = previous_train) -> nn.Module:
                # Prune from the previous stage's last epoch (OpenLTH) unless asked for its best one (a given dense
                # network is pruned as it is).
                if hp.start_from == "last" and previous_train is not None:
                    last_epoch_state(previous, previous_train, ctx.device)
                prune_and_rewind(previous, prune_to, hp.scope, rewind_state)
                atomic_save(stage_dir / MASKS, {name: m.detach().cpu().clone() for name, m in iter_masks(previous)})
                result = train_level(ctx, previous, epochs, stage_dir, level)
                record = {"level": level, "target_sparsity": sparsity, "measured_sparsity": measured_sparsity(previous),
                          "best_epoch": result["best_epoch"], "val_clean": result["val_clean"],
                          "val_robust": result["val_robust"]}
                write_record(stage_dir, record)
                return previous

            model = ctx.shared_stage("alth-level", key, build, lambda: ctx.build_model(bn_affine=True))
            stage_dir = ctx.stage_path("alth-level", key)
            previous_train = stage_dir / "train"
            levels.append({"stage": stage_dir.name, **read_record(stage_dir)})
        ctx.info["levels"] = levels
        # The ticket: the last level's best-validation epoch, or its last (OpenLTH, Cosentino: --select last).
        keep_selected(ctx, model, previous_train)
        set_trainable(model, weights=False, scores=False)
        return model


def train_level(ctx: RunContext, model: nn.Module, epochs: int, stage_dir: Path, level: int) -> Dict[str, Any]:
    """AT retraining of one level's survivors (full learning rate, fixed mask)."""
    set_trainable(model, weights=True, scores=False)
    params = [p for p in model.parameters() if p.requires_grad]
    result = ctx.train(model, params, ctx.train_config(epochs=epochs), stage_dir / "train", desc=f"alth level {level}")
    set_trainable(model, weights=False, scores=False)
    return {"best_epoch": result.best_epoch, "val_clean": result.val_clean, "val_robust": result.val_robust}
