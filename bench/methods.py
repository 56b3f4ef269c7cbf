"""Method registry and the context every method runs in.

A method is one file in ``tickets/`` or ``baselines/`` with a class decorated
by ``@METHODS.register(name, description)``. It declares its hyperparameter
dataclass (``Hparams``), whether BatchNorm is affine, and ``find_ticket``,
which uses the shared pieces of :class:`RunContext` (model builder, training
loop, shared stages). Files in those packages are discovered automatically,
so a new method shows up in the CLI, tests and tables with no other edit.
"""
from __future__ import annotations

import abc
import dataclasses
import hashlib
import importlib
import json
import pkgutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Dict, List, Optional, Tuple, Type, Union

import torch
import torch.nn as nn
from filelock import FileLock

from bench.registry import Registry

if TYPE_CHECKING:
    from bench.data import DataBundle
    from bench.evaluate import AttackResult
    from bench.models import Classifier
    from bench.spec import RunSpec
    from bench.train import Compute, TrainConfig, TrainResult


class Method(abc.ABC):
    """Base class of a ticket-finding method."""

    Hparams: ClassVar[Type[Any]]
    bn_affine: ClassVar[bool] = True
    randomized: ClassVar[bool] = False

    def validate(self, spec: "RunSpec") -> None:
        """Raise ``ValueError`` for specs this method cannot run."""

    @abc.abstractmethod
    def find_ticket(self, ctx: "RunContext") -> nn.Module:
        """Return the ticket (a masked model with final weights and masks)."""

    def build_empty(self, spec: "RunSpec", device: Union[str, torch.device] = "cpu") -> nn.Module:
        """The untrained module ``ticket.pt`` loads into: the spec's architecture with this method's BatchNorm."""
        from bench.data import dataset_info
        from bench.models import ModelConfig, build_model

        info = dataset_info(spec.dataset)
        cfg = ModelConfig(info.in_channels, info.num_classes, info.image_size, info.mean, info.std, spec.width, self.bn_affine)
        return build_model(spec.arch, cfg).to(device)

    def evaluate_ticket(self, request: "EvalRequest") -> Optional[List["AttackResult"]]:
        """A method's own evaluation (randomised tickets); ``None`` means the harness's standard cascade."""
        return None


@dataclass(frozen=True)
class EvalRequest:
    """Everything an evaluation needs: the run, its ticket and the evaluation settings."""

    spec: "RunSpec"
    data: "DataBundle"
    device: torch.device
    run_dir: Path
    model: nn.Module
    meta: Dict[str, Any]
    attacks: Tuple[str, ...]
    n_eval: int
    n_eval_aa: int
    cascade: bool


METHODS: Registry[Method] = Registry("method")
PLUGIN_PACKAGES = ("tickets", "baselines")


def discover() -> None:
    """Import every module of the method packages (each registers itself)."""
    for pkg_name in PLUGIN_PACKAGES:
        pkg = importlib.import_module(pkg_name)
        for info in pkgutil.iter_modules(pkg.__path__):
            importlib.import_module(f"{pkg_name}.{info.name}")


def register(name: str, description: str) -> Callable[[Type[Method]], Type[Method]]:
    """Class decorator: register an instance of the method class."""

    def deco(cls: Type[Method]) -> Type[Method]:
        if not hasattr(cls, "Hparams"):
            from bench.spec import NoHparams

            cls.Hparams = NoHparams
        METHODS.add(name, cls(), description)
        return cls

    return deco


def get_method(name: str) -> Method:
    """The registered method ``name`` (ValueError listing choices if unknown)."""
    discover()
    return METHODS.get(name)


@dataclass
class RunContext:
    """What a method gets: spec, data, device, folders and the shared stages."""

    spec: "RunSpec"
    data: "DataBundle"
    device: torch.device
    run_dir: Path
    stages_dir: Path
    compute: "Compute"
    info: Dict[str, Any] = field(default_factory=dict)

    @property
    def hp(self) -> Any:
        """The method's hyperparameters."""
        return self.spec.hparams

    def build_model(self, bn_affine: bool = True, seed_offset: int = 0) -> "Classifier":
        """The spec's architecture from masked layers, seeded, on the device."""
        from bench.models import ModelConfig, build_model

        i = self.data.info
        torch.manual_seed(self.spec.seed + seed_offset)
        cfg = ModelConfig(i.in_channels, i.num_classes, i.image_size, i.mean, i.std, self.spec.width, bn_affine)
        return build_model(self.spec.arch, cfg).to(self.device)

    def train_config(self, **overrides: Any) -> "TrainConfig":
        """Training settings from the spec, with per-stage overrides (epochs, lr...)."""
        from bench.train import TrainConfig

        s = self.spec
        cfg = TrainConfig(epochs=s.epochs, lr=s.lr, batch_size=s.batch_size, optimizer=s.optimizer,
                          momentum=s.momentum, weight_decay=s.weight_decay, lr_schedule=s.lr_schedule,
                          trainer=s.trainer, trades_beta=s.trades_beta, eps=float(s.eps), steps=s.train_steps,
                          step_size=s.step_size, augment=self.data.info.augment)
        return dataclasses.replace(cfg, **overrides)

    def train(self, model: nn.Module, params: List[torch.Tensor], cfg: "TrainConfig", stage_dir: Path,
              refresh_masks: Optional[Callable[[], None]] = None, desc: str = "train") -> "TrainResult":
        """Run the shared training loop and add its compute to this run's total."""
        from bench.train import train

        result = train(model, params, self.data, cfg, self.device, stage_dir, self.spec.seed, refresh_masks, desc)
        self.compute.add(result.compute)
        self.info.setdefault("stages", []).append({"stage": desc, "best_epoch": result.best_epoch,
                                                   "val_clean": result.val_clean, "val_robust": result.val_robust})
        return result

    def stage_path(self, name: str, key: Dict[str, Any]) -> Path:
        """Folder of the shared stage ``name`` keyed by the hash of ``key``."""
        digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:12]
        return self.stages_dir / f"{name}-{digest}"

    def shared_stage(self, name: str, key: Dict[str, Any], build: Callable[[Path], nn.Module],
                     make_empty: Callable[[], nn.Module]) -> nn.Module:
        """A stage shared between runs (e.g. a dense AT network), keyed by the hash of ``key``.

        The first run that needs it builds it in ``stages/<name>-<hash>/``;
        later runs with the same key load ``model.pt`` instead of training again.
        """
        stage_dir = self.stage_path(name, key)
        final = stage_dir / "model.pt"
        stage_dir.mkdir(parents=True, exist_ok=True)
        # One builder at a time: a concurrent run waits, then loads the result.
        with FileLock(str(stage_dir / ".lock")):
            if final.exists():
                model = make_empty()
                model.load_state_dict(torch.load(final, map_location=self.device, weights_only=True))
                meta = json.loads((stage_dir / "stage.json").read_text())
                self.info.setdefault("reused_stages", []).append(stage_dir.name)
                self.info.setdefault("stage_compute", []).append(meta["compute"])
                return model
            (stage_dir / "key.json").write_text(json.dumps(key, sort_keys=True, indent=1, default=str))
            before = (self.compute.seconds, self.compute.passes)
            t0 = time.perf_counter()
            model = build(stage_dir)
            spent = {"seconds": self.compute.seconds - before[0], "passes": self.compute.passes - before[1],
                     "wall": time.perf_counter() - t0}
            tmp = stage_dir / "model.pt.tmp"
            torch.save(model.state_dict(), tmp)
            (stage_dir / "stage.json").write_text(json.dumps({"compute": spent}))
            tmp.replace(final)
            return model
