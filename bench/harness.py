"""Run a spec end to end: find the ticket (or reuse it), evaluate, append rows.

``<out>/runs/<run_id>/`` holds ``spec.json``, ``ticket.pt`` (a plain state
dict, loadable with ``weights_only=True``), ``meta.json``, a log and the
per-attack evaluation cache. Every stage is skipped when its artifact exists,
so rerunning resumes and adds no duplicate rows.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import pandas as pd
import torch
import torch.nn as nn

from bench.data import load_data
from bench.evaluate import AttackResult, describe_flags, evaluate, worst_case
from bench.masking import layer_sparsity, measured_sparsity, set_trainable
from bench.methods import EvalRequest, RunContext, get_method
from bench.models import prunable_policy
from bench.results import append_rows, git_commit
from bench.spec import RunSpec
from bench.train import Compute, TrainingDivergedError


# AutoAttack's default subset on the CPU (first N test examples); CUDA uses n_eval.
CPU_AUTOATTACK_EXAMPLES = 100


def autoattack_examples(requested: Optional[int], n_eval: int, device: torch.device) -> int:
    """AutoAttack's example count: the one asked for, else the CPU subset, else ``n_eval``."""
    if requested is not None:
        return requested
    return CPU_AUTOATTACK_EXAMPLES if device.type == "cpu" else n_eval


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA when present; asking for CUDA without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {name} requested but no CUDA GPU is available (use --device cpu)")
    return torch.device(name)


def empty_model(spec: RunSpec, device: Union[str, torch.device] = "cpu") -> nn.Module:
    """The spec's architecture with the method's BatchNorm kind, untrained (the method's ``build_empty``)."""
    return get_method(spec.method).build_empty(spec, device)


def load_state(model: nn.Module, path: Path, device: Union[str, torch.device] = "cpu") -> nn.Module:
    """Load an untrusted checkpoint safely; mismatches give a clear ValueError."""
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise ValueError(f"checkpoint not found: {path}") from None
    except Exception as exc:  # noqa: BLE001 - re-raised with the file named
        raise ValueError(f"refusing to load {path}: not a plain tensor checkpoint ({type(exc).__name__}); "
                         "only weights_only state dicts are accepted") from None
    if not isinstance(state, dict):
        raise ValueError(f"{path} is not a state dict")
    mine = model.state_dict()
    missing = sorted(set(mine) - set(state))
    unexpected = sorted(set(state) - set(mine))
    if missing or unexpected:
        raise ValueError(f"{path} does not match the architecture: missing {missing[:3]}, unexpected {unexpected[:3]}")
    for k, v in state.items():
        if not isinstance(v, torch.Tensor) or v.shape != mine[k].shape:
            shape = tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
            raise ValueError(f"{path}: tensor {k} has shape {shape}, the architecture needs {tuple(mine[k].shape)}")
    model.load_state_dict(state)
    return model


def load_ticket(run_dir: Union[str, Path], device: Union[str, torch.device] = "cpu") -> nn.Module:
    """A finished ticket in eval mode: takes [0,1] inputs, returns logits."""
    run_dir = Path(run_dir)
    spec_path = run_dir / "spec.json"
    if not spec_path.exists():
        raise ValueError(f"{run_dir} is not a run folder (no spec.json)")
    spec = RunSpec.from_dict(json.loads(spec_path.read_text()))
    model = load_state(empty_model(spec, device), run_dir / "ticket.pt", device)
    set_trainable(model, weights=False, scores=False)
    return model.eval()


def _write_json(path: Path, data: Any) -> None:
    """Atomic JSON write."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    tmp.replace(path)


def _logger(run_dir: Path) -> logging.Logger:
    """A per-run logger writing to ``run_dir/log.txt`` (no global handlers)."""
    log = logging.getLogger(f"bench.run.{run_dir.name}")
    log.setLevel(logging.INFO)
    log.propagate = False
    if not log.handlers:
        handler = logging.FileHandler(run_dir / "log.txt")
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        log.addHandler(handler)
    return log


def find_or_load_ticket(spec: RunSpec, out: Path, data_root: Optional[str] = None, must_exist: bool = False) -> tuple:
    """Stage 1: the ticket (trained now, or loaded when ``ticket.pt`` exists).

    With ``must_exist`` (evaluating an existing run) a missing ticket is an
    error instead of a new search.
    """
    spec = spec.resolve()
    device = resolve_device(spec.device)
    method = get_method(spec.method)
    run_dir = out / "runs" / spec.run_id
    if must_exist and not ((run_dir / "ticket.pt").exists() and (run_dir / "meta.json").exists()):
        raise ValueError(f"no finished ticket for spec {spec.run_id} in {out / 'runs'} (ticket.pt and meta.json)")
    data = load_data(spec.dataset, spec.data_source, data_root, spec.val_fraction, spec.seed, spec.n_train)
    run_dir.mkdir(parents=True, exist_ok=True)
    _write_json(run_dir / "spec.json", spec.to_dict())
    log = _logger(run_dir)
    ticket_path, meta_path = run_dir / "ticket.pt", run_dir / "meta.json"
    if ticket_path.exists() and meta_path.exists():
        log.info("ticket exists, skipping search")
        return spec, data, device, run_dir, load_ticket(run_dir, device), json.loads(meta_path.read_text())
    log.info("finding ticket: %s", json.dumps(spec.canonical(), default=str))
    ctx = RunContext(spec, data, device, run_dir, out / "stages", Compute())
    t0 = time.perf_counter()
    # A diverged search is recorded as failed (no result rows) and re-raised.
    try:
        model = method.find_ticket(ctx)
    except TrainingDivergedError as exc:
        _write_json(run_dir / "status.json", {"status": "failed", "error": str(exc)})
        log.info("run failed: %s", exc)
        raise
    model.eval()
    meta = {
        "target_sparsity": spec.sparsity,
        "measured_sparsity": measured_sparsity(model),
        "layer_sparsity": layer_sparsity(model),
        "prunable": prunable_policy(model),
        "train_seconds": ctx.compute.seconds + sum(s["seconds"] for s in ctx.info.get("stage_compute", [])),
        "train_passes": ctx.compute.passes + sum(s["passes"] for s in ctx.info.get("stage_compute", [])),
        "wall_seconds": time.perf_counter() - t0,
        "data_source": data.source,
        "randomized": method.randomized,
        **ctx.info,
    }
    tmp = ticket_path.with_suffix(".tmp")
    torch.save(model.state_dict(), tmp)
    tmp.replace(ticket_path)
    _write_json(meta_path, meta)
    _write_json(run_dir / "status.json", {"status": "ok", "error": ""})
    log.info("ticket saved: measured sparsity %.4f", meta["measured_sparsity"])
    return spec, data, device, run_dir, model, meta


# Per-row statistics that become CSV columns when an evaluation provides them (randomised tickets).
ROW_STATS = ("draws", "clean_std", "robust_std", "randomized", "adaptive", "non_adaptive")


def result_rows(spec: RunSpec, meta: Dict[str, Any], results: Sequence[AttackResult], device: torch.device) -> List[Dict[str, Any]]:
    """Tidy rows: spec key columns, attack settings and accuracies."""
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    base = {k: v for k, v in spec.to_dict().items() if k not in ("hparams", "eval_attacks", "n_eval", "n_eval_aa", "device", "sparsity", "eps")}
    rows = []
    for r in results:
        s = r.settings
        rows.append({
            "run_id": spec.run_id, **{k: base[k] for k in ("method", "dataset", "arch", "width", "seed")},
            "target_sparsity": spec.sparsity, "measured_sparsity": round(meta["measured_sparsity"], 6),
            "attack": r.attack, "norm": s.get("norm", "Linf"), "eps": s["eps"], "steps": s.get("steps", ""),
            "step_size": s.get("step_size", ""), "restarts": s.get("restarts", ""), "eot_samples": s.get("eot_samples", ""),
            "version": s.get("version", ""), "scope": r.scope, "n_eval": r.n_eval, "clean_acc": round(r.clean_acc, 6),
            "robust_acc": round(r.robust_acc, 6), **{k: r.stats[k] for k in ROW_STATS if k in r.stats},
            "flags": ";".join(r.flags), "status": "ok", "seconds": round(r.seconds, 3),
            "train_seconds": round(meta["train_seconds"], 3), "train_passes": meta["train_passes"],
            **{k: v for k, v in base.items() if k not in ("method", "dataset", "arch", "width", "seed")},
            "hparams": json.dumps(dataclasses.asdict(spec.hparams), sort_keys=True),
            "created_at": now, "git_commit": git_commit(), "torch_version": torch.__version__, "device": device.type,
        })
    return rows


def evaluate_run(spec: RunSpec, data: Any, device: torch.device, run_dir: Path, model: nn.Module, meta: Dict[str, Any],
                 attacks: Optional[Sequence[str]] = None, n_eval: Optional[int] = None, n_eval_aa: Optional[int] = None,
                 cascade: bool = True) -> List[AttackResult]:
    """Stage 2: evaluate the ticket (cascade, sanity flags); finished work comes from ``<run>/eval/``."""
    n = spec.n_eval if n_eval is None else n_eval
    n_aa = autoattack_examples(n_eval_aa if n_eval_aa is not None else spec.n_eval_aa, n, device)
    # A method with its own evaluation (randomised tickets) takes over here.
    chosen = tuple(attacks if attacks is not None else spec.eval_attacks)
    own = get_method(spec.method).evaluate_ticket(EvalRequest(spec, data, device, run_dir, model, meta, chosen, n, n_aa, cascade))
    if own is not None:
        return own
    results = evaluate(model, data.test, attacks if attacks is not None else spec.eval_attacks, float(spec.eps),
                       n, n_aa, device, run_dir / "eval", seed=spec.seed, cascade=cascade, meta=meta)
    wc = worst_case(results)
    return results + ([wc] if wc is not None and len(results) > 1 else [])


def run_spec(spec: RunSpec, out: Union[str, Path] = "results", data_root: Optional[str] = None, show: bool = True) -> pd.DataFrame:
    """Find, evaluate and record one run; returns its rows (usable from a notebook)."""
    out = Path(out)
    spec, data, device, run_dir, model, meta = find_or_load_ticket(spec, out, data_root)
    results = evaluate_run(spec, data, device, run_dir, model, meta)
    rows = result_rows(spec, meta, results, device)
    added = append_rows(out / "runs.csv", rows)
    df = pd.DataFrame(rows)
    if show:
        print(summary(df, spec, meta, added, out / "runs.csv"))
    return df


def summary(df: pd.DataFrame, spec: RunSpec, meta: Dict[str, Any], added: int, csv_path: Path) -> str:
    """Short human-readable summary table."""
    head = (f"run {spec.run_id}  method={spec.method} dataset={spec.dataset} arch={spec.arch} width={spec.width} "
            f"sparsity target={spec.sparsity} measured={meta['measured_sparsity']:.4f} eps={spec.eps:.4g} "
            f"train={meta['train_seconds']:.0f}s")
    cols = [c for c in ("attack", "scope", "n_eval", "clean_acc", "robust_acc", "robust_std", "draws", "seconds", "flags") if c in df]
    table = df[cols].to_string(index=False, float_format=lambda v: f"{v:.4f}")
    # Sanity flags never change a number; they are listed as warnings.
    flags = {f for cell in df.get("flags", pd.Series(dtype=str)) for f in str(cell).split(";") if f}
    warnings = "".join(f"\n{line}" for line in describe_flags(flags))
    return f"{head}\n{table}\n{added} new row(s) -> {csv_path}{warnings}"
