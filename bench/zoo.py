"""RobustBench model zoo as baselines: the one module that imports ``robustbench``.

PyPI ``robustbench`` 1.1.1 does ``from autoattack import AutoAttack`` (and
``autoattack.state``) when it is imported, but PyPI has no ``autoattack``:
the PyPI AutoAttack is ``pyautoattack``. :func:`import_robustbench` maps the
``autoattack`` name to ``pyautoattack`` only while robustbench itself is being
imported, then puts ``sys.modules`` back as it was, so nothing else in the
process sees the alias. If the original ``autoattack`` is installed it is used
as is. robustbench's own ``benchmark()`` (which calls AutoAttack with the
original keyword names) is not used here: zoo models are evaluated with our
attacks through :func:`bench.evaluation.evaluate.evaluate`.

A zoo evaluation is named by a hash of its :class:`ZooSpec` and kept in
``<out>/zoo/<run_id>/`` (spec, measured sparsity, per-attack cache), so a
rerun resumes; its rows go to ``<out>/runs.csv`` with ``method`` = ``zoo``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import difflib
import importlib
import json
import pickle
import sys
import warnings
from dataclasses import dataclass, fields
from pathlib import Path
from types import ModuleType
from typing import Any, Dict, Iterator, List, Optional, Tuple, Union

import pandas as pd
import torch
import torch.nn as nn

from bench.attacks import ATTACKS
from bench.core import paths
from bench.core.config import spec_field
from bench.core.devices import resolve_device
from bench.core.io import atomic_json, digest
from bench.core.results import AttackResult, append_rows, result_rows
from bench.data import Split, load_data
from bench.evaluation.evaluate import autoattack_examples, evaluate, with_worst_case
from bench.nn.cost import effective_weight

INSTALL_HINT = "pip install -e '.[robustbench]'  (see docs/robustbench.md)"
EVAL_DATASETS = ("cifar10", "cifar100")


class RobustBenchMissing(ImportError, ValueError):
    """robustbench (or one of its dependencies) is not installed.

    Also a ``ValueError`` so the ``bench`` CLI reports it in one line.
    """


@contextlib.contextmanager
def _autoattack_alias() -> Iterator[None]:
    """Within the block, ``autoattack`` resolves to ``pyautoattack`` unless the original is installed."""
    try:
        importlib.import_module("autoattack")
        original = True
    except ImportError:
        original = False
    if original:
        yield
        return
    import pyautoattack
    import pyautoattack.state

    # Save whatever the names held (absent or a None blocker) and restore it afterwards.
    names = {"autoattack": pyautoattack, "autoattack.state": pyautoattack.state}
    saved = {name: sys.modules[name] for name in names if name in sys.modules}
    sys.modules.update(names)
    try:
        yield
    finally:
        for name in names:
            if name in saved:
                sys.modules[name] = saved[name]
            else:
                sys.modules.pop(name, None)


def import_robustbench() -> ModuleType:
    """The ``robustbench`` package, imported with the ``autoattack`` alias; clear error if absent."""
    if sys.modules.get("robustbench") is not None and "robustbench.utils" in sys.modules:
        return sys.modules["robustbench"]
    try:
        # Its import emits dependency warnings (pkg_resources, requests, torch.jit) that are not ours.
        with _autoattack_alias(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = importlib.import_module("robustbench")
            importlib.import_module("robustbench.utils")
    except ModuleNotFoundError as exc:
        why = " (robustbench 1.1.1 needs setuptools<81)" if exc.name == "pkg_resources" else ""
        raise RobustBenchMissing(
            f"robustbench is not usable: module {exc.name!r} is missing{why}; install the extra with: {INSTALL_HINT}"
        ) from exc
    return module


def _enums() -> Tuple[Any, Any]:
    """RobustBench's BenchmarkDataset and ThreatModel enums."""
    import_robustbench()
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel

    return BenchmarkDataset, ThreatModel


def _parse(dataset: str, threat: str) -> Tuple[Any, Any]:
    """Validated (dataset, threat) enum members, with the choices in the error."""
    benchmark_dataset, threat_model = _enums()
    try:
        ds = benchmark_dataset(dataset)
    except ValueError:
        raise ValueError(f"unknown RobustBench dataset {dataset!r}; choices: {', '.join(d.value for d in benchmark_dataset)}") from None
    try:
        tm = threat_model(threat)
    except ValueError:
        raise ValueError(f"unknown RobustBench threat model {threat!r}; choices: {', '.join(t.value for t in threat_model)}") from None
    return ds, tm


def zoo_entries(dataset: str = "cifar10", threat: str = "Linf") -> Dict[str, Dict[str, Any]]:
    """RobustBench's model-zoo entries (name -> {'model', 'gdrive_id'}) for one leaderboard."""
    ds, tm = _parse(dataset, threat)
    from robustbench.model_zoo import model_dicts

    if tm not in model_dicts[ds]:
        raise ValueError(f"RobustBench has no {threat} models for {dataset}; choices: {', '.join(t.value for t in model_dicts[ds])}")
    return dict(model_dicts[ds][tm])


def zoo_models(dataset: str = "cifar10", threat: str = "Linf") -> List[str]:
    """Names in RobustBench's model zoo for one dataset and threat model, in its order."""
    return list(zoo_entries(dataset, threat))


def checkpoint_paths(name: str, model_dir: Union[str, Path], dataset: str = "cifar10", threat: str = "Linf") -> List[Path]:
    """Where ``robustbench.utils.load_model`` reads the weights of ``name`` (empty: fetched through timm).

    The layout is ``model_dir/<dataset>/<threat>/<name>.pt``; ensembles use
    ``<name>.pt_m<i>.pt``, one file per member.
    """
    entries = zoo_entries(dataset, threat)
    if name not in entries:
        close = difflib.get_close_matches(name, list(entries), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else "; see `bench zoo list`"
        raise ValueError(f"{name!r} is not in RobustBench's {dataset}/{threat} zoo{hint}")
    import timm

    ds, tm = _parse(dataset, threat)
    timm_name = f"{name.lower().replace('-', '_')}_{ds.value.lower()}_{tm.value.lower()}"
    if timm.is_model(timm_name):
        return []
    base = Path(model_dir) / ds.value / tm.value.replace("_3d", "") / f"{name}.pt"
    ids = entries[name]["gdrive_id"]
    if isinstance(ids, list):
        return [Path(f"{base}_m{i}.pt") for i in range(len(ids))]
    return [base]


def load_zoo_model(name: str, model_dir: Union[str, Path], dataset: str = "cifar10", threat: str = "Linf",
                   download: bool = False) -> nn.Module:
    """A RobustBench model in eval mode ([0,1] inputs, logits out), from local weights unless ``download``."""
    paths = checkpoint_paths(name, model_dir, dataset, threat)
    missing = [p for p in paths if not p.is_file()]
    if (missing or not paths) and not download:
        where = missing[0] if missing else "the timm/Hugging Face hub"
        raise ValueError(f"weights of {name} not found (expected {where}); RobustBench downloads them on a connected "
                         f"machine: rerun with --download there, or copy the file into {model_dir}")
    import_robustbench()
    from robustbench.utils import load_model

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = load_model(name, model_dir=str(model_dir), dataset=dataset, threat_model=threat)
    except pickle.UnpicklingError as exc:
        raise ValueError(f"refusing to load {paths[0]}: not a plain tensor checkpoint ({str(exc).splitlines()[0]})") from None
    except RuntimeError as exc:
        if "loading state_dict" not in str(exc):
            raise
        raise ValueError(f"{paths[0] if paths else name} does not match {name}'s architecture: {str(exc).splitlines()[0]}") from None
    return model.eval()


@torch.no_grad()
def weight_sparsity(model: nn.Module) -> Tuple[float, Dict[str, float], int]:
    """Fraction of zeros among all conv/linear weights, per-layer fractions, and the weight count.

    Masked layers count their effective weight (``weight * mask``).
    """
    zeros, total, per_layer = 0, 0, {}
    for name, module in model.named_modules():
        if not isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)):
            continue
        w = effective_weight(module)
        z = int((w == 0).sum())
        per_layer[name] = z / w.numel()
        zeros += z
        total += w.numel()
    return zeros / max(total, 1), per_layer, total


_f = spec_field


@dataclass(frozen=True)
class ZooSpec:
    """One evaluation of a RobustBench zoo model; fields are CSV key columns."""

    model: str = _f("Standard", "RobustBench model name (see `bench zoo list`)")
    dataset: str = _f("cifar10", "cifar10 | cifar100 (datasets both RobustBench and the harness have)")
    threat: str = _f("Linf", "RobustBench threat model; the harness's attacks are L-inf")
    eps: float = _f(8 / 255, "L-inf budget in [0,1] pixel units (RobustBench's Linf leaderboards use 8/255)")
    seed: int = _f(0, "seed of the attacks' random starts")
    attacks: Tuple[str, ...] = _f(("pgd20", "cw20", "autoattack"), "comma-separated attacks (see `bench list`)", runtime=True)
    n_eval: int = _f(1000, "test examples for clean accuracy, PGD and CW (0 = whole test set)", runtime=True)
    n_eval_aa: Optional[int] = _f(None, "test examples for AutoAttack; default 100 on CPU, n_eval on CUDA", runtime=True)
    device: str = _f("auto", "auto | cpu | cuda | cuda:N", runtime=True)

    def __post_init__(self) -> None:
        # Validate user input with clear errors (never asserts).
        if isinstance(self.attacks, str):
            object.__setattr__(self, "attacks", tuple(a for a in self.attacks.split(",") if a))
        for name in self.attacks:
            ATTACKS.get(name)
        if self.dataset not in EVAL_DATASETS:
            raise ValueError(f"zoo evaluation needs test data the harness can load: dataset must be one of {', '.join(EVAL_DATASETS)}, got {self.dataset!r}")
        if self.threat != "Linf":
            raise ValueError(f"the harness's attacks are L-inf: threat must be 'Linf', got {self.threat!r}")
        if not 0 < self.eps <= 1:
            raise ValueError(f"eps must be in (0, 1], got {self.eps}")
        if self.n_eval < 0 or (self.n_eval_aa is not None and self.n_eval_aa < 0):
            raise ValueError(f"n_eval and n_eval_aa must be >= 0, got {self.n_eval}, {self.n_eval_aa}")

    def canonical(self) -> Dict[str, Any]:
        """Identity fields (everything not marked runtime), tagged as a zoo evaluation."""
        return {"method": "zoo", **{f.name: getattr(self, f.name) for f in fields(self) if not f.metadata.get("runtime")}}

    @property
    def run_id(self) -> str:
        """Stable short hash of the identity fields; names the evaluation folder."""
        return digest(self.canonical())

    def to_dict(self) -> Dict[str, Any]:
        """Plain JSON-able dict of every field."""
        return {**dataclasses.asdict(self), "attacks": list(self.attacks)}


def _measure(model: nn.Module, run_dir: Path, spec: ZooSpec) -> Dict[str, Any]:
    """Stage 1: measured sparsity and size of the loaded model (cached in ``meta.json``)."""
    meta_path = paths.meta(run_dir)
    if meta_path.exists():
        return json.loads(meta_path.read_text())
    sparsity, per_layer, n_weights = weight_sparsity(model)
    meta = {"model": spec.model, "arch": type(model).__name__, "measured_sparsity": sparsity, "layer_sparsity": per_layer,
            "n_weights": n_weights, "n_params": sum(p.numel() for p in model.parameters())}
    atomic_json(meta_path, meta)
    return meta


def zoo_rows(spec: ZooSpec, meta: Dict[str, Any], results: List[AttackResult], device: torch.device) -> List[Dict[str, Any]]:
    """Tidy rows like a ticket's (the same row builder), with ``method`` = zoo and no target sparsity."""
    head = {"run_id": spec.run_id, "method": "zoo", "dataset": spec.dataset, "arch": meta["arch"], "width": "",
            "target_sparsity": "", "measured_sparsity": round(meta["measured_sparsity"], 6), "seed": spec.seed}
    tail = {"train_seconds": "", "train_passes": "", "model": spec.model, "threat": spec.threat, "n_params": meta["n_params"]}
    return result_rows(head, results, tail, device)


def run_zoo(spec: ZooSpec, out: Union[str, Path], model_dir: Union[str, Path], *, test: Optional[Split] = None,
            data_root: Optional[str] = None, download: bool = False, show: bool = True) -> pd.DataFrame:
    """Load a zoo model, measure its sparsity, evaluate it, append rows to ``<out>/runs.csv``.

    ``test`` replaces the dataset's test split (an in-memory split of uint8 images).
    """
    # Inputs: device, model, test data.
    out = Path(out)
    device = resolve_device(spec.device)
    model = load_zoo_model(spec.model, model_dir, spec.dataset, spec.threat, download).to(device)
    if test is None:
        test = load_data(spec.dataset, "full", data_root).test
    run_dir = paths.zoo_dir(out, spec.run_id)
    atomic_json(paths.spec(run_dir), spec.to_dict())
    # Stages: sparsity, then every attack (each cached), then the worst case.
    meta = _measure(model, run_dir, spec)
    n_aa = autoattack_examples(spec.n_eval_aa, spec.n_eval, device)
    results = with_worst_case(evaluate(model, test, spec.attacks, spec.eps, spec.n_eval, n_aa, device,
                                       paths.eval_root(run_dir), seed=spec.seed))
    rows = zoo_rows(spec, meta, results, device)
    added = append_rows(paths.runs_csv(out), rows)
    df = pd.DataFrame(rows)
    if show:
        head = (f"zoo {spec.run_id}  model={spec.model} ({meta['arch']}, {meta['n_params']} params) dataset={spec.dataset} "
                f"measured sparsity={meta['measured_sparsity']:.4f} eps={spec.eps:.4g}")
        table = df[["attack", "n_eval", "clean_acc", "robust_acc", "seconds"]].to_string(index=False, float_format=lambda v: f"{v:.4f}")
        print(f"{head}\n{table}\n{added} new row(s) -> {paths.runs_csv(out)}")
    return df
