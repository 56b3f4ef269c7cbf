"""Robustness evaluation of a ticket: clean accuracy, each attack, and the worst case.

The harness owns eval mode. Each attack runs only on the examples the model
classifies correctly; its per-example robust flags are cached in the run
folder, so a repeated or interrupted evaluation does not redo finished attacks.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from bench.attacks import AutoAttackRunner, make_attack
from bench.data import Split, batches


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


@torch.no_grad()
def correct_flags(model: nn.Module, split: Split, device: torch.device, batch_size: int = 500) -> torch.Tensor:
    """Per-example clean correctness (bool, on CPU)."""
    out = [(model(x).argmax(1) == y).cpu() for x, y in batches(split, batch_size, device)]
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.bool)


def robust_flags(model: nn.Module, split: Split, attack: Any, device: torch.device, batch_size: int) -> torch.Tensor:
    """Per-example robustness under ``attack`` (False where clean is already wrong)."""
    flags = correct_flags(model, split, device)
    idx = flags.nonzero().squeeze(1)
    for start in range(0, len(idx), batch_size):
        sel = idx[start : start + batch_size]
        x = split.x[sel].to(device).float().div(255.0)
        y = split.y[sel].to(device)
        x_adv = attack(model, x, y)
        # Never trust an attack's output blindly: re-check the budget and the box.
        if (x_adv - x).abs().max() > attack.settings()["eps"] + 1e-5 or x_adv.min() < 0 or x_adv.max() > 1:
            raise RuntimeError("attack returned a point outside the eps-ball or [0,1]")
        with torch.no_grad():
            flags[sel] = (model(x_adv).argmax(1) == y).cpu()
    return flags


def is_autoattack(name: str, eps: float) -> bool:
    """AutoAttack-family attacks default to a smaller subset on CPU."""
    return isinstance(make_attack(name, eps), AutoAttackRunner)


def evaluate(model: nn.Module, test: Split, attacks: Sequence[str], eps: float, n_eval: int, n_eval_aa: int,
             device: torch.device, cache_dir: Optional[Path] = None, seed: int = 0, batch_size: int = 500) -> List[AttackResult]:
    """Run every attack on its subset of the test set; cached per attack and size."""
    model.eval()
    results = []
    for name in tqdm(list(attacks), desc="attacks", unit="attack", leave=False):
        attack = make_attack(name, eps, seed=seed)
        n = n_eval_aa if isinstance(attack, AutoAttackRunner) else n_eval
        split = test.head(n)
        n = len(split)
        cache = cache_dir / f"{name}-n{n}.json" if cache_dir is not None else None
        if cache is not None and cache.exists():
            c = json.loads(cache.read_text())
            flags = torch.tensor(c["robust"], dtype=torch.bool)
            results.append(AttackResult(name, c["settings"], n, c["clean_acc"], float(flags.float().mean()), c["seconds"], flags))
            continue
        t0 = time.perf_counter()
        clean = correct_flags(model, split, device)
        flags = robust_flags(model, split, attack, device, batch_size)
        seconds = time.perf_counter() - t0
        res = AttackResult(name, attack.settings(), n, float(clean.float().mean()), float(flags.float().mean()), seconds, flags)
        results.append(res)
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_suffix(".tmp")
            tmp.write_text(json.dumps({"settings": res.settings, "clean_acc": res.clean_acc, "seconds": seconds,
                                       "robust": flags.tolist()}))
            tmp.replace(cache)
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
    return AttackResult("worst_case", {"norm": "Linf", "eps": results[0].settings["eps"], "steps": "", "step_size": "",
                                       "restarts": "", "eot_samples": "", "version": names},
                        n, clean, float(flags.float().mean()), sum(r.seconds for r in results), flags)
