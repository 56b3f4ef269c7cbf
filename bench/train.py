"""The one training loop every method uses.

Adversarial training (Madry PGD, TRADES) or clean training of whichever
tensors a method marks trainable: weights (dense AT, fine-tuning) or scores
(RST, HYDRA). Masks of score-learning methods are refreshed once per
optimiser step and reused inside the PGD loop. The best epoch is chosen on
the validation split (PGD robust accuracy), never on the test set. Each epoch
writes a checkpoint, so a killed run resumes where it stopped.
"""
from __future__ import annotations

import dataclasses
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from bench.attacks import PGD
from bench.core import paths
from bench.core.errors import TrainingDivergedError
from bench.core.io import atomic_save
from bench.core.progress import bar
from bench.data import DataBundle, Split, batch_starts, batches
from bench.spec import RunSpec, spec_fields
from bench.trainers import TRAINERS


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation and training-attack settings of one stage: the spec's training fields, resolved.

    Built with :meth:`from_spec` (every field of the spec's training and threat groups that this class
    has is read from the spec under the same name; ``eps`` and
    ``train_step_size`` resolved to numbers); a stage overrides some with
    ``dataclasses.replace`` (epochs, lr...).
    """

    epochs: int
    lr: float
    batch_size: int = 128
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_schedule: str = "cosine"
    craft_bn: str = "eval"
    trainer: str = "pgd"
    trades_beta: float = 6.0
    norm: str = "Linf"
    eps: float = 0.1
    train_steps: int = 7
    train_step_size: float = 0.025
    augment: bool = False
    n_val: int = 1000

    @classmethod
    def from_spec(cls, spec: RunSpec, augment: bool, **overrides: Any) -> "TrainConfig":
        """The stage settings of ``spec`` (resolved eps and step size), with per-stage overrides."""
        resolved = spec.resolve()
        values = {name: getattr(resolved, name) for name in SPEC_TRAIN_FIELDS}
        values["eps"] = resolved.eps_value
        values["train_step_size"] = resolved.step_size
        return dataclasses.replace(cls(**values, augment=augment), **overrides)


# RunSpec fields a training stage reads: the training and threat groups' fields that TrainConfig has (the spec's
# ``select`` is the stage's caller's to apply).
SPEC_TRAIN_FIELDS = tuple(name for name in spec_fields("training", "threat")
                          if name in {f.name for f in dataclasses.fields(TrainConfig)})


@dataclass
class Compute:
    """Compute spent: wall seconds and forward+backward passes over single examples."""

    seconds: float = 0.0
    passes: int = 0

    def add(self, other: "Compute") -> None:
        """Accumulate another stage's compute."""
        self.seconds += other.seconds
        self.passes += other.passes


@dataclass
class TrainResult:
    """What a training stage reports."""

    best_epoch: int
    val_clean: float
    val_robust: float
    compute: Compute
    history: List[Dict[str, float]] = field(default_factory=list)


def _scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int) -> torch.optim.lr_scheduler.LRScheduler:
    """Per-step learning-rate schedule."""
    total = max(1, cfg.epochs * steps_per_epoch)
    if cfg.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    if cfg.lr_schedule == "step":
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.1 ** ((s >= 0.5 * total) + (s >= 0.75 * total)))
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)


def _optimizer(params: Sequence[torch.Tensor], cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD (momentum) or Adam over the trainable tensors."""
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def has_feature_batchnorm(model: nn.Module) -> bool:
    """Whether ``model`` normalises features over the batch alone (BatchNorm1d): it cannot train on one example."""
    return any(isinstance(m, nn.BatchNorm1d) for m in model.modules())


def train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, opt: torch.optim.Optimizer,
               cfg: TrainConfig, attack: PGD, gen: torch.Generator) -> Tuple[float, int]:
    """One optimiser step: the trainer crafts training inputs (BatchNorm as ``cfg.craft_bn``), then the update
    (train mode).

    Returns the loss and the forward+backward example passes spent. A
    non-finite loss is returned before any update, so the caller can stop.
    """
    trainer = TRAINERS.get(cfg.trainer)
    # Inner maximisation on the current (masked) network, BatchNorm in the configured mode.
    model.train(cfg.craft_bn == "train")
    x_in, passes = trainer.craft(model, x, y, cfg, attack, gen)
    # Outer minimisation on the trainable tensors.
    model.train()
    loss, loss_passes = trainer.loss(model, x, x_in, y, cfg)
    passes += loss_passes
    if not torch.isfinite(loss):
        return float(loss.item()), passes
    opt.zero_grad(set_to_none=True)
    loss.backward()
    try:
        opt.step()
    except RuntimeError as exc:
        # A learning rate or weight decay times a gradient beyond float32's range.
        if "overflow" not in str(exc):
            raise
        return math.inf, passes
    return float(loss.item()), passes


@torch.no_grad()
def accuracy(model: nn.Module, split: Split, device: torch.device, batch_size: int = 500) -> float:
    """Clean accuracy of ``model`` (caller sets eval mode)."""
    correct = 0
    for x, y in batches(split, batch_size, device):
        correct += int((model(x).argmax(1) == y).sum())
    return correct / max(1, len(split))


def training_attack(cfg: TrainConfig, seed: int) -> PGD:
    """The training PGD of a stage: the last iterate of ``train_steps`` steps (no early stop)."""
    return PGD(cfg.eps, steps=max(cfg.train_steps, 1), step_size=cfg.train_step_size, early_stop=False, seed=seed,
               norm=cfg.norm)


def robust_accuracy(model: nn.Module, split: Split, attack: Callable, device: torch.device, batch_size: int = 500) -> float:
    """Accuracy on ``attack``'s adversarial examples (caller sets eval mode)."""
    correct = 0
    for x, y in batches(split, batch_size, device):
        x_adv = attack(model, x, y)
        with torch.no_grad():
            correct += int((model(x_adv).argmax(1) == y).sum())
    return correct / max(1, len(split))


def read_checkpoint(path: Path, device: torch.device) -> Optional[Dict[str, Any]]:
    """A stage's resume checkpoint; a missing one is ``None``, and so is a corrupt one (with a warning: the
    stage restarts from its beginning)."""
    if not path.exists():
        return None
    try:
        ck = torch.load(path, map_location=device, weights_only=True)
        if not isinstance(ck, dict) or not {"model", "opt", "sched", "best_state", "epoch"} <= set(ck):
            raise ValueError("not a resume checkpoint")
    except Exception as exc:  # noqa: BLE001 - reported, then the stage restarts
        warnings.warn(f"{path} is corrupt ({type(exc).__name__}); restarting this training stage from its first epoch",
                      stacklevel=2)
        path.unlink()
        return None
    checkpoint: Dict[str, Any] = ck
    return checkpoint


def train(
    model: nn.Module,
    params: Sequence[torch.Tensor],
    data: DataBundle,
    cfg: TrainConfig,
    device: torch.device,
    stage_dir: Path,
    seed: int,
    refresh_masks: Optional[Callable[[], None]] = None,
    desc: str = "train",
) -> TrainResult:
    """Train ``params`` of ``model``; leaves the best-validation state loaded.

    ``refresh_masks`` (score-learning methods) is called once before every
    optimiser step and once before evaluation.
    """
    stage_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = paths.checkpoint(stage_dir)
    refresh = refresh_masks or (lambda: None)
    opt = _optimizer(params, cfg)
    # BatchNorm over features needs two examples per training batch: a last batch of one joins the one before
    # (and the schedule counts the batches that run).
    min_last = 2 if has_feature_batchnorm(model) else 1
    sched = _scheduler(opt, cfg, len(batch_starts(len(data.train), cfg.batch_size, min_last)))
    attack = training_attack(cfg, seed)
    val_attack = PGD(cfg.eps, steps=max(cfg.train_steps, 1), step_size=cfg.train_step_size, seed=seed + 1, norm=cfg.norm)
    val = data.val.head(cfg.n_val)
    compute = Compute()
    history: List[Dict[str, float]] = []
    start_epoch, best = 0, {"epoch": -1, "val_robust": -1.0, "val_clean": 0.0}
    best_state = {k: v.clone() for k, v in model.state_dict().items()}

    # Resume from the last finished epoch when a checkpoint exists.
    ck = read_checkpoint(ckpt_path, device)
    if ck is not None:
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        sched.load_state_dict(ck["sched"])
        best_state = ck["best_state"]
        start_epoch = int(ck["epoch"]) + 1
        best = {k: float(v) for k, v in ck["best"].items()}
        compute = Compute(float(ck["seconds"]), int(ck["passes"]))
        history = [dict(h) for h in ck["history"]]

    # The bar is closed (and cleared) even when the loop raises, so an error line starts on a clean line.
    with bar(range(start_epoch, cfg.epochs), desc=desc, unit="epoch", leave=False, initial=start_epoch,
              total=cfg.epochs) as epochs:
        for epoch in epochs:
            t0 = time.perf_counter()
            gen = torch.Generator().manual_seed(seed * 1000 + epoch)
            losses = []
            # One epoch over shuffled training batches.
            for step, (x, y) in enumerate(batches(data.train, cfg.batch_size, device, generator=gen, augment=cfg.augment,
                                                  min_last=min_last)):
                refresh()
                step_attack = dataclasses.replace(attack, seed=(seed * 1000 + epoch) * 100_000 + step)
                loss, passes = train_step(model, x, y, opt, cfg, step_attack, gen)
                # Divergence guard: stop with a clear error, never train on NaN.
                if not math.isfinite(loss) or loss > 1e4:
                    raise TrainingDivergedError(f"{desc}: loss became {loss:.4g} at epoch {epoch}; lower --lr")
                sched.step()
                compute.passes += passes
                losses.append(loss)
            # Model selection on the validation split.
            refresh()
            model.eval()
            val_clean = accuracy(model, val, device)
            val_robust = robust_accuracy(model, val, val_attack, device) if TRAINERS.get(cfg.trainer).adversarial else val_clean
            compute.seconds += time.perf_counter() - t0
            history.append({"epoch": epoch, "loss": sum(losses) / max(1, len(losses)), "val_clean": val_clean, "val_robust": val_robust})
            if val_robust > best["val_robust"]:
                best = {"epoch": epoch, "val_robust": val_robust, "val_clean": val_clean}
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            # Atomic per-epoch checkpoint (resume point).
            atomic_save(ckpt_path, {"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                                    "best_state": best_state, "epoch": epoch, "best": best, "seconds": compute.seconds,
                                    "passes": compute.passes, "history": history})

    model.load_state_dict(best_state)
    refresh()
    model.eval()
    return TrainResult(int(best["epoch"]), float(best["val_clean"]), float(best["val_robust"]), compute, history)
