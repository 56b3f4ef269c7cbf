"""Method base class and the context every method runs in.

A method is one file in ``tickets/`` or ``baselines/`` with a class decorated
by ``@register(name, description)``. It declares its hyperparameter
dataclass (``Hparams``, fields made with ``bench.core.config.spec_field``;
``choices=`` are checked for it), whether BatchNorm is affine, and
``find_ticket``, which uses the shared pieces of :class:`RunContext` (model
builder, training loop, shared stages) and :mod:`bench.methods.stages`. The method
registry (:data:`bench.spec.METHODS`) imports every file of those packages on
first use, so a new method shows up in the CLI, tests and tables with no
other edit. No method file imports another.
"""
from __future__ import annotations

import abc
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Dict, Mapping, Optional, Sequence, Tuple, Type, Union

import torch
import torch.nn as nn
from filelock import FileLock

from bench.core import paths
from bench.core.io import atomic_json, atomic_save, atomic_write, digest
from bench.data import DataBundle
from bench.nn.models import Classifier, ModelConfig, build_model
from bench.spec import METHODS, NoHparams, RunSpec
from bench.train import Compute, TrainConfig, TrainResult, train


@dataclass(frozen=True)
class Network:
    """The kind of network a method builds: affine BatchNorm or not, linear biases or not."""

    bn_affine: bool = True
    linear_bias: bool = True


class Method(abc.ABC):
    """Base class of a ticket-finding method."""

    Hparams: ClassVar[Type[Any]]
    bn_affine: ClassVar[bool] = True
    randomized: ClassVar[bool] = False
    # Dense methods prune nothing: their sparsity is 0, and a spec that leaves it out gets 0.
    dense: ClassVar[bool] = False
    # What the method's reference code keeps as its final network, as a ``--select`` choice: "last", or "best"
    # where the reference keeps its best epoch (RST's and HYDRA's code pick it on the test set; here the
    # validation split). ``None``: no reference code. Reference presets select as this says (tested).
    reference_select: ClassVar[Optional[str]] = None
    # The spec's ``granularity`` choices this method can prune at (bench.spec.GRANULARITIES).
    granularities: ClassVar[Tuple[str, ...]] = ("weight",)
    # Hyperparameters renamed since rows and spec.json files were written: old name -> current name.
    renamed_hparams: ClassVar[Mapping[str, str]] = {}

    def current_hparams(self, values: Mapping[str, Any]) -> Dict[str, Any]:
        """A mapping of hyperparameters (a stored spec's, a row's, a preset's) under their current names."""
        out: Dict[str, Any] = {}
        for key, value in values.items():
            new = self.renamed_hparams.get(str(key), str(key))
            if new in out or (new != key and new in values):
                raise ValueError(f"{key!r} and {new!r} name the same hyperparameter of this method (renamed to {new!r})")
            out[new] = value
        return out

    def id_hparams(self, values: Mapping[str, Any]) -> Dict[str, Any]:
        """Hyperparameters as a run id hashes them: under the names they had when ids were first made (a rename
        keeps every run id, so old run folders and rows stay this spec's)."""
        old = {new: was for was, new in self.renamed_hparams.items()}
        return {old.get(key, key): value for key, value in values.items()}

    def validate(self, spec: RunSpec) -> None:
        """Raise ``ValueError`` for specs this method cannot run."""

    def validate_model(self, spec: RunSpec, model: nn.Module) -> None:
        """Raise ``ValueError`` for specs this method cannot run on ``model`` (the spec's architecture on the meta
        device, before anything is written): checks that need the layers' sizes."""

    @abc.abstractmethod
    def find_ticket(self, ctx: "RunContext") -> nn.Module:
        """Return the ticket (a masked model with final weights and masks)."""

    def network(self, spec: RunSpec) -> Network:
        """The network kind of this method's tickets (default: ``bn_affine``, linear layers with biases)."""
        return Network(bn_affine=self.bn_affine)

    def build_empty(self, spec: RunSpec, device: Union[str, torch.device] = "cpu") -> nn.Module:
        """The untrained module ``ticket.pt`` loads into: the spec's architecture as :meth:`network` says."""
        info = spec.data_info
        net = self.network(spec)
        cfg = ModelConfig(info.in_channels, info.num_classes, info.image_size, info.mean, info.std, spec.width,
                          net.bn_affine, net.linear_bias)
        return build_model(spec.arch, cfg).to(device)

    def regenerate_weights(self, spec: RunSpec) -> Optional[Callable[[nn.Module], None]]:
        """How to re-create this ticket's frozen weights in an empty model from the spec alone (``None``: they
        were trained, or drawn in a way not reproducible outside the search). Compact tickets store a seed then."""
        return None

    def inference_draws(self, spec: RunSpec) -> int:
        """Inference draws every accuracy of a randomised ticket averages over (1 for deterministic tickets)."""
        return 1


def register(name: str, description: str) -> Callable[[Type[Method]], Type[Method]]:
    """Class decorator: register an instance of the method class."""

    def deco(cls: Type[Method]) -> Type[Method]:
        if not hasattr(cls, "Hparams"):
            cls.Hparams = NoHparams
        METHODS.add(name, cls(), description)
        return cls

    return deco


def get_method(name: str) -> Method:
    """The registered method ``name`` (ValueError listing choices if unknown)."""
    method: Method = METHODS.get(name)
    return method


@dataclass
class RunContext:
    """What a method gets: spec, data, device, folders and the shared stages."""

    spec: RunSpec
    data: DataBundle
    device: torch.device
    run_dir: Path
    stages_dir: Path
    compute: Compute
    info: Dict[str, Any] = field(default_factory=dict)

    @property
    def hp(self) -> Any:
        """The method's hyperparameters."""
        return self.spec.hparams

    def build_model(self, bn_affine: bool = True, seed_offset: int = 0, linear_bias: bool = True) -> Classifier:
        """The spec's architecture from masked layers, seeded, on the device."""
        i = self.data.info
        torch.manual_seed(self.spec.seed + seed_offset)
        cfg = ModelConfig(i.in_channels, i.num_classes, i.image_size, i.mean, i.std, self.spec.width, bn_affine,
                          linear_bias)
        return build_model(self.spec.arch, cfg).to(self.device)

    def build_network(self, net: Network, seed_offset: int = 0) -> Classifier:
        """:meth:`build_model` for a :class:`Network` kind."""
        return self.build_model(net.bn_affine, seed_offset, net.linear_bias)

    def train_config(self, **overrides: Any) -> TrainConfig:
        """Training settings from the spec, with per-stage overrides (epochs, lr...)."""
        return TrainConfig.from_spec(self.spec, self.data.info.augment, **overrides)

    def train(self, model: nn.Module, params: Sequence[torch.Tensor], cfg: TrainConfig, stage_dir: Path,
              refresh_masks: Optional[Callable[[], None]] = None, desc: str = "train") -> TrainResult:
        """Run the shared training loop and add its compute to this run's total."""
        result = train(model, params, self.data, cfg, self.device, stage_dir, self.spec.seed, refresh_masks, desc)
        self.compute.add(result.compute)
        self.info.setdefault("stages", []).append({"stage": desc, "best_epoch": result.best_epoch,
                                                   "val_clean": result.val_clean, "val_robust": result.val_robust})
        return result

    def stage_path(self, name: str, key: Dict[str, Any]) -> Path:
        """Folder of the shared stage ``name`` keyed by the hash of ``key``."""
        return paths.stage_dir(self.stages_dir, name, digest(key))

    def shared_stage(self, name: str, key: Dict[str, Any], build: Callable[[Path], nn.Module],
                     make_empty: Callable[[], nn.Module]) -> nn.Module:
        """A stage shared between runs (e.g. a dense AT network), keyed by the hash of ``key``.

        The first run that needs it builds it in ``stages/<name>-<hash>/``;
        later runs with the same key load ``model.pt`` instead of training again.
        """
        stage_dir = self.stage_path(name, key)
        final = paths.stage_model(stage_dir)
        stage_dir.mkdir(parents=True, exist_ok=True)
        # One builder at a time: a concurrent run waits, then loads the result.
        with FileLock(str(paths.stage_lock(stage_dir))):
            if final.exists():
                model = make_empty()
                model.load_state_dict(torch.load(final, map_location=self.device, weights_only=True))
                meta = json.loads(paths.stage_meta(stage_dir).read_text())
                self.info.setdefault("reused_stages", []).append(stage_dir.name)
                self.info.setdefault("stage_compute", []).append(meta["compute"])
                return model
            atomic_write(paths.stage_key(stage_dir), json.dumps(key, sort_keys=True, indent=1, default=str))
            before = (self.compute.seconds, self.compute.passes)
            t0 = time.perf_counter()
            model = build(stage_dir)
            spent = {"seconds": self.compute.seconds - before[0], "passes": self.compute.passes - before[1],
                     "wall": time.perf_counter() - t0}
            # The compute record first: the model's existence marks the stage finished.
            atomic_json(paths.stage_meta(stage_dir), {"compute": spent}, indent=0)
            atomic_save(final, model.state_dict())
            return model
