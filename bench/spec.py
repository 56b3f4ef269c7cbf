"""The run spec: one frozen dataclass per run, plus a per-method hyperparameter dataclass.

The spec's fields are the key columns of every result row. CLI flags and YAML
presets are generated from / validated against it, unknown keys are errors,
and ``run_id`` is a stable hash of the canonical spec: fields left at their
default are omitted, so adding a field later keeps old ids. Fields that only
say *how* a ticket is evaluated or where it runs (the ``RUNTIME_GROUPS``) are not
part of the id: evaluating a ticket with more attacks appends rows to the same
run.
"""
from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, fields
from typing import Any, Dict, Mapping, Optional, Tuple

from bench.attacks import ATTACKS
from bench.attacks.norms import NORMS, check_budget_value, standard_eps
from bench.core.config import build_dataclass, check_choices, non_default, spec_field
from bench.core.io import digest
from bench.core.registry import Registry
from bench.data import DATA_SOURCES, DATASETS, DatasetInfo, dataset_info, resolve_source
from bench.nn.masking import GRANULARITIES
from bench.nn.models import MODELS
from bench.trainers import TRAINERS

# The method registry: every module of these packages registers its method (see bench/methods/base.py).
METHODS: Registry[Any] = Registry("method", plugins=("tickets", "baselines"), entry_points="robust_tickets.methods")
OPTIMIZERS = ("sgd", "adam")
# BatchNorm mode while the training attack crafts its examples (RST's code: train; HYDRA's: eval, its
# utils/adv.py calls model.eval()).
CRAFT_BN = ("eval", "train")
# Which epoch of a method's final training stage is the ticket: the best by PGD robust accuracy on the
# validation split (never the test set, where RST's and HYDRA's code select), or the last (OpenLTH, Cosentino).
SELECTIONS = ("best", "last")

# Version of what the methods do with a spec's fields. Version 2 (issue 15) made the methods follow
# their reference code (no linear biases in frozen random networks, RST's fine-tuning, ALTH's
# per-layer fractions, the matched controls); it is part of every run_id, so a run folder or row
# of an older version is never mistaken for one of this version.
PROTOCOL = 2
LR_SCHEDULES = ("cosine", "step", "constant")
# The largest float32: training settings beyond it overflow.
FLOAT32_MAX = 3.4028234663852886e38
_f = spec_field
# The spec's field groups (each field's ``group``), as OpenLTH's hyperparameter groups: who the run is (method and
# its hyperparameters), its data, its network, the replicate (seed), its threat model, how it trains, how its
# ticket is evaluated, where it runs. Every list of "the training fields" or "the configuration columns" is
# derived from these (spec_fields, CONFIG_COLUMNS), never typed.
SPEC_GROUPS = ("method", "data", "model", "replicate", "threat", "training", "evaluation", "runtime")
# Groups that say only how a ticket is evaluated or where it runs: not part of the run id, not its configuration.
RUNTIME_GROUPS = ("evaluation", "runtime")
# Row columns named otherwise than their spec field (a row stores the target beside the measured sparsity).
ROW_NAMES = {"sparsity": "target_sparsity"}


def spec_fields(*groups: str) -> Tuple[str, ...]:
    """The names of the run spec's fields in ``groups`` (a ``ValueError`` for a group that does not exist)."""
    unknown = [g for g in groups if g not in SPEC_GROUPS]
    if unknown:
        raise ValueError(f"unknown spec group(s) {', '.join(unknown)}; groups: {', '.join(SPEC_GROUPS)}")
    return tuple(f.name for f in fields(RunSpec) if f.metadata["group"] in groups)


def config_columns() -> Tuple[str, ...]:
    """The row columns that define a run's configuration: every spec field but the replicate's and the runtime
    groups', under its row name, and the threat model's norm (a table cell may mix only seeds)."""
    kept = [g for g in SPEC_GROUPS if g != "replicate" and g not in RUNTIME_GROUPS]
    return tuple(ROW_NAMES.get(name, name) for name in spec_fields(*kept)) + ("norm",)


@dataclass(frozen=True)
class NoHparams:
    """Methods without their own hyperparameters use this."""


@dataclass(frozen=True)
class RunSpec:
    """Everything that defines one run; each field is a CSV key column."""

    method: str = _f("rst", "ticket-finding method (see `bench list`)", choices=METHODS, group="method")
    dataset: str = _f("fashion-mnist", "dataset (see `bench list`)", choices=DATASETS, group="data")
    data_source: str = _f("auto", "auto | embedded | full: 'auto' uses the embedded subset when the dataset ships one",
                          choices=DATA_SOURCES, group="data")
    num_classes: int = _f(0, "classes of a folder dataset (imagefolder: the number of class folders, required); "
                          "0 for the others, whose classes are fixed", group="data")
    image_size: int = _f(0, "image side in pixels of a folder dataset (imagefolder: 0 = 224); 0 for the others", group="data")
    arch: str = _f("convnet", "architecture (see `bench list`)", choices=MODELS, group="model")
    width: float = _f(0.5, "width multiplier on every layer's channels/units (1.0 = the standard net; the default 0.5 keeps the default run CPU-sized)", group="model")
    sparsity: float = _f(0.9, "target fraction of ZEROS among prunable weights, in [0, 1): 0.9 keeps 10%", group="model")
    granularity: str = _f("weight", "what is pruned: weight (any weight) | channel (whole output channels of every "
                          "prunable layer; the output layer's weights one by one; bench list shows which methods can)",
                          choices=GRANULARITIES, group="model")
    seed: int = _f(0, "random seed (weights, data order, validation split, attack starts)", group="replicate")
    epochs: int = _f(8, "training epochs of the method's main stage", group="training")
    batch_size: int = _f(128, "training batch size (examples)", group="training")
    optimizer: str = _f("sgd", "sgd | adam", choices=OPTIMIZERS, group="training")
    lr: float = _f(0.1, "initial learning rate", group="training")
    momentum: float = _f(0.9, "SGD momentum", group="training")
    weight_decay: float = _f(5e-4, "weight decay (L2), applied to trained tensors", group="training")
    lr_schedule: str = _f("cosine", "cosine | step (x0.1 at 50% and 75% of epochs) | constant", choices=LR_SCHEDULES, group="training")
    craft_bn: str = _f("eval", "BatchNorm mode while the training attack crafts examples: eval (running statistics, "
                       "not updated by attack steps) | train (batch statistics, as RST's code)", choices=CRAFT_BN, group="training")
    trainer: str = _f("pgd", "adversarial training loss (see `bench list`): pgd (Madry) | trades | clean", choices=TRAINERS, group="training")
    trades_beta: float = _f(6.0, "TRADES beta (only with --trainer trades)", group="training")
    norm: str = _f("Linf", "threat model of training and evaluation: Linf | L2 (L1: evaluation only, bench eval --norm L1)",
                   choices=NORMS, group="threat")
    eps: Optional[float] = _f(None, "budget in [0,1] pixel units of --norm; default per dataset for Linf (0.1 Fashion-MNIST, 0.3 "
                              "MNIST, 8/255 CIFAR/SVHN), the field's standard for L2 (CIFAR 0.5), else required", group="threat")
    train_steps: int = _f(7, "PGD steps used to craft training examples", group="training")
    train_step_size: Optional[float] = _f(None, "PGD step size in training (pixel units); default eps/4", group="training")
    val_fraction: float = _f(0.1, "fraction of the training data held out for model selection", group="data")
    select: str = _f("best", "which epoch of the method's final training stage is the ticket: best (PGD robust accuracy "
                     "on the validation split; never the test set) | last (OpenLTH, Cosentino et al.)",
                     choices=SELECTIONS, group="training")
    n_train: int = _f(0, "use only the first N training examples after the validation split (0 = all)", group="data")
    eval_attacks: Tuple[str, ...] = _f(("pgd20", "cw20", "autoattack"), "comma-separated attacks to evaluate (see `bench list`)", group="evaluation")
    n_eval: int = _f(1000, "test examples for clean accuracy, PGD and CW (0 = whole test set)", group="evaluation")
    n_eval_aa: Optional[int] = _f(None, "test examples for AutoAttack; default 100 on CPU (over 100x the cost of PGD-20 per example), n_eval on CUDA", group="evaluation")
    device: str = _f("auto", "auto | cpu | cuda | cuda:N", group="runtime")
    latency: bool = _f(True, "measure the CPU latency of the ticket, its compacted copy and the dense network once "
                       "per run (<run>/latency.json); false skips it (a large network takes minutes on CPU)",
                       group="runtime")
    protocol: int = _f(PROTOCOL, "method protocol version; part of every run_id (only the current one runs)", in_id=True, group="method")
    hparams: Any = _f(None, "method-specific hyperparameters (a dataclass; flags listed below)", group="method")

    def __post_init__(self) -> None:
        # Validate user input with clear errors (never asserts): choices first, then ranges.
        check_choices(self)
        method = METHODS.get(self.method)
        resolve_source(self.dataset, self.data_source)
        self._check_data_shape()
        _check(isinstance(self.sparsity, (int, float)) and math.isfinite(self.sparsity) and 0.0 <= self.sparsity < 1.0,
               f"sparsity must be in [0, 1) (fraction of zeros), got {self.sparsity}")
        _check(self.width > 0 and math.isfinite(self.width), f"width must be > 0, got {self.width}")
        _check(self.norm in NORMS, f"unknown norm {self.norm!r}; choices: {', '.join(NORMS)}")
        info = self.data_info
        if self.eps is not None:
            check_budget_value(self.eps, self.norm, info.in_channels * info.image_size ** 2)
        _check(self.eps is not None or self.norm == "Linf" or standard_eps(self.dataset, self.norm) is not None,
               f"no standard {self.norm} budget for {self.dataset}: give --eps")
        _check(self.norm != "L1" or self.epochs == 0 or not TRAINERS.get(self.trainer).adversarial,
               "adversarial training in L1 is not supported (PGD has no L1 step): train in Linf or L2, evaluate L1 "
               "with bench eval --norm L1")
        _check(self.train_step_size is None or (math.isfinite(self.train_step_size) and self.train_step_size > 0),
               f"train_step_size must be a finite number > 0, got {self.train_step_size}")
        _check(self.epochs >= 0, f"epochs must be >= 0, got {self.epochs}")
        _check(self.batch_size > 0, f"batch_size must be > 0, got {self.batch_size}")
        _check(math.isfinite(self.lr) and self.lr > 0, f"lr must be a finite number > 0, got {self.lr}")
        _check(math.isfinite(self.momentum) and 0 <= self.momentum < 1, f"momentum must be in [0, 1), got {self.momentum}")
        _check(math.isfinite(self.weight_decay) and self.weight_decay >= 0,
               f"weight_decay must be a finite number >= 0, got {self.weight_decay}")
        _check(math.isfinite(self.trades_beta) and self.trades_beta >= 0,
               f"trades_beta must be a finite number >= 0, got {self.trades_beta}")
        # Training runs in float32: a setting beyond its range overflows inside the optimiser.
        for name in ("lr", "weight_decay", "trades_beta"):
            _check(abs(getattr(self, name)) <= FLOAT32_MAX,
                   f"{name} must be at most {FLOAT32_MAX:.3g} (the float32 range training runs in), got {getattr(self, name)}")
        _check(self.protocol == PROTOCOL,
               f"protocol {self.protocol} runs were made by an older version of the methods; this version runs "
               f"protocol {PROTOCOL} (drop the field, or rerun the spec)")
        _check(0 <= self.seed < 2**31, f"seed must be in [0, 2**31), got {self.seed}")
        _check(self.train_steps >= 0, f"train_steps must be >= 0, got {self.train_steps}")
        _check(0 < self.val_fraction < 1, f"val_fraction must be in (0, 1), got {self.val_fraction}")
        _check(self.n_train >= 0, f"n_train must be >= 0, got {self.n_train}")
        _check(self.n_eval >= 0, f"n_eval must be >= 0, got {self.n_eval}")
        _check(self.n_eval_aa is None or self.n_eval_aa >= 0, f"n_eval_aa must be >= 0, got {self.n_eval_aa}")
        _check(re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device) is not None,
               f"unknown device {self.device!r}; choices: auto, cpu, cuda, cuda:N")
        if isinstance(self.eval_attacks, str):
            object.__setattr__(self, "eval_attacks", tuple(a for a in self.eval_attacks.split(",") if a))
        _check(len(self.eval_attacks) > 0, "eval_attacks must name at least one attack (see `bench list`)")
        for name in self.eval_attacks:
            ATTACKS.get(name)
        # Fill in and check the method's own hyperparameters.
        if self.hparams is None:
            object.__setattr__(self, "hparams", method.Hparams())
        elif isinstance(self.hparams, Mapping):
            object.__setattr__(self, "hparams", build_dataclass(method.Hparams, method.current_hparams(self.hparams),
                                                                f"{self.method} hparams"))
        elif not isinstance(self.hparams, method.Hparams):
            raise ValueError(f"hparams for {self.method!r} must be {method.Hparams.__name__}, got {type(self.hparams).__name__}")
        check_choices(self.hparams, self.method)
        _check(self.granularity in method.granularities,
               f"method {self.method} prunes at granularity {', '.join(method.granularities)} only, not "
               f"{self.granularity!r}" + ("" if method.dense else " (bench list shows each method's)"))
        method.validate(self)

    def _check_data_shape(self) -> None:
        """``num_classes`` and ``image_size`` are a folder dataset's to set; the registry's datasets fix them."""
        info = dataset_info(self.dataset)
        if info.from_folder:
            _check(self.num_classes >= 2, f"dataset {self.dataset!r} needs num_classes >= 2 (--num-classes: the number "
                                          f"of class folders under train/), got {self.num_classes}")
            _check(self.image_size == 0 or 16 <= self.image_size <= 1024,
                   f"image_size must be 0 (= {info.image_size}) or in [16, 1024] pixels, got {self.image_size}")
            return
        for name, fixed in (("num_classes", info.num_classes), ("image_size", info.image_size)):
            value = getattr(self, name)
            _check(value in (0, fixed), f"{name} is fixed by dataset {self.dataset!r} ({fixed}); leave it at 0, "
                                        f"got {value}")

    @property
    def data_info(self) -> DatasetInfo:
        """The dataset's facts with a folder dataset's classes and image size taken from this spec."""
        info = dataset_info(self.dataset)
        return dataclasses.replace(info, num_classes=self.num_classes or info.num_classes,
                                   image_size=self.image_size or info.image_size)

    def resolve(self) -> "RunSpec":
        """Fill dataset-dependent defaults (eps) so the stored spec is explicit."""
        if self.eps is None:
            return dataclasses.replace(self, eps=self.eps_value)
        return self

    @property
    def eps_value(self) -> float:
        """The budget as a number: ``eps``, else the dataset's L-inf default or the field's standard in ``norm``."""
        if self.eps is not None:
            return float(self.eps)
        if self.norm == "Linf":
            return float(dataset_info(self.dataset).default_eps)
        standard = standard_eps(self.dataset, self.norm)
        if standard is None:
            raise ValueError(f"no standard {self.norm} budget for {self.dataset}: give --eps")
        return standard

    @property
    def step_size(self) -> float:
        """Training PGD step size (eps/4 unless set)."""
        return self.train_step_size if self.train_step_size is not None else self.eps_value / 4

    def to_dict(self) -> Dict[str, Any]:
        """Plain JSON-able dict of every field (hparams nested)."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["eval_attacks"] = list(self.eval_attacks)
        d["hparams"] = dataclasses.asdict(self.hparams)
        return d

    def canonical(self) -> Dict[str, Any]:
        """Identity-defining fields that differ from their defaults (and the protocol, always)."""
        out: Dict[str, Any] = {}
        for f in fields(self):
            if f.metadata["group"] in RUNTIME_GROUPS or f.name == "hparams":
                continue
            value = getattr(self, f.name)
            if value != f.default or f.metadata.get("in_id"):
                out[f.name] = value
        hp = METHODS.get(self.method).id_hparams(non_default(self.hparams))
        if hp:
            out["hparams"] = hp
        return out

    @property
    def run_id(self) -> str:
        """Stable short hash of the canonical spec; names the run folder."""
        return digest(self.canonical())

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "RunSpec":
        """Build from a mapping (YAML preset, spec.json); unknown keys are errors.

        A dense method's spec that leaves out ``sparsity`` gets 0 (the default 0.9 is a ticket's).
        """
        if isinstance(data, Mapping) and "sparsity" not in data:
            method = data.get("method", cls.method)
            if isinstance(method, str) and method in METHODS.names() and METHODS.get(method).dense:
                data = {**data, "sparsity": 0.0}
        return build_dataclass(cls, data, "run spec")


def _check(ok: bool, message: str) -> None:
    """Raise ``ValueError(message)`` unless ``ok``."""
    if not ok:
        raise ValueError(message)
