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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from bench.attacks import PGD
from bench.data import DataBundle, Split, batches


class TrainingDivergedError(RuntimeError):
    """The loss became NaN/inf or exploded."""


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation and training-attack settings of one stage."""

    epochs: int
    lr: float
    batch_size: int = 128
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_schedule: str = "cosine"
    trainer: str = "pgd"
    trades_beta: float = 6.0
    eps: float = 0.1
    steps: int = 7
    step_size: float = 0.025
    augment: bool = False
    n_val: int = 1000


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


def _optimizer(params: List[torch.Tensor], cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD (momentum) or Adam over the trainable tensors."""
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def _trades_adv(model: nn.Module, x: torch.Tensor, cfg: TrainConfig, gen: torch.Generator) -> torch.Tensor:
    """TRADES inner maximisation: PGD on KL(f(x') || f(x))."""
    with torch.no_grad():
        p_clean = F.softmax(model(x), 1)
    x_adv = (x + 0.001 * torch.randn(x.shape, generator=gen).to(x.device)).clamp(0, 1)
    for _ in range(cfg.steps):
        x_adv.requires_grad_(True)
        kl = F.kl_div(F.log_softmax(model(x_adv), 1), p_clean, reduction="sum")
        grad = torch.autograd.grad(kl, x_adv)[0]
        x_adv = x_adv.detach() + cfg.step_size * grad.sign()
        x_adv = torch.min(torch.max(x_adv, x - cfg.eps), x + cfg.eps).clamp(0, 1)
    return x_adv.detach()


def train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, opt: torch.optim.Optimizer,
               cfg: TrainConfig, attack: PGD, gen: torch.Generator) -> Tuple[float, int]:
    """One optimiser step: craft training examples (eval mode), then update (train mode).

    Returns the loss and the forward+backward example passes spent. A
    non-finite loss is returned before any update, so the caller can stop.
    """
    # Inner maximisation on the current (masked) network.
    model.eval()
    passes = 0
    if cfg.trainer == "pgd" and cfg.steps > 0:
        x_in = attack(model, x, y)
        passes += len(x) * cfg.steps
    elif cfg.trainer == "trades" and cfg.steps > 0:
        x_in = _trades_adv(model, x, cfg, gen)
        passes += len(x) * (cfg.steps + 1)
    else:
        x_in = x
    # Outer minimisation on the trainable tensors.
    model.train()
    if cfg.trainer == "trades":
        logits = model(x)
        loss = F.cross_entropy(logits, y) + cfg.trades_beta * F.kl_div(
            F.log_softmax(model(x_in), 1), F.softmax(logits, 1), reduction="batchmean")
        passes += 2 * len(x)
    else:
        loss = F.cross_entropy(model(x_in), y)
        passes += len(x)
    if not torch.isfinite(loss):
        return float(loss.item()), passes
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return float(loss.item()), passes


@torch.no_grad()
def accuracy(model: nn.Module, split: Split, device: torch.device, batch_size: int = 500) -> float:
    """Clean accuracy of ``model`` (caller sets eval mode)."""
    correct = 0
    for x, y in batches(split, batch_size, device):
        correct += int((model(x).argmax(1) == y).sum())
    return correct / max(1, len(split))


def robust_accuracy(model: nn.Module, split: Split, attack: Callable, device: torch.device, batch_size: int = 500) -> float:
    """Accuracy on ``attack``'s adversarial examples (caller sets eval mode)."""
    correct = 0
    for x, y in batches(split, batch_size, device):
        x_adv = attack(model, x, y)
        with torch.no_grad():
            correct += int((model(x_adv).argmax(1) == y).sum())
    return correct / max(1, len(split))


def train(
    model: nn.Module,
    params: List[torch.Tensor],
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
    ckpt_path = stage_dir / "last.pt"
    refresh = refresh_masks or (lambda: None)
    opt = _optimizer(params, cfg)
    steps_per_epoch = math.ceil(len(data.train) / cfg.batch_size)
    sched = _scheduler(opt, cfg, steps_per_epoch)
    attack = PGD(cfg.eps, steps=cfg.steps, step_size=cfg.step_size, early_stop=False, seed=seed)
    val_attack = PGD(cfg.eps, steps=max(cfg.steps, 1), step_size=cfg.step_size, seed=seed + 1)
    val = data.val.head(cfg.n_val)
    compute = Compute()
    history: List[Dict[str, float]] = []
    start_epoch, best = 0, {"epoch": -1, "val_robust": -1.0, "val_clean": 0.0}
    best_state = {k: v.clone() for k, v in model.state_dict().items()}

    # Resume from the last finished epoch when a checkpoint exists.
    if ckpt_path.exists():
        ck = torch.load(ckpt_path, map_location=device, weights_only=True)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        sched.load_state_dict(ck["sched"])
        best_state = ck["best_state"]
        start_epoch = int(ck["epoch"]) + 1
        best = {k: float(v) for k, v in ck["best"].items()}
        compute = Compute(float(ck["seconds"]), int(ck["passes"]))
        history = [dict(h) for h in ck["history"]]

    for epoch in tqdm(range(start_epoch, cfg.epochs), desc=desc, unit="epoch", leave=False, initial=start_epoch, total=cfg.epochs):
        t0 = time.perf_counter()
        gen = torch.Generator().manual_seed(seed * 1000 + epoch)
        losses = []
        # One epoch over shuffled training batches.
        for step, (x, y) in enumerate(batches(data.train, cfg.batch_size, device, generator=gen, augment=cfg.augment)):
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
        val_robust = robust_accuracy(model, val, val_attack, device) if cfg.trainer != "clean" else val_clean
        compute.seconds += time.perf_counter() - t0
        history.append({"epoch": epoch, "loss": sum(losses) / max(1, len(losses)), "val_clean": val_clean, "val_robust": val_robust})
        if val_robust > best["val_robust"]:
            best = {"epoch": epoch, "val_robust": val_robust, "val_clean": val_clean}
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        # Atomic per-epoch checkpoint (resume point).
        tmp = ckpt_path.with_suffix(".tmp")
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                    "best_state": best_state, "epoch": epoch, "best": best, "seconds": compute.seconds,
                    "passes": compute.passes, "history": history}, tmp)
        tmp.replace(ckpt_path)

    model.load_state_dict(best_state)
    refresh()
    model.eval()
    return TrainResult(int(best["epoch"]), float(best["val_clean"]), float(best["val_robust"]), compute, history)
