"""Your own model under the full protocol: ``bench eval --model SPEC [--weights FILE] --name NAME``.

``SPEC`` is ``package.module:factory`` or ``path/to/file.py:factory`` (your code, run because you ask for it: the
factory is called with no arguments and returns an ``nn.Module``), a TorchScript file, or a ``torch.export``
program (``.pt2``). A state dict (``--weights``) is read with ``torch.load(weights_only=True)``, so a pickle that
would run code is refused, never executed; ``torch.nn.utils.prune``'s ``weight_orig``/``weight_mask`` pairs load
into a plain model as their product. The model takes [0,1] images and returns logits (normalisation inside; see
docs/extending.md for a wrapper).

The model is checked before any attack runs (input shape and channels, number of classes, finite outputs, eval
mode), its sparsity is measured from its weights (exact zeros among conv and linear weights, per layer), and it
is evaluated by the same :func:`bench.evaluation.evaluate.evaluate` and row builder as every ticket. An
evaluation is named by a hash of its :class:`ExternalSpec` (the weights' digest included) and kept in
``<out>/external/<run_id>/``; its rows go to ``<out>/runs.csv`` with method ``external``.
"""
from __future__ import annotations

import dataclasses
import json
import math
import sys
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import pandas as pd
import torch
import torch.nn as nn

from bench.attacks import ATTACKS
from bench.attacks.norms import NORMS, check_budget_value, standard_eps
from bench.core import paths
from bench.core.config import spec_field
from bench.core.devices import resolve_device
from bench.core.io import atomic_json, digest
from bench.core.results import EXTERNAL_METHOD, AttackResult, append_rows, result_rows
from bench.data import DATA_SOURCES, DATASETS, Split, dataset_info, load_data
from bench.evaluation.evaluate import autoattack_examples, evaluate, with_worst_case
from bench.nn.cost import COUNTED, ROW_COST_COLUMNS, model_cost
from bench.nn.external import absolute_model, check_model, first_line, load_external_model, measure_sparsity, model_arch, weights_digest
from bench.nn.latency import BATCHES, model_latency

# How far a claimed sparsity may sit from the measured one before the rows are flagged.
SPARSITY_TOLERANCE = 0.005

_f = spec_field


@dataclass(frozen=True)
class ExternalSpec:
    """One evaluation of a model made outside this harness; identity fields are CSV key columns."""

    name: str = _f("", "a name for the model (rows and leaderboards show it)")
    model: str = _f("", "module:factory, path/to/file.py:factory, a TorchScript file or a torch.export .pt2 program")
    weights: str = _f("", "digest of the model's parameters and buffers after loading (set by the harness)")
    arch: str = _f("", "the model's class name (set by the harness)")
    dataset: str = _f("fashion-mnist", "dataset of the test images (see `bench list`)")
    data_source: str = _f("auto", "auto | embedded | full", choices=DATA_SOURCES)
    num_classes: int = _f(0, "classes of a folder dataset (imagefolder); 0 for the others")
    image_size: int = _f(0, "image side of a folder dataset (imagefolder); 0 for the others")
    norm: str = _f("Linf", "threat model: Linf | L2 | L1", choices=NORMS)
    eps: Optional[float] = _f(None, "budget in [0,1] pixel units; default per dataset (L-inf) or the field's standard")
    seed: int = _f(0, "seed of the attacks' random starts")
    claimed_sparsity: Optional[float] = _f(None, "the sparsity you claim for the model; the weights are checked against it")
    attacks: Tuple[str, ...] = _f(("pgd20", "cw20", "autoattack"), "comma-separated attacks (see `bench list`)", runtime=True)
    n_eval: int = _f(1000, "test examples for clean accuracy, PGD and CW (0 = whole test set)", runtime=True)
    n_eval_aa: Optional[int] = _f(None, "test examples for AutoAttack; default 100 on CPU, n_eval on CUDA", runtime=True)
    device: str = _f("auto", "auto | cpu | cuda | cuda:N", runtime=True)
    latency: bool = _f(True, "measure the model's CPU latency at batch 1 and 128 once (latency.json); false skips it",
                       runtime=True)

    def __post_init__(self) -> None:
        # User input gets clear errors naming the flag (never asserts).
        if isinstance(self.attacks, str):
            object.__setattr__(self, "attacks", tuple(a for a in self.attacks.split(",") if a))
        if not self.name.strip():
            raise ValueError("--name must name the model (rows and leaderboards show it)")
        if not self.attacks:
            raise ValueError("--attacks must name at least one attack")
        for attack in self.attacks:
            ATTACKS.get(attack)
        DATASETS.get(self.dataset)
        if self.eps is not None:
            info = dataset_info(self.dataset)
            size = self.image_size or info.image_size
            check_budget_value(self.eps, self.norm, info.in_channels * size * size)
        if self.claimed_sparsity is not None and not (math.isfinite(self.claimed_sparsity) and 0 <= self.claimed_sparsity < 1):
            raise ValueError(f"--sparsity must be a fraction of zero weights in [0, 1), got {self.claimed_sparsity}")
        if self.n_eval < 0 or (self.n_eval_aa is not None and self.n_eval_aa < 0):
            raise ValueError(f"--n-eval and --n-eval-aa must be >= 0, got {self.n_eval}, {self.n_eval_aa}")
        # The budget exists (an L2/L1 evaluation without a standard for the dataset needs --eps).
        _ = self.eps_value

    @property
    def eps_value(self) -> float:
        """The budget: the given eps, else the dataset's default."""
        if self.eps is not None:
            return self.eps
        if self.norm == "Linf":
            return dataset_info(self.dataset).default_eps
        standard = standard_eps(self.dataset, self.norm)
        if standard is None:
            raise ValueError(f"no standard {self.norm} budget for {self.dataset}: give --eps")
        return standard

    def canonical(self) -> Dict[str, Any]:
        """Identity fields (everything not marked runtime; the model's location is not identity, its weights are)."""
        ident = {f.name: getattr(self, f.name) for f in fields(self) if not f.metadata.get("runtime") and f.name != "model"
                 and not (f.name == "norm" and self.norm == "Linf")}
        return {"method": EXTERNAL_METHOD, **ident, "eps": self.eps_value}

    @property
    def run_id(self) -> str:
        """Stable short hash of the identity fields; names the evaluation folder."""
        return digest(self.canonical())

    def to_dict(self) -> Dict[str, Any]:
        """Plain JSON-able dict of every field."""
        return {**dataclasses.asdict(self), "attacks": list(self.attacks)}


# ---------------------------------------------------------------------------
# The evaluation.
# ---------------------------------------------------------------------------


def external_rows(spec: ExternalSpec, meta: Dict[str, Any], results: List[AttackResult], device: torch.device) -> List[Dict[str, Any]]:
    """Tidy rows like a ticket's (the same row builder), with method ``external`` and the model's name."""
    head = {"run_id": spec.run_id, "method": EXTERNAL_METHOD, "dataset": spec.dataset, "arch": spec.arch, "width": "",
            "target_sparsity": "" if spec.claimed_sparsity is None else spec.claimed_sparsity,
            "measured_sparsity": round(meta["measured_sparsity"], 6), "seed": spec.seed}
    cost, latency = meta.get("cost") or {}, meta.get("latency") or {}
    tail = {"train_seconds": "", "train_passes": "", "model": spec.name, "n_params": meta["n_params"],
            **{k: cost[k] for k in ROW_COST_COLUMNS if k in cost},
            # The model runs as given: its own latency is the one a row states (nothing to compact).
            **{f"latency_b{b}_ms": round(latency[f"stored_b{b}_ms"], 6) for b in BATCHES if f"stored_b{b}_ms" in latency},
            **({"latency_threads": latency["threads"]} if "threads" in latency else {})}
    return result_rows(head, results, tail, device)


def external_cost(model: nn.Module, input_shape: Sequence[int]) -> Dict[str, int]:
    """Parameters and MACs of a model given as a Python module (:func:`bench.nn.cost.model_cost`); none for a
    TorchScript or torch.export program, which holds no conv or linear module for forward hooks to see."""
    if not any(isinstance(m, COUNTED) for m in model.modules()):
        return {}
    return model_cost(model, input_shape)


def sparsity_flags(spec: ExternalSpec, measured: float) -> Tuple[str, ...]:
    """``sparsity_claim`` when the claimed sparsity is further than the tolerance from the measured one."""
    if spec.claimed_sparsity is None or abs(spec.claimed_sparsity - measured) <= SPARSITY_TOLERANCE:
        return ()
    return ("sparsity_claim",)


@dataclass
class ExternalRun:
    """A loaded, checked external model with its test data: what ``bench eval``, ``bench security`` and ``bench
    compare`` evaluate (the counterpart of a ticket)."""

    spec: ExternalSpec
    model: nn.Module
    test: Split
    device: torch.device
    run_dir: Path
    meta: Dict[str, Any]

    def evaluate(self, attacks: Optional[Sequence[str]] = None, n_eval: Optional[int] = None) -> List[AttackResult]:
        """The spec's attacks (or ``attacks``) and their worst case, each cached in the run folder."""
        n = self.spec.n_eval if n_eval is None else n_eval
        n_aa = autoattack_examples(self.spec.n_eval_aa, n, self.device)
        results = with_worst_case(evaluate(self.model, self.test, tuple(attacks or self.spec.attacks), self.spec.eps_value, n,
                                           n_aa, self.device, paths.eval_root(self.run_dir), seed=self.spec.seed,
                                           norm=self.spec.norm))
        flags = sparsity_flags(self.spec, self.meta["measured_sparsity"])
        return [dataclasses.replace(r, flags=tuple(r.flags) + flags) for r in results]

    def record(self, results: Sequence[AttackResult], out: Union[str, Path], show: bool = True) -> pd.DataFrame:
        """Append the rows of ``results`` to ``<out>/runs.csv`` (no duplicates); print a summary when ``show``."""
        rows = external_rows(self.spec, self.meta, list(results), self.device)
        added = append_rows(paths.runs_csv(out), rows)
        df = pd.DataFrame(rows)
        if show:
            head = (f"external {self.spec.run_id}  {self.spec.name} ({self.spec.arch}, {self.meta['n_params']} params) "
                    f"dataset={self.spec.dataset} measured sparsity={self.meta['measured_sparsity']:.4f} "
                    f"eps={self.spec.eps_value:.4g}" + (" [claimed sparsity contradicted]"
                                                         if sparsity_flags(self.spec, self.meta["measured_sparsity"]) else ""))
            table = df[["attack", "n_eval", "clean_acc", "robust_acc", "seconds"]].to_string(
                index=False, float_format=lambda v: f"{v:.4f}")
            print(f"{head}\n{table}\n{added} new row(s) -> {paths.runs_csv(out)}")
        return df


def _test_split(spec: ExternalSpec, data_root: Optional[str]) -> Tuple[Split, int]:
    """The dataset's test split and its number of classes (a folder dataset's from the spec)."""
    info = dataset_info(spec.dataset)
    if info.from_folder:
        info = dataclasses.replace(info, num_classes=spec.num_classes, image_size=spec.image_size or info.image_size)
    return load_data(spec.dataset, spec.data_source, data_root, info=info).test, info.num_classes


def run_external(spec: ExternalSpec, out: Union[str, Path], weights: Optional[Union[str, Path]] = None, *,
                 test: Optional[Split] = None, data_root: Optional[str] = None, show: bool = True) -> pd.DataFrame:
    """Load ``spec.model``, check and measure it, evaluate it, append rows to ``<out>/runs.csv``.

    ``spec.weights`` and ``spec.arch`` are filled in from the loaded model. Nothing is written before the model has
    loaded and passed its checks.
    """
    # Inputs: device, model, test data; every check before anything is written.
    out = Path(out)
    device = resolve_device(spec.device)
    model = load_external_model(spec.model, weights).to(device)
    split, num_classes = _test_split(spec, data_root)
    test = split if test is None else test
    notes = check_model(model, test, num_classes, device)
    sparsity, per_layer, n_weights = measure_sparsity(model)
    spec = dataclasses.replace(spec, weights=weights_digest(model), arch=model_arch(model))
    run_dir = paths.external_dir(out, spec.run_id)
    shape = tuple(test.x.shape[1:])
    # Stages: the record (spec, measured sparsity and cost), the latency (measured once per evaluation folder), then
    # every attack (each cached), then the worst case.
    meta: Dict[str, Any] = {
        "name": spec.name, "model": absolute_model(spec.model),
        "weights_file": str(Path(weights).resolve()) if weights is not None else "",
        "arch": spec.arch, "measured_sparsity": sparsity, "layer_sparsity": per_layer, "n_weights": n_weights,
        "n_params": sum(v.numel() for v in model.state_dict().values()), "notes": notes,
        "cost": external_cost(model, shape)}
    atomic_json(paths.spec(run_dir), spec.to_dict())
    atomic_json(paths.meta(run_dir), meta)
    for note in notes:
        print(f"bench: note: {note}", file=sys.stderr)
    if paths.latency(run_dir).exists():
        meta["latency"] = json.loads(paths.latency(run_dir).read_text())
    elif spec.latency:
        meta["latency"] = model_latency(model, shape)
        atomic_json(paths.latency(run_dir), meta["latency"])
    run = ExternalRun(spec, model, test, device, run_dir, meta)
    return run.record(run.evaluate(), out, show)


def is_external_run(run_dir: Union[str, Path]) -> bool:
    """Whether ``run_dir`` is an external model's evaluation folder (``<out>/external/<run_id>``)."""
    run_dir = Path(run_dir)
    return run_dir.parent.name == paths.external_dir("", "x").parent.name and paths.spec(run_dir).is_file()


def load_external_run(run_dir: Union[str, Path], data_root: Optional[str] = None) -> ExternalRun:
    """An external evaluation folder's model, loaded again from the files it names and checked to be the same
    weights (the run id names them)."""
    run_dir = Path(run_dir)
    try:
        data = json.loads(paths.spec(run_dir).read_text(encoding="utf-8"))
        meta = json.loads(paths.meta(run_dir).read_text(encoding="utf-8"))
        spec = ExternalSpec(**{**data, "attacks": tuple(data["attacks"])})
    except (OSError, ValueError, TypeError, KeyError, RecursionError) as exc:
        raise ValueError(f"{run_dir} is not an external model's evaluation folder ({type(exc).__name__}: "
                         f"{first_line(exc)[:120]})") from None
    if spec.run_id != run_dir.name:
        raise ValueError(f"{paths.spec(run_dir)} is the spec of {spec.run_id}, not of the folder {run_dir.name}")
    device = resolve_device(spec.device)
    model = load_external_model(str(meta.get("model") or spec.model), meta.get("weights_file") or None).to(device)
    if weights_digest(model) != spec.weights:
        raise ValueError(f"{spec.model} no longer holds the weights {run_dir} evaluated (its run id names them); "
                         "evaluate it anew with bench eval --model")
    test, num_classes = _test_split(spec, data_root)
    check_model(model, test, num_classes, device)
    return ExternalRun(spec, model, test, device, run_dir, meta)
