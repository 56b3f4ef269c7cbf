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
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import pandas as pd
import torch
from filelock import FileLock, Timeout

from bench.attacks.norms import check_budget_value, check_norm, standard_eps
from bench.core import paths
from bench.core.devices import device_name, resolve_device
from bench.core.io import atomic_json, atomic_save, digest, file_sha256
from bench.core.results import AttackResult, append_rows, new_rows, read_rows_file, result_rows
from bench.core.threads import THREAD_ENV_VARS
from bench.data import DataBundle, dataset_info, load_data
from bench.evaluation.evaluate import autoattack_examples, evaluate, with_worst_case
from bench.evaluation.flags import describe_flags
from bench.evaluation.randomized import evaluate_switch
from bench.methods import RunContext, get_method
from bench.methods.compact import save_compact
from bench.methods.ticket import Ticket, check_run_folder, load_ticket, read_meta
from bench.nn.cost import ROW_COST_COLUMNS, model_cost
from bench.nn.latency import ticket_latency
from bench.nn.masking import layer_sparsity, measured_sparsity, removed_channels
from bench.nn.models import prunable_policy
from bench.spec import RUNTIME_GROUPS, RunSpec, spec_fields
from bench.train import Compute, TrainingDivergedError, has_feature_batchnorm

__all__ = ["evaluate_run", "find_or_load_ticket", "load_finished_ticket", "load_ticket", "run_rows", "run_spec", "summary"]


# Float32 copies of every parameter a search holds at once: weights, scores, their gradients, optimiser
# momentum, the best-validation copy and the ticket itself (activations come on top).
SEARCH_PARAMETER_COPIES = 6


def device_memory_bytes(device: torch.device) -> int:
    """Total memory of ``device``: the GPU's, else the machine's physical memory."""
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def check_memory(spec: RunSpec, device: torch.device) -> int:
    """Refuse a spec whose parameters alone cannot fit on ``device`` (counted on the meta device, no memory used).

    Returns the estimate in bytes.
    """
    with torch.device("meta"):
        model = get_method(spec.method).build_empty(spec, "meta")
    n_params = sum(p.numel() for p in model.parameters())
    need = n_params * 4 * SEARCH_PARAMETER_COPIES
    have = device_memory_bytes(device)
    if need > have:
        raise ValueError(f"width {spec.width:g}: {spec.arch} has {n_params:.3g} parameters; a search holds "
                         f"{SEARCH_PARAMETER_COPIES} float32 copies ({need / 2**30:.1f} GiB), more than the "
                         f"{have / 2**30:.1f} GiB of {device.type} memory here; lower --width")
    return need


def check_trainable(spec: RunSpec, data: DataBundle) -> None:
    """Refuse, before anything is written, a spec whose data leave nothing to train on or to select with, or that
    its method cannot run on its architecture."""
    method = get_method(spec.method)
    with torch.device("meta"):
        model = method.build_empty(spec, "meta")
    method.validate_model(spec, model)
    if spec.epochs == 0:
        return
    if len(data.train) == 0:
        raise ValueError(f"no training example is left (--n-train {spec.n_train}, --val-fraction "
                         f"{spec.val_fraction} of {len(data.train) + len(data.val)}): raise --n-train or lower "
                         "--val-fraction")
    if len(data.val) == 0:
        raise ValueError(f"--val-fraction {spec.val_fraction:g} leaves no validation example to select the epoch "
                         "with: raise it")
    if has_feature_batchnorm(model) and (spec.batch_size == 1 or len(data.train) == 1):
        raise ValueError(f"--batch-size {spec.batch_size} with {len(data.train)} training example(s): {spec.arch} "
                         "normalises features over the batch (BatchNorm1d), which cannot train on one example; use "
                         "--batch-size 2 or more")


def _logger(run_dir: Path) -> logging.Logger:
    """A per-run logger writing to ``run_dir/log.txt`` (no global handlers)."""
    # One logger per run folder (not per run id: the same spec in two output folders has two logs).
    log = logging.getLogger(f"bench.run.{run_dir.name}.{digest(str(run_dir.resolve()), 8)}")
    log.setLevel(logging.INFO)
    log.propagate = False
    if not log.handlers:
        handler = logging.FileHandler(paths.log(run_dir))
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        log.addHandler(handler)
    return log


def find_or_load_ticket(spec: RunSpec, out: Path, data_root: Optional[str] = None, must_exist: bool = False) -> Ticket:
    """Stage 1: the ticket (trained now, or loaded when the run folder holds a finished one).

    With ``must_exist`` (evaluating an existing run) a missing ticket is an
    error instead of a new search.
    """
    spec = spec.resolve()
    device = resolve_device(spec.device)
    run_dir = paths.run_dir(out, spec.run_id)
    if must_exist and not paths.ticket_finished(run_dir):
        raise ValueError(f"no finished ticket for spec {spec.run_id} in {paths.runs_root(out)} (spec.json, ticket.pt and meta.json)")
    # A spec too large for this machine is refused before anything is written.
    if not paths.ticket_finished(run_dir):
        check_memory(spec, device)
    data = load_data(spec.dataset, spec.data_source, data_root, spec.val_fraction, spec.seed, spec.n_train,
                     spec.data_info)
    if not paths.ticket_finished(run_dir):
        check_trainable(spec, data)
    run_dir.mkdir(parents=True, exist_ok=True)
    # The spec is written once; evaluating a finished run with other attacks never rewrites it. A folder that
    # holds another run's spec is refused before anything is reused.
    check_run_folder(run_dir, spec)
    if not paths.spec(run_dir).exists():
        atomic_json(paths.spec(run_dir), spec.to_dict())
    # One search per run folder: a second process with the same spec waits, then reuses the ticket.
    lock = FileLock(str(paths.ticket_lock(run_dir)))
    try:
        lock.acquire(timeout=0.1)
    except Timeout:
        print(f"bench: another process is searching this run's ticket ({run_dir}); waiting for it", file=sys.stderr)
        lock.acquire()
    try:
        return _find_or_search(spec, data, device, run_dir, out)
    finally:
        lock.release()


def load_finished_ticket(spec: RunSpec, run_dir: Path, data_root: Optional[str] = None) -> Ticket:
    """The finished ticket in ``run_dir`` (any folder: a run copied elsewhere works), with the spec's data."""
    spec = spec.resolve()
    if not paths.ticket_finished(run_dir):
        raise ValueError(f"{run_dir} has no finished ticket (spec.json, ticket.pt and meta.json)")
    device = resolve_device(spec.device)
    data = load_data(spec.dataset, spec.data_source, data_root, spec.val_fraction, spec.seed, spec.n_train,
                     spec.data_info)
    meta = read_meta(run_dir)
    check_same_files(meta, data, run_dir)
    model = load_ticket(run_dir, device)
    return Ticket(spec, data, device, run_dir, model, with_cost(meta, model, data))


def with_cost(meta: Dict[str, Any], model: torch.nn.Module, data: DataBundle) -> Dict[str, Any]:
    """A finished ticket's meta with its cost and removed channels (meta.json of tickets made before they existed
    has none: they are counted now, in memory, so the rows written from now on carry them; meta.json is never
    rewritten)."""
    if isinstance(meta.get("cost"), dict):
        return meta
    info = data.info
    return {**meta, "cost": model_cost(model, (info.in_channels, info.image_size, info.image_size)),
            "removed_channels": meta.get("removed_channels", removed_channels(model))}


def check_same_files(meta: Dict[str, Any], data: DataBundle, run_dir: Path) -> None:
    """Refuse to reuse a ticket of a user's folder for another folder's images (the run id cannot tell them apart)."""
    made_from = meta.get("data_fingerprint")
    if data.fingerprint is not None and made_from is not None and made_from != data.fingerprint:
        raise ValueError(f"{run_dir} holds a ticket of another image folder (files {made_from}, now {data.fingerprint} "
                         f"in {data.source}); give another --out for this folder")


def check_same_init(meta: Dict[str, Any], run_dir: Path) -> None:
    """Refuse to reuse a ticket pruned from an ``--init-from`` file that has changed since (the run id holds the
    path, not the contents: a retrained network saved under the same name would silently get the old ticket)."""
    given = meta.get("init_from")
    if not isinstance(given, dict) or not Path(str(given.get("path", ""))).is_file():
        return
    now = file_sha256(given["path"])
    if now != given.get("sha256"):
        raise ValueError(f"--init-from {given['path']} has changed since {run_dir} was pruned from it (sha256 "
                         f"{str(given.get('sha256'))[:12]}..., now {now[:12]}...): save the new network under a new "
                         f"name (a new run), or move {run_dir} away to redo this one")


def _find_or_search(spec: RunSpec, data: DataBundle, device: torch.device, run_dir: Path, out: Path) -> Ticket:
    """The finished ticket of ``run_dir``, or a new search of it (called under the run's ticket lock)."""
    method = get_method(spec.method)
    log = _logger(run_dir)
    if paths.ticket_finished(run_dir):
        log.info("ticket exists, skipping search")
        meta = read_meta(run_dir)
        check_same_files(meta, data, run_dir)
        check_same_init(meta, run_dir)
        model = load_ticket(run_dir, device)
        return Ticket(spec, data, device, run_dir, model, with_cost(meta, model, data))
    log.info("finding ticket: %s", json.dumps(spec.canonical(), default=str))
    ctx = RunContext(spec, data, device, run_dir, paths.stages_root(out), Compute())
    t0 = time.perf_counter()
    # A diverged search is recorded as failed (no result rows) and re-raised.
    try:
        model = method.find_ticket(ctx)
    except TrainingDivergedError as exc:
        atomic_json(paths.status(run_dir), {"status": "failed", "error": str(exc)})
        log.info("run failed: %s", exc)
        raise
    model.eval()
    meta = {
        "target_sparsity": spec.sparsity,
        "measured_sparsity": measured_sparsity(model),
        "removed_channels": removed_channels(model),
        "layer_sparsity": layer_sparsity(model),
        "prunable": prunable_policy(model),
        "train_seconds": ctx.compute.seconds + sum(s["seconds"] for s in ctx.info.get("stage_compute", [])),
        "train_passes": ctx.compute.passes + sum(s["passes"] for s in ctx.info.get("stage_compute", [])),
        "wall_seconds": time.perf_counter() - t0,
        "data_source": data.source,
        # The hardware the search ran on (the same spec trained on another CPU can give another ticket).
        "device_name": device_name(device),
        # The threads the search ran with (a sweep's workers share the cores: see bench.core.threads).
        "threads": {"torch": torch.get_num_threads(), **{k: os.environ.get(k, "") for k in THREAD_ENV_VARS}},
        **({"data_fingerprint": data.fingerprint} if data.fingerprint is not None else {}),
        "randomized": method.randomized,
        # What the ticket costs to run: parameters and multiply-accumulates, dense and as a ticket.
        "cost": model_cost(model, (data.info.in_channels, data.info.image_size, data.info.image_size)),
        **ctx.info,
    }
    # The tickets (full, then compact) first, then the meta: a run is finished once both exist.
    atomic_save(paths.ticket(run_dir), model.state_dict())
    meta["ticket_bytes"] = paths.ticket(run_dir).stat().st_size
    meta.update(save_compact(paths.compact_ticket(run_dir), model, spec))
    atomic_json(paths.meta(run_dir), meta)
    atomic_json(paths.status(run_dir), {"status": "ok", "error": ""})
    log.info("ticket saved: measured sparsity %.4f", meta["measured_sparsity"])
    return Ticket(spec, data, device, run_dir, model, meta)


# The latency figures of latency.json a row carries, under their row names (runs measured before them have none);
# the thread count goes with them (latencies compare only at the same count).
LATENCY_COLUMNS = {"compacted_macs": "macs_compacted", "compacted_b1_ms": "latency_b1_ms",
                   "compacted_b128_ms": "latency_b128_ms", "speedup_b1": "speedup_b1", "speedup_b128": "speedup_b128",
                   "threads": "latency_threads"}
# Spec fields a row does not copy: how and where it was evaluated (the row says what ran), the hyperparameters
# (one JSON column), the sparsity (a row's target_sparsity), and eps and norm (the attack's, in the row's attack
# columns: a ticket may be evaluated in another threat model than it was trained in).
NOT_ROW_COLUMNS = spec_fields(*RUNTIME_GROUPS) + ("hparams", "sparsity", "eps", "norm")


def run_rows(spec: RunSpec, meta: Dict[str, Any], results: Sequence[AttackResult], device: torch.device,
             n_test: Optional[int] = None) -> List[Dict[str, Any]]:
    """Tidy rows of a ticket: spec key columns, attack settings and accuracies; ``n_test`` (the test set's size)
    tells a sweep that a row on every test example satisfies any larger ``n_eval``."""
    base = {k: v for k, v in spec.to_dict().items() if k not in NOT_ROW_COLUMNS}
    # Identity columns lead every file (results.LEADING_COLUMNS orders them); the rest follow the spec's order.
    head = {"run_id": spec.run_id, "target_sparsity": spec.sparsity,
            "measured_sparsity": round(meta["measured_sparsity"], 6)}
    found, timed = meta.get("cost"), meta.get("latency")
    cost: Dict[str, Any] = found if isinstance(found, dict) else {}
    latency: Dict[str, Any] = timed if isinstance(timed, dict) else {}
    tail = {"train_seconds": round(meta["train_seconds"], 3), "train_passes": meta["train_passes"],
            "train_device_name": meta.get("device_name", ""), **base,
            **({"removed_channels": round(meta["removed_channels"], 6)} if "removed_channels" in meta else {}),
            **{k: cost[k] for k in ROW_COST_COLUMNS if k in cost},
            **{row: round(latency[k], 6) if isinstance(latency[k], float) else latency[k]
               for k, row in LATENCY_COLUMNS.items() if k in latency},
            "hparams": json.dumps(dataclasses.asdict(spec.hparams), sort_keys=True),
            **({} if n_test is None else {"n_test": n_test})}
    return result_rows(head, results, tail, device)


def threat_budget(spec: RunSpec, norm: str, eps: Optional[float], dims: int) -> float:
    """The budget of an evaluation in ``norm`` on images of ``dims`` values: the one given (at most the box's
    diameter), else the spec's (in its own norm), else the dataset's L-inf default or the field's standard (L2,
    L1), else a ``ValueError`` asking for ``--eps``."""
    check_norm(norm)
    dataset = spec.dataset
    if eps is not None:
        check_budget_value(eps, norm, dims)
        return eps
    if norm == spec.norm:
        return spec.eps_value
    if norm == "Linf":
        return float(dataset_info(dataset).default_eps)
    standard = standard_eps(dataset, norm)
    if standard is None:
        raise ValueError(f"no standard {norm} budget for {dataset}: give --eps (see docs/evaluation.md)")
    return standard


def evaluate_run(ticket: Ticket, attacks: Optional[Sequence[str]] = None, n_eval: Optional[int] = None,
                 n_eval_aa: Optional[int] = None, cascade: bool = True, norm: Optional[str] = None,
                 eps: Optional[float] = None) -> List[AttackResult]:
    """Stage 2: evaluate the ticket (cascade, sanity flags) in the threat model ``norm`` at ``eps`` (default: the
    spec's norm and budget); finished work comes from ``<run>/eval/``."""
    spec = ticket.spec
    info = ticket.data.info
    norm = spec.norm if norm is None else norm
    budget = threat_budget(spec, norm, eps, info.in_channels * info.image_size ** 2)
    n = spec.n_eval if n_eval is None else n_eval
    if n < 0 or (n_eval_aa is not None and n_eval_aa < 0):
        raise ValueError(f"n_eval and n_eval_aa must be >= 0 (0 = the whole test set), got {n}, {n_eval_aa}")
    n_aa = autoattack_examples(n_eval_aa if n_eval_aa is not None else spec.n_eval_aa, n, ticket.device)
    chosen = tuple(attacks if attacks is not None else spec.eval_attacks)
    # A randomised ticket is evaluated over inference draws, with every attack alone.
    method = get_method(spec.method)
    if method.randomized:
        return evaluate_switch(ticket, chosen, n, n_aa, method.inference_draws(spec), norm=norm, eps=budget)
    results = evaluate(ticket.model, ticket.data.test, chosen, budget, n, n_aa, ticket.device,
                       paths.eval_root(ticket.run_dir), seed=spec.seed, cascade=cascade, meta=ticket.meta, prepare=True,
                       norm=norm)
    return with_worst_case(results)


def measured_latency(ticket: Ticket) -> Optional[Dict[str, Any]]:
    """The ticket's latency figures (:mod:`bench.nn.latency`): read from ``latency.json``, else measured now and
    written there; ``None`` when the spec turns them off."""
    path = paths.latency(ticket.run_dir)
    if path.exists():
        found: Dict[str, Any] = json.loads(path.read_text())
        return found
    if not ticket.spec.latency:
        return None
    info = ticket.data.info
    figures = ticket_latency(ticket.model, (info.in_channels, info.image_size, info.image_size))
    atomic_json(path, figures)
    return figures


def record(ticket: Ticket, results: Sequence[AttackResult], out: Path, show: bool = True) -> pd.DataFrame:
    """Append a ticket's rows to ``<out>/runs.csv`` (no duplicates) with its latency figures (measured once, and
    only when a row is new: a rerun that adds nothing spends no time timing); print the summary when ``show``."""
    rows = run_rows(ticket.spec, ticket.meta, results, ticket.device, len(ticket.data.test))
    if paths.latency(ticket.run_dir).exists() or new_rows(paths.runs_csv(out), rows):
        latency = measured_latency(ticket)
        if latency is not None:
            rows = run_rows(ticket.spec, {**ticket.meta, "latency": latency}, results, ticket.device, len(ticket.data.test))
    added = append_rows(paths.runs_csv(out), rows)
    df = pd.DataFrame(rows)
    if show:
        print(summary(df, ticket.spec, ticket.meta, added, paths.runs_csv(out)))
    return df


def run_spec(spec: RunSpec, out: Union[str, Path] = "results", data_root: Optional[str] = None, show: bool = True) -> pd.DataFrame:
    """Find, evaluate and record one run; returns its rows (usable from a notebook)."""
    # A rows file that cannot take the rows is found now, not after the training.
    read_rows_file(paths.runs_csv(out))
    ticket = find_or_load_ticket(spec, Path(out), data_root)
    return record(ticket, evaluate_run(ticket), Path(out), show)


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
