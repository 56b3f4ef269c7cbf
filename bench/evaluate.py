"""Robustness evaluation of a ticket: clean accuracy, each attack, the cascade and the worst case.

The harness owns eval mode. Attacks run cheapest first. PGD-family attacks
(cheap white-box, per-example early stopping) run on every clean-correct
example, so their rows are their accuracy alone. AutoAttack-family attacks
(expensive) run only on the examples still robust after every attack before
them; their rows then report the cascade accuracy (scope ``after:...``),
unless the stored results already cover every clean-correct example (scope
``alone``). The ``worst_case`` row is the per-example AND over all rows.

Per-example results (tried, robust, perturbation norms, margin, adversarial
class, which sub-attack broke the point) are saved in ``<run>/eval/<model>/``
after every chunk, so an interrupted or repeated evaluation never redoes
finished work, and more examples only attack the new ones. Sanity checks
(see docs/flags.md) add names to each row's ``flags``; they never change a
number.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from bench.attacks import BLACK_BOX, PGD, Attack, AutoAttackRunner, make_attack
from bench.data import Split, batches, to_float

# Thresholds of the sanity checks (documented one by one in docs/flags.md).
VANISHING_GRAD = 1e-12
VANISHING_SHARE = 0.1
SPARSITY_TOLERANCE = 0.005
NONDETERMINISM_TOL = 1e-4
SQUARE_SHARE = 0.002  # AutoAttack's own threshold (checks.check_square_sr)
N_PROBE = 256

FLAG_DESCRIPTIONS: Dict[str, str] = {
    "probabilities": "the model returns probabilities, not logits (CE/CW gradients are distorted)",
    "train_mode": "a module was in training mode or BatchNorm statistics changed during evaluation",
    "vanishing_gradients": "many clean-correct examples have (near) zero input gradient: possible gradient masking",
    "aa_above_pgd": "AutoAttack left more examples robust than a PGD (CE) attack on the same examples",
    "square_beats_whitebox": "the black-box Square attack broke more than 0.2% of examples every white-box attack failed on",
    "nondeterministic": "two identical forward passes differ, and only deterministic (non-EOT) attacks were run",
    "sparsity_off_target": "measured sparsity differs from the target by more than 0.005",
    "frozen_moved": "weights that should be frozen changed (during the search or during evaluation)",
    "non_adaptive": "a randomised ticket evaluated without any adaptive attack (EOT or whole-ensemble): over-rated",
}


@dataclass
class AttackResult:
    """Outcome of one attack on the first ``n_eval`` test examples."""

    attack: str
    settings: Dict[str, Any]
    n_eval: int
    clean_acc: float
    robust_acc: float
    seconds: float
    robust: torch.Tensor
    scope: str = "alone"
    flags: Tuple[str, ...] = ()
    stats: Dict[str, float] = field(default_factory=dict)


def tensor_digest(t: torch.Tensor) -> str:
    """Short sha256 of a tensor's values."""
    return hashlib.sha256(t.detach().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]


def model_fingerprint(model: nn.Module) -> Dict[str, str]:
    """Digest of every parameter and buffer (detects any change to the model)."""
    return {k: tensor_digest(v) for k, v in model.state_dict().items()}


def frozen_fingerprint(model: nn.Module) -> Dict[str, str]:
    """Digests of the masked layers' weights; a method that freezes weights stores this in
    ``ctx.info["frozen_fingerprint"]`` right after initialising them (see docs/flags.md)."""
    from bench.masking import prunable_layers

    return {f"{name}.weight": tensor_digest(layer.weight) for name, layer in prunable_layers(model)}


@torch.no_grad()
def correct_flags(model: nn.Module, split: Split, device: torch.device, batch_size: int = 500) -> torch.Tensor:
    """Per-example clean correctness (bool, on CPU)."""
    out = [(model(x).argmax(1) == y).cpu() for x, y in batches(split, batch_size, device)]
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.bool)


def robust_flags(model: nn.Module, split: Split, attack: Attack, device: torch.device, batch_size: int = 500) -> torch.Tensor:
    """Per-example robustness under ``attack`` alone (False where clean is already wrong); no cache."""
    flags = correct_flags(model, split, device, batch_size)
    idx = flags.nonzero().squeeze(1)
    for start in range(0, len(idx), batch_size):
        sel = idx[start : start + batch_size]
        x, y = to_float(split.x[sel], device), split.y[sel].to(device)
        x_adv = attack(model, x, y)
        check_budget(x, x_adv, float(attack.settings()["eps"]))
        with torch.no_grad():
            flags[sel] = (model(x_adv).argmax(1) == y).cpu()
    return flags


def check_budget(x: torch.Tensor, x_adv: torch.Tensor, eps: float) -> None:
    """Never trust an attack's output blindly: re-check the eps-ball and the [0,1] box."""
    if x_adv.shape != x.shape or (x_adv - x).abs().max() > eps + 1e-5 or x_adv.min() < 0 or x_adv.max() > 1:
        raise RuntimeError("attack returned a point outside the eps-ball or [0,1]")


def is_autoattack(name: str, eps: float) -> bool:
    """Whether ``name`` is an AutoAttack-family attack (runs last in the cascade, on ``n_eval_aa``)."""
    return isinstance(make_attack(name, eps), AutoAttackRunner)


class Store:
    """Per-example arrays over the test set, grown on demand, saved atomically as ``.npz`` + ``.json``."""

    ARRAYS: Dict[str, Tuple[Any, Any]] = {}

    def __init__(self, path: Optional[Path], meta: Dict[str, Any]) -> None:
        self.path = path
        self.meta = meta
        self.arrays: Dict[str, torch.Tensor] = {k: torch.full((0,), fill, dtype=dt) for k, (dt, fill) in self.ARRAYS.items()}
        if path is not None and path.with_suffix(".npz").exists():
            with np.load(path.with_suffix(".npz"), allow_pickle=False) as data:
                self.arrays = {k: torch.from_numpy(data[k].copy()) for k in self.ARRAYS}
            self.meta = {**meta, **json.loads(path.with_suffix(".json").read_text())}

    def grow(self, size: int) -> None:
        """Make every array at least ``size`` long (new entries at their fill value)."""
        for k, (dt, fill) in self.ARRAYS.items():
            a = self.arrays[k]
            if len(a) < size:
                self.arrays[k] = torch.cat([a, torch.full((size - len(a),), fill, dtype=dt)])

    def save(self) -> None:
        """Atomic write of arrays, then the JSON side-car."""
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        np.savez(buf, **{k: v.numpy() for k, v in self.arrays.items()})
        for suffix, blob in ((".npz", buf.getvalue()), (".json", json.dumps(self.meta, indent=1, default=str).encode())):
            tmp = self.path.with_name(f".{self.path.name}{suffix}.{os.getpid()}.tmp")
            tmp.write_bytes(blob)
            tmp.replace(self.path.with_suffix(suffix))

    def __getitem__(self, key: str) -> torch.Tensor:
        return self.arrays[key]


class CleanStore(Store):
    """Clean correctness per test example (computed once, so a randomised model keeps one answer)."""

    ARRAYS = {"computed": (torch.bool, False), "correct": (torch.bool, False)}

    def flags(self, model: nn.Module, test: Split, n: int, device: torch.device, batch_size: int) -> torch.Tensor:
        """Clean flags of the first ``n`` examples, computing the missing ones."""
        self.grow(n)
        todo = (~self["computed"][:n]).nonzero().squeeze(1)
        if len(todo):
            self["correct"][todo] = correct_flags(model, test.subset(todo), device, batch_size)
            self["computed"][todo] = True
            self.save()
        return self["correct"][:n].clone()


class AttackStore(Store):
    """One attack's per-example results and adversarial statistics."""

    ARRAYS = {"tried": (torch.bool, False), "robust": (torch.bool, False), "linf": (torch.float32, float("nan")),
              "l2": (torch.float32, float("nan")), "margin": (torch.float32, float("nan")),
              "adv_pred": (torch.int64, -1), "broken_by": (torch.int64, -1)}

    @property
    def seconds(self) -> float:
        """Attack seconds spent so far (all sessions)."""
        return float(self.meta.get("seconds", 0.0))

    def record(self, sel: torch.Tensor, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor, logits: torch.Tensor,
               broken_by: Optional[torch.Tensor], seconds: float) -> None:
        """Store one chunk's outcome and statistics, then save."""
        delta = (x_adv - x).flatten(1)
        true = logits.gather(1, y[:, None]).squeeze(1)
        other = logits.scatter(1, y[:, None], float("-inf")).max(1).values
        self["tried"][sel] = True
        self["robust"][sel] = (logits.argmax(1) == y).cpu()
        self["linf"][sel] = delta.abs().max(1).values.float().cpu()
        self["l2"][sel] = delta.norm(dim=1).float().cpu()
        self["margin"][sel] = (true - other).float().cpu()
        self["adv_pred"][sel] = logits.argmax(1).cpu()
        if broken_by is not None:
            self["broken_by"][sel] = broken_by.cpu()
        self.meta["seconds"] = self.seconds + seconds
        self.save()


def _slug(name: str) -> str:
    """File-name-safe attack name."""
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", name)


def attack_store(folder: Optional[Path], name: str, attack: Attack) -> AttackStore:
    """The store of ``attack``; the file name hashes every setting (seed included)."""
    config = {"class": type(attack).__name__, **dataclasses.asdict(attack)}
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:10]
    path = folder / f"{_slug(name)}-{digest}" if folder is not None else None
    components = list(attack.components) if isinstance(attack, AutoAttackRunner) else [name]
    return AttackStore(path, {"attack": name, "config": config, "settings": attack.settings(), "components": components})


def run_attack(model: nn.Module, test: Split, attack: Attack, store: AttackStore, need: torch.Tensor,
               device: torch.device, batch_size: int) -> None:
    """Attack every example in ``need`` (bool over the first n) not yet tried, chunk by chunk."""
    store.grow(len(need))
    todo = (need & ~store["tried"][: len(need)]).nonzero().squeeze(1)
    eps = float(attack.settings()["eps"])
    chunk = attack.batch_size if isinstance(attack, AutoAttackRunner) else batch_size
    for start in range(0, len(todo), chunk):
        sel = todo[start : start + chunk]
        x, y = to_float(test.x[sel], device), test.y[sel].to(device)
        t0 = time.perf_counter()
        if isinstance(attack, AutoAttackRunner):
            x_adv, broken = attack.run_detailed(model, x, y)
        else:
            x_adv, broken = attack(model, x, y), None
        seconds = time.perf_counter() - t0
        check_budget(x, x_adv, eps)
        with torch.no_grad():
            logits = model(x_adv)
        store.record(sel, x, x_adv, y, logits, broken, seconds)


def _probe_flags(model: nn.Module, test: Split, correct: torch.Tensor, device: torch.device, any_eot: bool) -> Set[str]:
    """Checks on a probe batch before attacking: outputs, randomness, input gradients, modes."""
    flags: Set[str] = set()
    if any(m.training for m in model.modules()):
        flags.add("train_mode")
    n = min(N_PROBE, len(correct))
    if n == 0:
        return flags
    x, y = to_float(test.x[:n], device), test.y[:n].to(device)
    with torch.no_grad():
        out1, out2 = model(x), model(x)
    # Probabilities instead of logits: non-negative rows summing to one.
    if out1.min() >= 0 and out1.max() <= 1 and (out1.sum(1) - 1).abs().max() < 1e-3:
        flags.add("probabilities")
    # A random forward pass attacked only with deterministic attacks.
    if (out1 - out2).abs().max() > NONDETERMINISM_TOL * (1 + out1.abs().max()) and not any_eot:
        flags.add("nondeterministic")
    # Vanishing input gradients of the CE loss on clean-correct probes.
    ok = correct[:n].to(device)
    if ok.any():
        from bench.attacks import no_param_grad

        with no_param_grad(model):
            xg = x[ok].clone().requires_grad_(True)
            grad = torch.autograd.grad(F.cross_entropy(model(xg), y[ok], reduction="sum"), xg)[0]
        tiny = grad.flatten(1).abs().max(1).values <= VANISHING_GRAD
        if tiny.float().mean() > VANISHING_SHARE:
            flags.add("vanishing_gradients")
    return flags


def _meta_flags(meta: Optional[Mapping[str, Any]], model: nn.Module) -> Set[str]:
    """Checks from the ticket's meta: sparsity on target, frozen weights unchanged."""
    flags: Set[str] = set()
    if not meta:
        return flags
    target, measured = meta.get("target_sparsity"), meta.get("measured_sparsity")
    if target is not None and measured is not None and abs(float(measured) - float(target)) > SPARSITY_TOLERANCE:
        flags.add("sparsity_off_target")
    frozen = meta.get("frozen_fingerprint") or {}
    state = model.state_dict()
    if any(k not in state or tensor_digest(state[k]) != v for k, v in frozen.items()):
        flags.add("frozen_moved")
    return flags


def _fit(t: torch.Tensor, n: int, fill: Any) -> torch.Tensor:
    """``t`` cut or padded with ``fill`` to length ``n``."""
    return torch.cat([t[:n], torch.full((max(0, n - len(t)),), fill, dtype=t.dtype)])


def _row_flags(order: Sequence[Tuple[str, Attack, int]], stores: Dict[str, AttackStore], correct: torch.Tensor) -> Dict[str, Set[str]]:
    """Per-row checks: AutoAttack above PGD, Square succeeding where white-box attacks failed."""
    out: Dict[str, Set[str]] = {name: set() for name, _, _ in order}
    n_all = len(correct)
    tried = {name: _fit(stores[name]["tried"], n_all, False) & correct for name, _, _ in order}
    robust = {name: _fit(stores[name]["robust"], n_all, False) for name, _, _ in order}
    pgd_ce = [name for name, a, _ in order if isinstance(a, PGD) and a.loss == "ce"]
    whitebox = [name for name, a, _ in order if isinstance(a, PGD)]
    wb_tried = torch.zeros(n_all, dtype=torch.bool)
    wb_broken = torch.zeros(n_all, dtype=torch.bool)
    for name in whitebox:
        wb_tried |= tried[name]
        wb_broken |= tried[name] & ~robust[name]
    for name, attack, n in order:
        if not isinstance(attack, AutoAttackRunner):
            continue
        # AutoAttack must never be weaker than PGD on the examples both attacked.
        for p in pgd_ce:
            both = tried[name] & tried[p]
            if int(robust[name][both].sum()) > int(robust[p][both].sum()):
                out[name].add("aa_above_pgd")
        # Square (black-box) succeeding where every white-box attack failed.
        comps = list(attack.components)
        for k, comp in enumerate(comps):
            if comp not in BLACK_BOX:
                continue
            broken = tried[name] & ~robust[name] & (_fit(stores[name]["broken_by"], n_all, -1) == k)
            internal_wb = any(c not in BLACK_BOX for c in comps[:k])
            evidence = ~wb_broken & (wb_tried | internal_wb)
            if float((broken & evidence).sum()) > SQUARE_SHARE * n:
                out[name].add("square_beats_whitebox")
    return out


def _stats(store: AttackStore, flags: torch.Tensor, tried: torch.Tensor) -> Dict[str, float]:
    """Summary of the adversarial examples: perturbation size of successes, margin of survivors."""
    n = len(flags)
    broken = tried & ~store["robust"][:n]
    stats: Dict[str, float] = {"n_attacked": float(tried.sum()), "n_broken": float(broken.sum())}
    if broken.any():
        stats["linf_broken_mean"] = float(store["linf"][:n][broken].mean())
        stats["l2_broken_mean"] = float(store["l2"][:n][broken].mean())
    if flags.any():
        stats["margin_robust_median"] = float(store["margin"][:n][flags].median())
    return stats


def evaluate(model: nn.Module, test: Split, attacks: Sequence[str], eps: float, n_eval: int, n_eval_aa: int,
             device: torch.device, cache_dir: Optional[Path] = None, seed: int = 0, batch_size: int = 500,
             cascade: bool = True, meta: Optional[Mapping[str, Any]] = None) -> List[AttackResult]:
    """Run ``attacks`` cheapest first (see the module docstring); one result per attack, in run order.

    ``n_eval`` examples for PGD-family attacks, ``n_eval_aa`` for AutoAttack
    ones (0 = the whole test set). With ``cascade=False`` every attack runs on
    every clean-correct example. ``meta`` (the ticket's meta.json) enables the
    sparsity and frozen-weight checks.
    """
    model.eval()
    # Instantiate, size and order the attacks: PGD family by cost, then AutoAttack family by cost.
    chosen = []
    for name in dict.fromkeys(attacks):
        attack = make_attack(name, eps, seed=seed)
        chosen.append((name, attack, len(test.head(n_eval_aa if attack.cascade_only else n_eval))))
    order = sorted(chosen, key=lambda t: (t[1].cascade_only, t[1].cost))
    if not order:
        return []
    n_all = max(n for _, _, n in order)
    before = model_fingerprint(model)
    folder = cache_dir / hashlib.sha256(json.dumps(before, sort_keys=True).encode()).hexdigest()[:12] if cache_dir else None
    correct = CleanStore(folder / "clean" if folder else None, {}).flags(model, test, n_all, device, batch_size)
    any_eot = any(a.uses_eot for _, a, _ in order)
    run_flags = _probe_flags(model, test, correct, device, any_eot) | _meta_flags(meta, model)

    # The cascade: each attack's row flags; cascade-only attacks attack only what is still robust.
    prior = correct.clone()
    stores: Dict[str, AttackStore] = {}
    rows: List[Tuple[str, Attack, int, str, torch.Tensor]] = []
    done: List[str] = []
    for name, attack, n in tqdm(order, desc="attacks", unit="attack", leave=False):
        store = stores[name] = attack_store(folder, name, attack)
        need = prior[:n] if (cascade and attack.cascade_only) else correct[:n]
        run_attack(model, test, attack, store, need, device, batch_size)
        tried, robust = store["tried"][:n], store["robust"][:n]
        if bool((tried | ~correct[:n]).all()):
            flags, scope = correct[:n] & robust, "alone"
        else:
            flags, scope = prior[:n] & robust, "after:" + "+".join(done)
        prior[:n] &= flags
        rows.append((name, attack, n, scope, flags))
        done.append(name)

    # Checks after attacking: modes, parameters and buffers unchanged, per-row signals.
    if any(m.training for m in model.modules()):
        run_flags.add("train_mode")
    after = model_fingerprint(model)
    changed = [k for k in before if after.get(k) != before[k]]
    buffers = {k for k, _ in model.named_buffers()}
    if any(k in buffers for k in changed):
        run_flags.add("train_mode")
    if any(k not in buffers for k in changed):
        run_flags.add("frozen_moved")
    per_row = _row_flags(order, stores, correct)

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
    return AttackResult("worst_case", {"norm": "Linf", "eps": results[0].settings["eps"], "steps": "", "step_size": "",
                                       "restarts": "", "eot_samples": "", "version": names},
                        n, clean, float(flags.float().mean()), sum(r.seconds for r in results), flags,
                        "all", tuple(sorted(union)))


def describe_flags(flags: Iterable[str]) -> List[str]:
    """One warning line per flag, pointing to docs/flags.md."""
    return [f"WARNING {f}: {FLAG_DESCRIPTIONS.get(f, f)} (docs/flags.md#{f})" for f in sorted(set(flags))]
