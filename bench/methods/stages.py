"""Stages and checks that several methods share, so that no method file imports another.

* :func:`dense_stage`: the adversarially trained dense network for a spec's
  base (dataset, data, architecture, width, seed, training and attack
  settings, epochs), built once as a shared stage and loaded by every
  ``dense-at``, ``alth``, ``hydra`` and ``lwm`` run with that base;
* :func:`train_weights`: AT of the surviving weights under a fixed mask
  (the fine-tuning stage several methods end with);
* :func:`last_epoch_state`: a stage's last-epoch weights (OpenLTH and HYDRA
  start the next stage from them, not from the best-validation epoch);
* :func:`keep_selected`: the ticket is the final stage's best-validation or
  last epoch, as the spec's ``select`` says;
* :func:`init_dense`: the dense network's initialisation (PyTorch's layer
  defaults, OpenLTH's or HYDRA's), the ``dense_init`` hyperparameter;
* :func:`bn_parameters`: BatchNorm's affine tensors (HYDRA trains them with
  the scores);
* :func:`stage_epochs` / :func:`check_epochs` / :func:`check_lr_scale`: the
  per-stage hyperparameters methods share; ``PRUNE_SCOPES``,
  ``WEIGHT_INITS`` and ``START_FROM`` are the choices of the shared
  ``scope`` / ``weight_init`` / ``start_from`` hyperparameters.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
import torch.nn as nn

from bench.core import paths
from bench.core.io import atomic_json, file_sha256
from bench.data import resolve_source
from bench.methods import RunContext
from bench.nn.masking import prunable_layers, set_trainable
from bench.nn.models import init_signed_kaiming_constant
from bench.nn.zoo_models import checkpoint_paths, load_zoo_model, zoo_state_for
from bench.spec import RunSpec

DENSE_STAGE = "dense-at"
# Spec fields that do not define the dense network: the method, its pruning
# target and granularity, its hyperparameters, the main-stage epochs (set per
# stage) and which epoch of the method's final stage is kept (the stage stores both).
NOT_IN_DENSE_KEY = ("method", "sparsity", "granularity", "hparams", "epochs", "select")
# Magnitude ranking: the same fraction in every layer, or one global threshold.
PRUNE_SCOPES = ("layer", "global")
# Frozen random weights of score-learning methods over random networks.
WEIGHT_INITS = ("signed-constant", "kaiming-normal")
# Which state of a finished training stage the next stage starts from.
START_FROM = ("last", "best")
# The dense network's initialisation: PyTorch's layer defaults; OpenLTH's (models/initializers.py:
# kaiming-normal conv/linear weights, BatchNorm weights uniform in [0, 1], BatchNorm biases 0); HYDRA's
# (its models: kaiming-normal fan-out conv weights, N(0, 0.01) linear weights, zero biases, BatchNorm 1 / 0);
# glorot (Cosentino et al.'s TensorFlow layers: glorot-uniform weights, zero biases).
DENSE_INITS = ("pytorch", "openlth", "hydra", "glorot")


def stage_epochs(ctx: RunContext, epochs: Optional[int]) -> int:
    """A stage's epochs: ``None`` means the spec's ``--epochs``."""
    return ctx.spec.epochs if epochs is None else int(epochs)


def check_epochs(**stages: Optional[int]) -> None:
    """Per-stage epoch hyperparameters must be ``None`` or ``>= 0``."""
    for name, value in stages.items():
        if value is not None and value < 0:
            raise ValueError(f"{name} must be >= 0 (or none = same as --epochs), got {value}")


def check_lr_scale(scale: float) -> None:
    """Fine-tuning learning-rate scale must be positive."""
    if not scale > 0:
        raise ValueError(f"finetune_lr_scale must be > 0, got {scale}")


def dense_key(spec: RunSpec, epochs: int, init: str = "pytorch") -> Dict[str, Any]:
    """Identity of the dense AT network a spec's shared stage would build (``init`` only when not PyTorch's, so
    the stages built before the choice existed keep their keys)."""
    key = {k: v for k, v in spec.canonical().items() if k not in NOT_IN_DENSE_KEY}
    key["data_source"] = resolve_source(spec.dataset, spec.data_source)
    key["epochs"] = epochs
    key["eps"] = spec.resolve().eps
    key["bn_affine"] = True
    if init != "pytorch":
        key["init"] = init
    return key


@torch.no_grad()
def init_dense(model: nn.Module, init: str, seed: int) -> None:
    """Re-initialise a freshly built dense network as ``init`` says (``pytorch`` keeps the layers' defaults)."""
    if init == "pytorch":
        return
    gen = torch.Generator().manual_seed(seed)
    for module in model.modules():
        # Conv and linear weights (and biases where the reference sets them).
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            if init == "openlth":
                nn.init.kaiming_normal_(module.weight, generator=gen)
            elif init == "glorot":
                nn.init.xavier_uniform_(module.weight, generator=gen)
            elif isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu", generator=gen)
            else:
                nn.init.normal_(module.weight, 0.0, 0.01, generator=gen)
            if init in ("hydra", "glorot") and module.bias is not None:
                nn.init.zeros_(module.bias)
        # BatchNorm's affine tensors: OpenLTH draws the weights uniformly in [0, 1]; HYDRA sets 1 and 0.
        elif isinstance(module, nn.modules.batchnorm._BatchNorm) and module.affine:
            if init == "openlth":
                nn.init.uniform_(module.weight, 0.0, 1.0, generator=gen)
            else:
                nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


def dense_initial(ctx: RunContext, init: str = "pytorch") -> nn.Module:
    """The dense network before training: the spec's seeded architecture, initialised as ``init`` says (the
    start of the dense stage and ``alth``'s rewind point)."""
    model = ctx.build_model(bn_affine=True)
    init_dense(model, init, ctx.spec.seed)
    return model


def keep_selected(ctx: RunContext, model: nn.Module, train_dir: Optional[Path],
                  refresh: Optional[Callable[[], None]] = None) -> nn.Module:
    """The ticket from the method's final stage (trained in ``train_dir``): its best-validation epoch, which the
    training loop leaves loaded, or with ``--select last`` its last epoch (masks refreshed by ``refresh``);
    ``train_dir`` ``None``: nothing was trained (a given network kept as it is)."""
    if (train_dir is not None and ctx.spec.select == "last" and last_epoch_state(model, train_dir, ctx.device)
            and refresh is not None):
        refresh()
    ctx.info["select"] = ctx.spec.select
    return model


def read_record(stage_dir: Path) -> Dict[str, Any]:
    """The training record a shared stage wrote next to its model."""
    path = paths.stage_record(stage_dir)
    return json.loads(path.read_text()) if path.exists() else {}


def write_record(stage_dir: Path, record: Dict[str, Any]) -> None:
    """A shared stage's training record (best epoch, validation accuracies)."""
    atomic_json(paths.stage_record(stage_dir), record, indent=0)


@torch.no_grad()
def last_epoch_state(model: nn.Module, train_dir: Path, device: torch.device) -> bool:
    """Load the last finished epoch's state of the stage trained in ``train_dir`` into ``model``.

    The training loop leaves the best-validation state loaded; its resume
    checkpoint holds the last epoch's. Returns ``False`` (model untouched)
    when the stage ran no epoch.
    """
    path = paths.checkpoint(train_dir)
    if not path.exists():
        return False
    model.load_state_dict(torch.load(path, map_location=device, weights_only=True)["model"])
    return True


@torch.no_grad()
def init_frozen_weights(model: nn.Module, weight_init: str, seed: int) -> None:
    """RST's random weights: signed Kaiming constant from a seeded generator, or Kaiming normal (fan_in, relu)."""
    if weight_init == "signed-constant":
        init_signed_kaiming_constant(model, torch.Generator().manual_seed(seed))
        return
    for _name, layer in prunable_layers(model):
        nn.init.kaiming_normal_(layer.weight, mode="fan_in", nonlinearity="relu")


def signed_constant_regenerator(seed: int) -> Callable[[nn.Module], None]:
    """Re-creates seed ``seed``'s signed Kaiming-constant weights in an empty model (compact tickets)."""
    return lambda model: init_signed_kaiming_constant(model, torch.Generator().manual_seed(seed))


def bn_parameters(model: nn.Module) -> List[nn.Parameter]:
    """The affine tensors (weight, bias) of every BatchNorm layer."""
    return [p for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) for p in m.parameters()]


def dense_stage(ctx: RunContext, epochs: Optional[int] = None, start_from: str = "best",
                init: str = "pytorch") -> nn.Module:
    """The dense AT network for this spec's base: trained once, then loaded by every run.

    ``start_from='last'`` returns its last-epoch weights instead of the best-validation ones; ``init`` is the
    initialisation it is trained from (:data:`DENSE_INITS`).
    """
    n_epochs = stage_epochs(ctx, epochs)
    key = dense_key(ctx.spec, n_epochs, init)

    # Build: seeded initialisation (the rewind point of ``alth``), AT of every tensor.
    def build(stage_dir: Path) -> nn.Module:
        model = dense_initial(ctx, init)
        set_trainable(model, weights=True, scores=False)
        params = [p for p in model.parameters() if p.requires_grad]
        result = ctx.train(model, params, ctx.train_config(epochs=n_epochs), stage_dir / "train", desc="dense AT")
        write_record(stage_dir, {"best_epoch": result.best_epoch, "val_clean": result.val_clean,
                                 "val_robust": result.val_robust})
        return model

    model = ctx.shared_stage(DENSE_STAGE, key, build, lambda: ctx.build_model(bn_affine=True))
    stage_dir = ctx.stage_path(DENSE_STAGE, key)
    ctx.info["dense_stage"] = {"stage": stage_dir.name, "epochs": n_epochs, "start_from": start_from, "init": init,
                               **read_record(stage_dir)}
    if start_from == "last":
        last_epoch_state(model, stage_dir / "train", ctx.device)
    set_trainable(model, weights=False, scores=False)
    return model


# The help of every method's ``init_from`` hyperparameter.
INIT_FROM_HELP = ("prune this dense network instead of training one: a state dict of the spec's architecture (read "
                  "with weights_only), or zoo:NAME[@DIR], a RobustBench zoo model whose weights are in DIR (default "
                  "models/), mapped onto the architecture and checked to give the same logits; the file's sha256 goes "
                  "into meta.json; --pretrain-epochs and --dense-init then do not apply")
# ``--init-from zoo:NAME[@DIR]``: a RobustBench zoo model, its weights in DIR (``bench zoo``'s default folder).
ZOO_PREFIX = "zoo:"
ZOO_MODEL_DIR = "models"


def zoo_source(value: str) -> Optional[Tuple[str, str]]:
    """(model name, weights folder) of a ``zoo:NAME[@DIR]`` value; ``None`` for a file path."""
    if not value.startswith(ZOO_PREFIX):
        return None
    name, _, folder = value[len(ZOO_PREFIX):].partition("@")
    if not name:
        raise ValueError(f"--init-from {value}: name a zoo model (zoo:NAME or zoo:NAME@DIR; see `bench zoo list`)")
    return name, folder or ZOO_MODEL_DIR


def check_init_from(path: Optional[str]) -> None:
    """``--init-from``'s form (a zoo value must name a model); the file itself is checked by
    :func:`check_given_network` before a search, not when a finished run's spec is read (from another folder, or
    after the file moved, its ticket still loads)."""
    if path is not None:
        zoo_source(path)


def check_given_network(spec: RunSpec, model: nn.Module) -> None:
    """Before a search: the given dense network (``--init-from``) exists and is the spec's architecture ``model``
    (the meta device serves)."""
    path = spec.hparams.init_from
    if path is None:
        return
    if zoo_source(path) is None and not Path(path).is_file():
        raise ValueError(f"--init-from {path}: not a file (a state dict of the spec's dense network, or zoo:NAME)")
    read_dense_state(path, model, spec)


def init_from_file(value: str, spec: RunSpec) -> Path:
    """The file whose sha256 identifies a given dense network: the state dict, or the zoo model's weights."""
    zoo = zoo_source(value)
    if zoo is None:
        return Path(value)
    name, folder = zoo
    files = checkpoint_paths(name, folder, spec.dataset, spec.norm)
    if len(files) != 1:
        raise ValueError(f"--init-from {value}: {name} is not one weights file (an ensemble, or a timm model); "
                         "save its state dict and give that file")
    return files[0]


def _zoo_dense_state(value: str, model: nn.Module, spec: RunSpec) -> Dict[str, torch.Tensor]:
    """A zoo model's tensors as the spec's architecture holds them (checked by computing the same logits)."""
    name, folder = zoo_source(value) or ("", "")
    init_from_file(value, spec)
    zoo = load_zoo_model(name, folder, spec.dataset, spec.norm)
    info = spec.data_info
    return zoo_state_for(zoo, model, (info.in_channels, info.image_size, info.image_size), name)


def read_dense_state(path: str, model: nn.Module, spec: RunSpec) -> Dict[str, torch.Tensor]:
    """The state dict of ``--init-from``, read with ``weights_only=True`` (or a zoo model's, mapped onto the
    architecture) and checked against ``model`` (the spec's architecture; shapes only, so the meta device serves):
    every weight, bias and BatchNorm tensor must be there with its shape; masks and scores, which a plain network
    lacks, are optional."""
    if zoo_source(path) is not None:
        return _zoo_dense_state(path, model, spec)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - an unreadable or refused file is one line naming it
        raise ValueError(f"--init-from {path}: not a plain tensor state dict ({type(exc).__name__}); only "
                         "weights_only files are read") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"--init-from {path}: not a state dict (a mapping of names to tensors)")
    mine = model.state_dict()
    needed = {k for k in mine if not k.endswith((".mask", ".scores"))}
    missing, unexpected = sorted(needed - set(state)), sorted(set(state) - set(mine))
    if missing or unexpected:
        raise ValueError(f"--init-from {path} does not match {spec.arch} at width {spec.width:g}: missing "
                         f"{missing[:3]}, unexpected {unexpected[:3]}")
    for key, value in state.items():
        if value.shape != mine[key].shape:
            raise ValueError(f"--init-from {path} does not match {spec.arch} at width {spec.width:g}: tensor {key} "
                             f"has shape {tuple(value.shape)}, the architecture needs {tuple(mine[key].shape)}")
    return state


def load_dense(ctx: RunContext, path: str) -> nn.Module:
    """A dense network given by the user (``--init-from``) instead of the dense stage (:func:`read_dense_state`);
    its path and sha256 go into meta.json."""
    model = ctx.build_model(bn_affine=True)
    model.load_state_dict({**model.state_dict(), **read_dense_state(path, model, ctx.spec)})
    source = init_from_file(path, ctx.spec).resolve()
    ctx.info["init_from"] = {"path": str(source), "sha256": file_sha256(source),
                             **({"zoo": path[len(ZOO_PREFIX):]} if zoo_source(path) else {})}
    set_trainable(model, weights=False, scores=False)
    return model


def dense_network(ctx: RunContext, epochs: Optional[int], start_from: str, init: str, init_from: Optional[str]) -> nn.Module:
    """The dense network a pruning method starts from: the user's (``--init-from``) or the shared dense stage."""
    return load_dense(ctx, init_from) if init_from is not None else dense_stage(ctx, epochs, start_from, init)


def train_weights(ctx: RunContext, model: nn.Module, epochs: int, lr: float, stage_dir: Path, desc: str) -> nn.Module:
    """AT of the surviving weights under a fixed mask (scores frozen, masks untouched): the final stage of every
    method that uses it, so the ticket is its epoch that ``--select`` names."""
    set_trainable(model, weights=True, scores=False)
    params = [p for p in model.parameters() if p.requires_grad]
    ctx.train(model, params, ctx.train_config(epochs=epochs, lr=lr), stage_dir, desc=desc)
    keep_selected(ctx, model, stage_dir)
    set_trainable(model, weights=False, scores=False)
    return model
