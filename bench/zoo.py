"""RobustBench model zoo as baselines: zoo models (loaded by :mod:`bench.nn.zoo_models`, the one module
that imports ``robustbench``) evaluated under the harness's protocol. robustbench's own ``benchmark()``
(which calls AutoAttack with the original keyword names) is not used here: zoo models are evaluated with
our attacks through :func:`bench.evaluation.evaluate.evaluate`.

A zoo evaluation is named by a hash of its :class:`ZooSpec` and kept in
``<out>/zoo/<run_id>/`` (spec, measured sparsity, per-attack cache), so a
rerun resumes; its rows go to ``<out>/runs.csv`` with ``method`` = ``zoo``.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

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
from bench.nn.zoo_models import load_zoo_model

EVAL_DATASETS = ("cifar10", "cifar100")


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
