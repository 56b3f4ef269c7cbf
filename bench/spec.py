"""The run spec: one frozen dataclass per run, plus a per-method hyperparameter dataclass.

The spec's fields are the key columns of every result row. CLI flags and YAML
presets are generated from / validated against it, unknown keys are errors,
and ``run_id`` is a stable hash of the canonical spec: fields left at their
default are omitted, so adding a field later keeps old ids. Fields that only
say *how* a ticket is evaluated or where it runs (``RUNTIME_FIELDS``) are not
part of the id: evaluating a ticket with more attacks appends rows to the same
run.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import typing
from dataclasses import dataclass, field, fields
from typing import Any, Dict, Mapping, Optional, Tuple, Type

import yaml


def _f(default: Any, help: str, **kw: Any) -> Any:
    """A dataclass field with a help text (shown by ``bench run --help``)."""
    return field(default=default, metadata={"help": help, **kw})


@dataclass(frozen=True)
class NoHparams:
    """Methods without their own hyperparameters use this."""


@dataclass(frozen=True)
class RunSpec:
    """Everything that defines one run; each field is a CSV key column."""

    method: str = _f("rst", "ticket-finding method (see `bench list`)")
    dataset: str = _f("fashion-mnist", "dataset (see `bench list`)")
    data_source: str = _f("auto", "auto | embedded | full: 'auto' uses the embedded subset when the dataset ships one")
    arch: str = _f("convnet", "architecture (see `bench list`)")
    width: float = _f(0.5, "width multiplier on every layer's channels/units (1.0 = the standard net; the default 0.5 keeps the default run CPU-sized)")
    sparsity: float = _f(0.9, "target fraction of ZEROS among prunable weights, in [0, 1): 0.9 keeps 10%")
    seed: int = _f(0, "random seed (weights, data order, validation split, attack starts)")
    epochs: int = _f(8, "training epochs of the method's main stage")
    batch_size: int = _f(128, "training batch size (examples)")
    optimizer: str = _f("sgd", "sgd | adam")
    lr: float = _f(0.1, "initial learning rate")
    momentum: float = _f(0.9, "SGD momentum")
    weight_decay: float = _f(5e-4, "weight decay (L2), applied to trained tensors")
    lr_schedule: str = _f("cosine", "cosine | step (x0.1 at 50% and 75% of epochs) | constant")
    trainer: str = _f("pgd", "adversarial training loss: pgd (Madry) | trades | clean")
    trades_beta: float = _f(6.0, "TRADES beta (only with --trainer trades)")
    eps: Optional[float] = _f(None, "L-inf budget in [0,1] pixel units; default per dataset (0.1 Fashion-MNIST, 0.3 MNIST, 8/255 CIFAR/SVHN)")
    train_steps: int = _f(7, "PGD steps used to craft training examples")
    train_step_size: Optional[float] = _f(None, "PGD step size in training (pixel units); default eps/4")
    val_fraction: float = _f(0.1, "fraction of the training data held out for model selection")
    n_train: int = _f(0, "use only the first N training examples after the validation split (0 = all)")
    eval_attacks: Tuple[str, ...] = _f(("pgd20", "cw20", "autoattack"), "comma-separated attacks to evaluate (see `bench list`)", runtime=True)
    n_eval: int = _f(1000, "test examples for clean accuracy, PGD and CW (0 = whole test set)", runtime=True)
    n_eval_aa: Optional[int] = _f(None, "test examples for AutoAttack; default 100 on CPU (over 100x the cost of PGD-20 per example), n_eval on CUDA", runtime=True)
    device: str = _f("auto", "auto | cpu | cuda | cuda:N", runtime=True)
    hparams: Any = _f(None, "method-specific hyperparameters (a dataclass; flags listed below)")

    def __post_init__(self) -> None:
        from bench.methods import get_method

        # Validate user input with clear errors (never asserts).
        method = get_method(self.method)
        from bench.data import dataset_info, resolve_source
        from bench.models import MODELS

        dataset_info(self.dataset)
        resolve_source(self.dataset, self.data_source)
        MODELS.get(self.arch)
        _check(isinstance(self.sparsity, (int, float)) and math.isfinite(self.sparsity) and 0.0 <= self.sparsity < 1.0,
               f"sparsity must be in [0, 1) (fraction of zeros), got {self.sparsity}")
        _check(self.width > 0 and math.isfinite(self.width), f"width must be > 0, got {self.width}")
        _check(self.eps is None or (math.isfinite(self.eps) and 0 < self.eps <= 1), f"eps must be in (0, 1], got {self.eps}")
        _check(self.train_step_size is None or self.train_step_size > 0, f"train_step_size must be > 0, got {self.train_step_size}")
        _check(self.epochs >= 0, f"epochs must be >= 0, got {self.epochs}")
        _check(self.batch_size > 0, f"batch_size must be > 0, got {self.batch_size}")
        _check(self.lr > 0, f"lr must be > 0, got {self.lr}")
        _check(self.train_steps >= 0, f"train_steps must be >= 0, got {self.train_steps}")
        _check(0 < self.val_fraction < 1, f"val_fraction must be in (0, 1), got {self.val_fraction}")
        _check(self.n_train >= 0, f"n_train must be >= 0, got {self.n_train}")
        _check(self.n_eval >= 0, f"n_eval must be >= 0, got {self.n_eval}")
        _check(self.n_eval_aa is None or self.n_eval_aa >= 0, f"n_eval_aa must be >= 0, got {self.n_eval_aa}")
        _check(self.optimizer in ("sgd", "adam"), f"unknown optimizer {self.optimizer!r}; choices: sgd, adam")
        _check(self.lr_schedule in ("cosine", "step", "constant"), f"unknown lr_schedule {self.lr_schedule!r}; choices: cosine, step, constant")
        _check(self.trainer in ("pgd", "trades", "clean"), f"unknown trainer {self.trainer!r}; choices: pgd, trades, clean")
        _check(self.device == "auto" or self.device == "cpu" or self.device.startswith("cuda"),
               f"unknown device {self.device!r}; choices: auto, cpu, cuda, cuda:N")
        from bench.attacks import ATTACKS

        if isinstance(self.eval_attacks, str):
            object.__setattr__(self, "eval_attacks", tuple(a for a in self.eval_attacks.split(",") if a))
        for name in self.eval_attacks:
            ATTACKS.get(name)
        # Fill in and check the method's own hyperparameters.
        if self.hparams is None:
            object.__setattr__(self, "hparams", method.Hparams())
        elif isinstance(self.hparams, Mapping):
            object.__setattr__(self, "hparams", build_dataclass(method.Hparams, self.hparams, f"{self.method} hparams"))
        elif not isinstance(self.hparams, method.Hparams):
            raise ValueError(f"hparams for {self.method!r} must be {method.Hparams.__name__}, got {type(self.hparams).__name__}")
        method.validate(self)

    def resolve(self) -> "RunSpec":
        """Fill dataset-dependent defaults (eps) so the stored spec is explicit."""
        from bench.data import dataset_info

        if self.eps is None:
            return dataclasses.replace(self, eps=dataset_info(self.dataset).default_eps)
        return self

    @property
    def step_size(self) -> float:
        """Training PGD step size (eps/4 unless set)."""
        eps = self.resolve().eps
        return self.train_step_size if self.train_step_size is not None else eps / 4

    def to_dict(self) -> Dict[str, Any]:
        """Plain JSON-able dict of every field (hparams nested)."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["eval_attacks"] = list(self.eval_attacks)
        d["hparams"] = dataclasses.asdict(self.hparams)
        return d

    def canonical(self) -> Dict[str, Any]:
        """Identity-defining fields that differ from their defaults."""
        out: Dict[str, Any] = {}
        for f in fields(self):
            if f.metadata.get("runtime") or f.name == "hparams":
                continue
            value = getattr(self, f.name)
            if value != f.default:
                out[f.name] = value
        hp = {f.name: getattr(self.hparams, f.name) for f in fields(self.hparams) if getattr(self.hparams, f.name) != f.default}
        if hp:
            out["hparams"] = hp
        return out

    @property
    def run_id(self) -> str:
        """Stable short hash of the canonical spec; names the run folder."""
        blob = json.dumps(self.canonical(), sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "RunSpec":
        """Build from a mapping (YAML preset, spec.json); unknown keys are errors."""
        return build_dataclass(cls, data, "run spec")


def _check(ok: bool, message: str) -> None:
    """Raise ``ValueError(message)`` unless ``ok``."""
    if not ok:
        raise ValueError(message)


def field_types(cls: Type[Any]) -> Dict[str, Any]:
    """Resolved type annotations of a dataclass."""
    return typing.get_type_hints(cls)


def coerce(value: Any, tp: Any, name: str) -> Any:
    """Convert a YAML/CLI value to the annotated type, with a clear error."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin is typing.Union and type(None) in args:
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "")):
            return None
        inner = [a for a in args if a is not type(None)][0]
        return coerce(value, inner, name)
    if origin in (tuple, Tuple):
        items = value.split(",") if isinstance(value, str) else list(value)
        return tuple(str(i).strip() for i in items if str(i).strip())
    try:
        if tp is bool:
            if isinstance(value, str):
                if value.lower() in ("true", "yes", "1"):
                    return True
                if value.lower() in ("false", "no", "0"):
                    return False
                raise ValueError
            return bool(value)
        if tp is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if tp is float:
            return float(value)
        if tp is str:
            return str(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: cannot read {value!r} as {getattr(tp, '__name__', tp)}") from None
    return value


def build_dataclass(cls: Type[Any], data: Mapping[str, Any], what: str) -> Any:
    """Instantiate ``cls`` from ``data``; unknown keys raise ``ValueError``."""
    if not isinstance(data, Mapping):
        raise ValueError(f"{what} must be a mapping, got {type(data).__name__}")
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"unknown {what} key(s): {', '.join(map(str, unknown))}; allowed: {', '.join(sorted(names))}")
    types = field_types(cls)
    kwargs = {k: (v if k == "hparams" else coerce(v, types[k], k)) for k, v in data.items()}
    return cls(**kwargs)


def load_yaml(path: str) -> Dict[str, Any]:
    """Read a YAML preset with the safe loader; it must be a mapping."""
    try:
        with open(path) as fh:
            data = yaml.safe_load(fh)
    except FileNotFoundError:
        raise ValueError(f"config file not found: {path}") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"config {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"config {path} must be a YAML mapping of spec fields")
    return data
