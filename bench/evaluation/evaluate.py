"""Robustness evaluation of a model: clean accuracy, each attack, the cascade and the worst case.

The harness owns eval mode. Attacks run cheapest first. Attacks that are not
``cascade_only`` (cheap, per-example early stopping) run on every
clean-correct example, so their rows are their accuracy alone.
``cascade_only`` attacks (AutoAttack: expensive) run only on the examples
still robust after every attack before them; their rows then report the
cascade accuracy (scope ``after:...``), unless the stored results already
cover every clean-correct example (scope ``alone``). The ``worst_case`` row
is the per-example AND over all rows.

Per-example results (tried, robust, perturbation norms, margin, adversarial
class, which component broke the point) are saved in ``<run>/eval/<model>/``
after every chunk, so an interrupted or repeated evaluation never redoes
finished work, and more examples only attack the new ones. Sanity checks
(:mod:`bench.evaluation.flags`, docs/flags.md) add names to each row's ``flags``; they
never change a number. Randomised models (:mod:`bench.evaluation.randomized`) use the
same stores, chunk runner and checks.
"""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Set, Tuple

import torch
import torch.nn as nn

from bench.attacks import Attack, attack_for_run
from bench.core.io import atomic_json, digest, mix_seed, model_fingerprint, slug
from bench.core.progress import bar
from bench.core.results import EVAL_VERSION, AttackResult
from bench.core.store import Store
from bench.data import Split, batches, to_float
from bench.evaluation.flags import N_ATTACK_PROBE, after_attack_flags, attack_probe_flags, meta_flags, probe_flags, row_flags
from bench.nn.inference import PREPARATION, ieee_float32, inference_model

# AutoAttack's default subset on the CPU (first N test examples); CUDA uses n_eval.
CPU_AUTOATTACK_EXAMPLES = 100


def autoattack_examples(requested: Optional[int], n_eval: int, device: torch.device) -> int:
    """AutoAttack's example count: the one asked for, else the CPU subset, else ``n_eval``."""
    if requested is not None:
        return requested
    return CPU_AUTOATTACK_EXAMPLES if device.type == "cpu" else n_eval


# Prepared models store weights and take inputs channels-last (faster input-gradient passes on CPU; see
# docs/performance.md).
CHANNELS_LAST = True
# The arrays of a deterministic model's stores.
CLEAN_ARRAYS = {"computed": (torch.bool, False, ()), "correct": (torch.bool, False, ())}
ATTACK_ARRAYS = {"tried": (torch.bool, False, ()), "robust": (torch.bool, False, ()),
                 "linf": (torch.float32, float("nan"), ()), "l2": (torch.float32, float("nan"), ()),
                 "margin": (torch.float32, float("nan"), ()), "adv_pred": (torch.int64, -1, ()),
                 "broken_by": (torch.int64, -1, ())}


def model_folder(cache_dir: Optional[Path], model: nn.Module, preparation: str = "") -> Optional[Path]:
    """The evaluation cache folder of a model: named by the digest of every parameter and buffer (and of the
    evaluation-time preparation its passes went through, whose results differ by float rounding)."""
    if cache_dir is None:
        return None
    fingerprint = model_fingerprint(model)
    return cache_dir / digest({"model": fingerprint, "preparation": preparation} if preparation else fingerprint)


def attack_config(attack: Attack) -> Dict[str, Any]:
    """Every setting of an attack (seed included), with its class: what its cached results depend on. The L-inf
    norm, every attack's default, is left out (caches made before norms existed stay valid)."""
    fields = {k: v for k, v in dataclasses.asdict(attack).items() if not (k == "norm" and v == "Linf")}
    return {"class": type(attack).__name__, **fields, "eval_version": EVAL_VERSION}


def attack_store_path(folder: Optional[Path], prefix: str, name: str, attack: Attack, suffix: str = "") -> Optional[Path]:
    """Where an attack's per-example results live: its name and the digest of its settings."""
    if folder is None:
        return None
    return folder / f"{prefix}{slug(name)}-{digest(attack_config(attack), 10)}{suffix}"


@torch.no_grad()
def correct_flags(model: nn.Module, split: Split, device: torch.device, batch_size: int = 500) -> torch.Tensor:
    """Per-example clean correctness (bool, on CPU)."""
    out = [(model(x).argmax(1) == y).cpu() for x, y in batches(split, batch_size, device)]
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.bool)


def robust_flags(model: nn.Module, split: Split, attack: Attack, device: torch.device, batch_size: int = 500) -> torch.Tensor:
    """Per-example robustness under ``attack`` alone (False where clean is already wrong); no cache."""
    flags = correct_flags(model, split, device, batch_size)
    todo = flags.nonzero().squeeze(1)
    for chunk in attack_chunks(model, split, attack, todo, device, batch_size):
        with torch.no_grad():
            flags[chunk.sel] = (model(chunk.x_adv).argmax(1) == chunk.y).cpu()
    return flags


@dataclass
class Chunk:
    """One attacked chunk of test examples."""

    sel: torch.Tensor
    x: torch.Tensor
    y: torch.Tensor
    x_adv: torch.Tensor
    broken_by: Optional[torch.Tensor]
    seconds: float


def chunk_attack(attack: Attack, sel: torch.Tensor) -> Attack:
    """The attack for one chunk: its own random start, seeded by the attack's seed and the chunk's first example."""
    return dataclasses.replace(attack, seed=mix_seed(attack.seed, "chunk", int(sel[0])) % (2**31))


def attack_chunks(model: nn.Module, test: Split, attack: Attack, todo: torch.Tensor, device: torch.device,
                  batch_size: int, before: Optional[Callable[[torch.Tensor], None]] = None) -> Iterator[Chunk]:
    """The one chunk runner: ``attack`` on the examples ``todo``, in chunks of the attack's (or the harness's) batch size.

    ``before(sel)`` runs ahead of each chunk's attack (a randomised model reseeds there).
    """
    chunk = attack.batch_size or batch_size
    for start in range(0, len(todo), chunk):
        sel = todo[start : start + chunk]
        x, y = to_float(test.x[sel], device), test.y[sel].to(device)
        if before is not None:
            before(sel)
        t0 = time.perf_counter()
        x_adv, broken_by = chunk_attack(attack, sel).detailed(model, x, y)
        yield Chunk(sel, x, y, x_adv, broken_by, time.perf_counter() - t0)


def clean_store(folder: Optional[Path]) -> Store:
    """The clean-correctness store of a deterministic model."""
    return Store(folder / "clean" if folder else None, CLEAN_ARRAYS, {})


def clean_correct(store: Store, model: nn.Module, test: Split, n: int, device: torch.device, batch_size: int) -> torch.Tensor:
    """Clean flags of the first ``n`` examples, computing the missing ones (so a model keeps one answer)."""
    store.grow(n)
    todo = (~store["computed"][:n]).nonzero().squeeze(1)
    if len(todo):
        store["correct"][todo] = correct_flags(model, test.subset(todo), device, batch_size)
        store["computed"][todo] = True
        store.save()
    return store["correct"][:n].clone()


def attack_store(folder: Optional[Path], name: str, attack: Attack) -> Store:
    """The per-example store of one attack on a deterministic model."""
    meta = {"attack": name, "config": attack_config(attack), "settings": attack.settings(),
            "components": list(attack.components) or [name]}
    return Store(attack_store_path(folder, "", name, attack), ATTACK_ARRAYS, meta)


def record_chunk(store: Store, chunk: Chunk, logits: torch.Tensor) -> None:
    """Store one chunk's outcome and adversarial statistics, then save."""
    sel, y = chunk.sel, chunk.y
    delta = (chunk.x_adv - chunk.x).flatten(1)
    true = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.scatter(1, y[:, None], float("-inf")).max(1).values
    store["tried"][sel] = True
    store["robust"][sel] = (logits.argmax(1) == y).cpu()
    store["linf"][sel] = delta.abs().max(1).values.float().cpu()
    store["l2"][sel] = delta.norm(dim=1).float().cpu()
    store["margin"][sel] = (true - other).float().cpu()
    store["adv_pred"][sel] = logits.argmax(1).cpu()
    if chunk.broken_by is not None:
        store["broken_by"][sel] = chunk.broken_by.cpu()
    store.add_seconds(chunk.seconds)
    store.save()


def run_attack(model: nn.Module, test: Split, attack: Attack, store: Store, need: torch.Tensor,
               device: torch.device, batch_size: int, label: str = "") -> None:
    """Attack every example in ``need`` (bool over the first n) not yet tried, chunk by chunk (a bar counts points)."""
    store.grow(len(need))
    todo = (need & ~store["tried"][: len(need)]).nonzero().squeeze(1)
    with bar(total=len(todo), desc=label or attack.label, unit="pt", leave=False, disable=len(todo) == 0) as pbar:
        for chunk in attack_chunks(model, test, attack, todo, device, batch_size):
            with torch.no_grad():
                logits = model(chunk.x_adv)
            record_chunk(store, chunk, logits)
            pbar.update(len(chunk.sel))


def _stats(store: Store, flags: torch.Tensor, tried: torch.Tensor) -> Dict[str, Any]:
    """Summary of the adversarial examples: perturbation size of successes, margin of survivors."""
    n = len(flags)
    broken = tried & ~store["robust"][:n]
    stats: Dict[str, Any] = {"n_attacked": float(tried.sum()), "n_broken": float(broken.sum())}
    if broken.any():
        stats["linf_broken_mean"] = float(store["linf"][:n][broken].mean())
        stats["l2_broken_mean"] = float(store["l2"][:n][broken].mean())
    if flags.any():
        stats["margin_robust_median"] = float(store["margin"][:n][flags].median())
    return stats


def probe_examples(mask: torch.Tensor) -> torch.Tensor:
    """Indices of the attack probes: the first ``N_ATTACK_PROBE`` examples of ``mask``."""
    return mask.nonzero().squeeze(1)[:N_ATTACK_PROBE]


def cached_probe_flags(model: nn.Module, test: Split, correct: torch.Tensor, eps: float, seed: int,
                       folder: Optional[Path], device: torch.device, norm: str = "Linf") -> Set[str]:
    """:func:`bench.evaluation.flags.attack_probe_flags` on the first clean-correct examples, computed once per model folder."""
    key = {"eps": eps, "seed": seed, "eval_version": EVAL_VERSION, **({"norm": norm} if norm != "Linf" else {})}
    path = folder / f"probes-{digest(key, 10)}.json" if folder else None
    if path is not None and path.exists():
        # A side-car that is not the record this function wrote is recomputed (it is derived data).
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError, RecursionError):
            record = None
        if isinstance(record, dict) and isinstance(record.get("flags"), list):
            return set(map(str, record["flags"]))
    idx = probe_examples(correct)
    x, y = to_float(test.x[idx], device), test.y[idx].to(device)
    flags = attack_probe_flags(model, x, y, eps, mix_seed(seed, "probe") % (2**31), norm)
    if path is not None:
        atomic_json(path, {"flags": sorted(flags), "examples": idx.tolist()})
    return flags


# Examples by which APGD-CE alone may leave more of the probe robust than a CE PGD attack before the cascade's
# AutoAttack rows are flagged: two different attacks each find an example the other misses now and then (one
# example of 100 was seen on a healthy MLP, depending on the CPU's thread count); a broken AutoAttack loses dozens.
APGD_PROBE_SLACK = 1


def apgd_probe_flags(model: nn.Module, test: Split, order: Sequence[Tuple[str, Attack, int]], stores: Mapping[str, Store],
                     correct: torch.Tensor, eps: float, seed: int, folder: Optional[Path], device: torch.device,
                     batch_size: int, norm: str = "Linf") -> List[str]:
    """Cascade-only white-box rows to flag ``aa_above_pgd``: APGD-CE alone on a probe beats no CE white-box attack.

    In the cascade AutoAttack only sees what the cheap attacks left robust,
    so it can never look weaker than them there; APGD-CE alone on the first
    clean-correct examples they attacked is compared with each instead.
    """
    strong = [(name, n) for name, a, n in order if a.cascade_only and a.whitebox]
    refs = [name for name, a, _ in order if a.whitebox and not a.cascade_only and a.settings().get("loss") == "ce"]
    if not strong or not refs:
        return []
    n = min(n for _, n in strong)
    tried = torch.ones(n, dtype=torch.bool)
    for ref in refs:
        tried &= stores[ref]["tried"][:n]
    idx = probe_examples(correct[:n] & tried)
    probe = attack_for_run("apgd-ce", eps, seed, norm)
    store = attack_store(folder / "probe" if folder else None, "apgd-ce", probe)
    need = torch.zeros(n, dtype=torch.bool)
    need[idx] = True
    run_attack(model, test, probe, store, need, device, batch_size)
    apgd_robust = int(store["robust"][idx].sum())
    if any(apgd_robust > int(stores[ref]["robust"][idx].sum()) + APGD_PROBE_SLACK for ref in refs):
        return [name for name, _ in strong]
    return []


def plan(attacks: Sequence[str], eps: float, seed: int, test: Split, n_eval: int, n_eval_aa: int,
         norm: str = "Linf") -> List[Tuple[str, Attack, int]]:
    """(name, attack, examples) for each distinct attack, cheapest first; cascade-only ones last, on ``n_eval_aa``."""
    chosen = []
    for name in dict.fromkeys(attacks):
        attack = attack_for_run(name, eps, seed, norm)
        chosen.append((name, attack, len(test.head(n_eval_aa if attack.cascade_only else n_eval))))
    return sorted(chosen, key=lambda t: (t[1].cascade_only, t[1].cost))


@ieee_float32()
def evaluate(model: nn.Module, test: Split, attacks: Sequence[str], eps: float, n_eval: int, n_eval_aa: int,
             device: torch.device, cache_dir: Optional[Path] = None, seed: int = 0, batch_size: int = 500,
             cascade: bool = True, meta: Optional[Mapping[str, Any]] = None, probes: bool = True,
             prepare: bool = False, norm: str = "Linf") -> List[AttackResult]:
    """Run ``attacks`` cheapest first (see the module docstring); one result per attack, in run order.

    ``n_eval`` examples for most attacks, ``n_eval_aa`` for cascade-only ones
    (0 = the whole test set). With ``cascade=False`` every attack runs on
    every clean-correct example. ``meta`` (the ticket's meta.json) enables the
    sparsity and frozen-weight checks. ``probes`` runs the attack probes behind
    the ``not_converged``, ``eps_not_monotone`` and cascade ``aa_above_pgd``
    flags (a few seconds, once per model). With ``prepare`` (the harness's
    tickets: architectures of the registry, which torch.fx traces) every pass
    goes through :func:`bench.nn.inference.inference_model`'s copy (masks
    materialised, BatchNorm folded: the same function up to float rounding);
    the checks on masks, weights and modes read ``model`` itself.
    """
    model.eval()
    order = plan(attacks, eps, seed, test, n_eval, n_eval_aa, norm)
    if not order:
        return []
    n_all = max(n for _, _, n in order)
    before = model_fingerprint(model)
    # The model the passes go through: the prepared copy (its own cache folder), or the ticket itself.
    prepared = prepare and not any(m.training for m in model.modules())
    attacked = inference_model(model, channels_last=CHANNELS_LAST) if prepared else model
    attacked_before = model_fingerprint(attacked)
    folder = model_folder(cache_dir, model, PREPARATION if prepared else "")
    correct = clean_correct(clean_store(folder), attacked, test, n_all, device, batch_size)
    any_adaptive = any(a.adaptive for _, a, _ in order)
    run_flags = probe_flags(attacked, test, correct, device, any_adaptive) | meta_flags(meta, model)

    # The cascade: each attack's row flags; cascade-only attacks attack only what is still robust.
    prior = correct.clone()
    stores: Dict[str, Store] = {}
    rows: List[Tuple[str, Attack, int, str, torch.Tensor]] = []
    done: List[str] = []
    with bar(order, desc="attacks", unit="attack", leave=False) as pbar:
        for name, attack, n in pbar:
            pbar.set_postfix_str(name)
            store = stores[name] = attack_store(folder, name, attack)
            need = prior[:n] if (cascade and attack.cascade_only) else correct[:n]
            run_attack(attacked, test, attack, store, need, device, batch_size, label=name)
            tried, robust = store["tried"][:n], store["robust"][:n]
            if bool((tried | ~correct[:n]).all()):
                flags, scope = correct[:n] & robust, "alone"
            else:
                flags, scope = prior[:n] & robust, "after:" + "+".join(done)
            prior[:n] &= flags
            rows.append((name, attack, n, scope, flags))
            done.append(name)

    # Probes (cached beside the stores): convergence and eps on clean-correct examples; APGD-CE for aa_above_pgd.
    # (A model stuck in training mode is flagged `train_mode`; probing it would measure nothing.)
    probes = probes and not any(m.training for m in model.modules())
    if probes:
        run_flags |= cached_probe_flags(attacked, test, correct, eps, seed, folder, device, norm)
    per_row = row_flags(order, stores, correct)
    if cascade and probes:
        for name in apgd_probe_flags(attacked, test, order, stores, correct, eps, seed, folder, device, batch_size, norm):
            per_row[name].add("aa_above_pgd")
    # Checks after attacking: modes, parameters and buffers unchanged (of the ticket and of the copy attacked).
    run_flags |= after_attack_flags(model, before) | after_attack_flags(attacked, attacked_before)

    results = []
    for name, attack, n, scope, flags in rows:
        store = stores[name]
        results.append(AttackResult(name, {**attack.settings(), "cascade": cascade}, n, float(correct[:n].float().mean()),
                                    float(flags.float().mean()), store.seconds, flags, scope,
                                    tuple(sorted(run_flags | per_row[name])),
                                    _stats(store, flags, store["tried"][:n] & correct[:n])))
    return results


def worst_case(results: Sequence[AttackResult]) -> Optional[AttackResult]:
    """Per-example worst case over all attacks, on the examples every attack saw."""
    if not results:
        return None
    n = min(r.n_eval for r in results)
    flags = torch.ones(n, dtype=torch.bool)
    for r in results:
        flags &= r.robust[:n]
    clean = min(results, key=lambda r: r.n_eval).clean_acc
    names = "+".join(r.attack for r in results)
    union: Set[str] = set().union(*(set(r.flags) for r in results))
    return AttackResult("worst_case", {"norm": results[0].settings.get("norm", "Linf"), "eps": results[0].settings["eps"], "steps": "", "step_size": "",
                                       "restarts": "", "eot_samples": "", "version": names},
                        n, clean, float(flags.float().mean()), sum(r.seconds for r in results), flags,
                        "all", tuple(sorted(union)))


def with_worst_case(results: List[AttackResult]) -> List[AttackResult]:
    """``results`` plus their ``worst_case`` row when there are several attacks."""
    wc = worst_case(results)
    return results + ([wc] if wc is not None and len(results) > 1 else [])
