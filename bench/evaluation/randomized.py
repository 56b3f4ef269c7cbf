"""Evaluation of randomised tickets (random switches such as R2S).

A random switch (``bench.attacks.SwitchModel``: ``n_candidates``,
``candidate(k)``, ``ensemble()``, ``reseed(seed)``) gives a different answer
on every forward call, so one forward pass is not an accuracy. Here:

* every accuracy is the mean (and sample std) over ``draws`` independent
  inference draws of the switch on the same points: clean points for clean
  accuracy, each attack's adversarial points (crafted once) for robust
  accuracy; an example counts as robust in draw ``d`` when the switch is right
  on it clean and at its adversarial point in draw ``d``;
* every attack runs alone on every example that is clean-correct in at least
  one draw (no cascade; AutoAttack-family attacks on the first ``n_eval_aa``);
* ``worst_case`` lets the attacker pick, per example, the attack with the
  lowest robust rate over the draws (all attacks run, adaptive or not) and
  reports the mean and std over draws of that choice;
* an attack is *adaptive* when it accounts for the randomness: it averages
  gradients over random forward passes (EOT: ``eot-pgd``, ``autoattack-rand``)
  or attacks every candidate at once (``ensemble-pgd``). An evaluation with no
  adaptive attack marks every row ``non_adaptive`` (column and flag);
* the transfer matrix: PGD-20 crafted white-box on each candidate (rows,
  source), accuracy of each candidate on those points (columns, target);
  examples the source misclassifies clean are passed unperturbed. Its
  diagonal is each candidate's white-box PGD-20 robust accuracy.

Per-example, per-draw results are stored in ``<run>/eval/<model-digest>/``
after every chunk (resumable, never recomputed); draws are seeded from the
run seed, the attack and the chunk, so an evaluation is reproducible.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

from bench.attacks import Attack, SwitchModel, as_switch, attack_for_run
from bench.core import paths
from bench.core.io import atomic_json, atomic_write, mix_seed, model_fingerprint
from bench.core.results import AttackResult
from bench.core.store import Store
from bench.data import Split, to_float
from bench.evaluation.evaluate import attack_chunks, attack_store_path, model_folder
from bench.evaluation.flags import after_attack_flags, meta_flags, probe_flags, row_flags
from bench.methods.ticket import Ticket
from bench.nn.inference import ieee_float32

TRANSFER_ATTACK = "pgd20"


def mean_std(correct: torch.Tensor) -> Tuple[float, float]:
    """Mean and sample std over draws (rows) of per-draw accuracy; std 0 with one draw."""
    acc = correct.float().mean(1) if correct.shape[1] else torch.zeros(len(correct))
    std = float(acc.std()) if len(acc) > 1 else 0.0
    return float(acc.mean()), std


def draw_store(path: Optional[Path], draws: int, meta: Dict[str, Any]) -> Store:
    """Per-example, per-draw correctness of one evaluation item: ``tried`` (n) and ``correct`` (draws x n)."""
    return Store(path, {"tried": (torch.bool, False, ()), "correct": (torch.bool, False, (draws,))}, meta)


@torch.no_grad()
def draw_correct(switch: nn.Module, x: torch.Tensor, y: torch.Tensor, seeds: Sequence[int]) -> torch.Tensor:
    """(draws, len(x)) correctness of the switch, one reseeded draw per seed."""
    rows = []
    for s in seeds:
        as_switch(switch).reseed(s)
        rows.append((switch(x).argmax(1) == y).cpu())
    return torch.stack(rows)


def clean_draws(switch: nn.Module, test: Split, n: int, draws: int, seed: int, device: torch.device,
                batch_size: int, store: Store) -> torch.Tensor:
    """(draws, n) clean correctness, computing only examples not stored yet."""
    store.grow(n)
    todo = (~store["tried"][:n]).nonzero().squeeze(1)
    for start in range(0, len(todo), batch_size):
        sel = todo[start : start + batch_size]
        t0 = time.perf_counter()
        x, y = to_float(test.x[sel], device), test.y[sel].to(device)
        store["correct"][:, sel] = draw_correct(switch, x, y, [mix_seed(seed, "clean", d, int(sel[0])) for d in range(draws)])
        store["tried"][sel] = True
        store.add_seconds(time.perf_counter() - t0)
        store.save()
    return store["correct"][:, :n].clone()


def attack_draws(switch: nn.Module, test: Split, name: str, attack: Attack, need: torch.Tensor, draws: int, seed: int,
                 device: torch.device, batch_size: int, store: Store) -> torch.Tensor:
    """(draws, len(need)) correctness at the adversarial points of the examples in ``need`` (False elsewhere)."""
    n = len(need)
    store.grow(n)
    todo = (need & ~store["tried"][:n]).nonzero().squeeze(1)

    # The switch's draws inside the attack, then at the adversarial points, are seeded per chunk.
    def reseed(sel: torch.Tensor) -> None:
        as_switch(switch).reseed(mix_seed(seed, "attack", name, int(sel[0])))

    for chunk in attack_chunks(switch, test, attack, todo, device, batch_size, before=reseed):
        t0 = time.perf_counter()
        sel = chunk.sel
        store["correct"][:, sel] = draw_correct(switch, chunk.x_adv, chunk.y,
                                                [mix_seed(seed, "adv", name, d, int(sel[0])) for d in range(draws)])
        store["tried"][sel] = True
        store.add_seconds(chunk.seconds + time.perf_counter() - t0)
        store.save()
    return store["correct"][:, :n] & need


def switch_worst_case(robust: Dict[str, torch.Tensor], clean: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per example, the attack with the lowest robust rate over draws; returns (per-draw robust, chosen attack index)."""
    n = min(r.shape[1] for r in robust.values())
    stack = torch.stack([r[:, :n] for r in robust.values()])  # attacks x draws x examples
    choice = stack.float().mean(1).argmin(0)
    per_draw = stack[choice, :, torch.arange(n)].T & clean[:, :n]
    return per_draw, choice


@torch.no_grad()
def _correct(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-example correctness of a deterministic model."""
    return (model(x).argmax(1) == y).cpu()


def transfer_matrix(switch: nn.Module, test: Split, n: int, eps: float, seed: int, device: torch.device,
                    batch_size: int = 500, attack_name: str = TRANSFER_ATTACK) -> torch.Tensor:
    """K x K accuracies: row = candidate the attack was crafted on, column = candidate evaluated.

    Each source is attacked exactly as the harness attacks a deterministic
    model (its clean-correct examples, the same chunks and seeds), so the
    diagonal equals each candidate's white-box robust accuracy under
    ``attack_name``: with ``pgd20`` (early stopping, as RST's ``test_trans.py``)
    source points sit just past the source's boundary; ``pgd20:early_stop=False``
    transfers the last iterate of all 20 steps.
    """
    k_all = as_switch(switch).n_candidates
    views = [as_switch(switch).candidate(k) for k in range(k_all)]
    sub = test.head(n)
    x_all = to_float(sub.x, device)
    y_all = sub.y.to(device)
    clean = torch.stack([torch.cat([_correct(v, x_all[i : i + batch_size], y_all[i : i + batch_size])
                                    for i in range(0, len(y_all), batch_size)]) for v in views])
    matrix = torch.zeros(k_all, k_all)
    attack = attack_for_run(attack_name, eps, seed)
    for s, view in enumerate(views):
        x_adv = x_all.clone()
        for chunk in attack_chunks(view, sub, attack, clean[s].nonzero().squeeze(1), device, batch_size):
            x_adv[chunk.sel.to(device)] = chunk.x_adv
        for t, target in enumerate(views):
            adv_ok = torch.cat([_correct(target, x_adv[i : i + batch_size], y_all[i : i + batch_size])
                                for i in range(0, len(y_all), batch_size)])
            matrix[s, t] = (clean[t] & adv_ok).float().mean()
    return matrix


def transfer_frame(matrix: torch.Tensor, sparsities: Sequence[float]) -> pd.DataFrame:
    """The matrix as a table indexed by source candidate, one column per target candidate."""
    labels = [f"s={s:g}" for s in sparsities]
    return pd.DataFrame(matrix.numpy().round(6), index=pd.Index(labels, name="source"), columns=labels)


def transfer_markdown(frame: pd.DataFrame, n: int, attack_name: str = TRANSFER_ATTACK) -> str:
    """Markdown table of a transfer matrix (accuracies in percent), with its mean off-diagonal entry."""
    values = frame.to_numpy()
    k = len(values)
    off = float((values.sum() - np.trace(values)) / (k * k - k)) if k > 1 else float("nan")
    head = f"| {attack_name} source \\ target | " + " | ".join(frame.columns) + " |"
    rule = "|---|" + "---|" * k
    body = [f"| {idx} | " + " | ".join(f"{100 * v:.1f}" for v in row) + " |" for idx, row in zip(frame.index, values)]
    note = (f"\nRobust accuracy (%) of the column candidate on {attack_name} examples crafted on the row candidate, "
            f"first {n} test examples. Diagonal mean {100 * float(np.trace(values)) / k:.1f}, "
            f"off-diagonal mean {100 * off:.1f}.\n")
    return "\n".join([head, rule, *body]) + "\n" + note


# The transfer matrix's two protocols: RST's test_trans.py (early-stopped source points, just past the
# source's boundary) and the last iterate of all 20 steps (transfers better); file name suffix -> attack.
TRANSFER_PROTOCOLS = {"": TRANSFER_ATTACK, "full-steps": f"{TRANSFER_ATTACK}:early_stop=False"}


def write_transfer(switch: nn.Module, test: Split, n: int, eps: float, seed: int, device: torch.device,
                   run_dir: Path, model_digest: str) -> Dict[str, pd.DataFrame]:
    """``<run>/transfer.{csv,md}`` (early stop) and ``transfer-full-steps.{csv,md}``; each recomputed only when
    its examples, seed, attack or ticket change. Returns the frames by protocol."""
    frames: Dict[str, pd.DataFrame] = {}
    for protocol, attack_name in TRANSFER_PROTOCOLS.items():
        key = {"n": n, "eps": eps, "seed": seed, "attack": attack_name, "model": model_digest}
        csv_path, key_path = paths.transfer(run_dir, "csv", protocol), paths.transfer(run_dir, "json", protocol)
        if csv_path.exists() and key_path.exists() and json.loads(key_path.read_text()) == key:
            frames[protocol] = pd.read_csv(csv_path, index_col=0)
            continue
        matrix = transfer_matrix(switch, test, n, eps, seed, device, attack_name=attack_name)
        frame = frames[protocol] = transfer_frame(matrix, as_switch(switch).sparsities)
        atomic_write(csv_path, frame.to_csv())
        atomic_write(paths.transfer(run_dir, "md", protocol), transfer_markdown(frame, n, attack_name))
        atomic_json(key_path, key)
    return frames


@ieee_float32()
def evaluate_switch(ticket: Ticket, attack_names: Sequence[str], n_eval: int, n_eval_aa: int, draws: int,
                    batch_size: int = 500, norm: str = "Linf", eps: Optional[float] = None) -> List[AttackResult]:
    """Every requested attack on a random switch in the threat model ``norm`` at ``eps`` (default: the spec's
    budget), accuracies over ``draws`` draws, then ``worst_case``; the candidates' transfer matrix is the spec's
    threat model's only."""
    model, test, device, seed = ticket.model, ticket.data.test, ticket.device, ticket.spec.seed
    if not isinstance(model, SwitchModel):
        raise ValueError(f"{ticket.spec.method} tickets must be random switches (n_candidates, candidate(k), ensemble())")
    own = (norm, eps) in ((ticket.spec.norm, None), (ticket.spec.norm, ticket.spec.eps_value))
    eps = ticket.spec.eps_value if eps is None else eps
    model.eval()
    attacks = [(name, attack_for_run(name, eps, seed, norm)) for name in dict.fromkeys(attack_names)]
    sizes = {name: len(test.head(n_eval_aa if a.cascade_only else n_eval)) for name, a in attacks}
    n_all = max(sizes.values(), default=len(test.head(n_eval)))
    before = model_fingerprint(model)
    folder = model_folder(paths.eval_root(ticket.run_dir), model)
    assert folder is not None  # a run folder always has an evaluation cache

    # Clean correctness over draws, then the probe and meta checks (EOT-style randomness is expected here).
    clean_store = draw_store(folder / f"switch-clean-d{draws}", draws, {"what": "clean", "draws": draws})
    clean = clean_draws(model, test, n_all, draws, seed, device, batch_size, clean_store)
    run_flags = probe_flags(model, test, clean[0], device, any_adaptive=True) | meta_flags(ticket.meta, model)
    adaptive_any = any(a.adaptive for _, a in attacks)
    if not adaptive_any:
        run_flags.add("non_adaptive")

    # Each attack alone on every example clean-correct in some draw.
    robust: Dict[str, torch.Tensor] = {}
    seconds: Dict[str, float] = {}
    for name, attack in attacks:
        n = sizes[name]
        store = draw_store(attack_store_path(folder, "switch-", name, attack, f"-d{draws}"), draws,
                           {"attack": name, "settings": attack.settings(), "draws": draws})
        adv_ok = attack_draws(model, test, name, attack, clean[:, :n].any(0), draws, seed, device, batch_size, store)
        robust[name] = clean[:, :n] & adv_ok
        seconds[name] = store.seconds

    # Per-row checks on the expected robustness over draws; then nothing in the switch changed.
    clean_any = clean.any(0)
    order = [(name, attack, sizes[name]) for name, attack in attacks]
    expected = {name: {"tried": clean_any[: sizes[name]], "robust": robust[name].float().mean(0),
                       "broken_by": torch.full((sizes[name],), -1, dtype=torch.long)} for name, _ in attacks}
    per_row = row_flags(order, expected, clean_any)
    run_flags |= after_attack_flags(model, before)
    flags = tuple(sorted(run_flags))
    common = {"draws": draws, "randomized": True, "non_adaptive": not adaptive_any}

    results = []
    for name, attack in attacks:
        n = sizes[name]
        c_mean, c_std = mean_std(clean[:, :n])
        r_mean, r_std = mean_std(robust[name])
        results.append(AttackResult(name, {**attack.settings(), "cascade": False}, n, c_mean, r_mean, seconds[name],
                                    robust[name].all(0), "alone", tuple(sorted(set(flags) | per_row[name])),
                                    {**common, "clean_std": round(c_std, 6), "robust_std": round(r_std, 6),
                                     "adaptive": attack.adaptive}))
    if results:
        per_draw, _choice = switch_worst_case(robust, clean)
        n = per_draw.shape[1]
        c_mean, c_std = mean_std(clean[:, :n])
        r_mean, r_std = mean_std(per_draw)
        eot = max(int(a.settings().get("eot_samples") or 1) for _, a in attacks)
        results.append(AttackResult("worst_case", {"norm": norm, "eps": eps, "steps": "", "step_size": "", "restarts": "",
                                                   "eot_samples": eot, "version": "+".join(robust)},
                                    n, c_mean, r_mean, sum(seconds.values()), per_draw.all(0), "all",
                                    tuple(sorted(set(flags).union(*per_row.values()))),
                                    {**common, "clean_std": round(c_std, 6), "robust_std": round(r_std, 6),
                                     "adaptive": adaptive_any}))
    # The candidates' transfer matrix on the PGD examples (in the spec's L-inf threat model).
    if own and norm == "Linf":
        write_transfer(model, test, len(test.head(n_eval)), eps, seed, device, ticket.run_dir, folder.name)
    return results
