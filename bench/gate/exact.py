"""The exact evaluation gate: committed reference tickets, re-evaluated, compared example by example.

``results/reference/tickets/<run_id>/`` holds a reference run's ``spec.json``,
``meta.json``, its compact ticket (seed + packed mask for RST, surviving
values otherwise; :mod:`bench.methods.compact`) and ``flags.npz``: the per-example
clean flags and, per attack, the per-example robust flags the reference
evaluation produced. ``bench check`` copies each ticket into a fresh folder,
evaluates it with the spec's fixed seeds (nothing is reused from an earlier
evaluation) and compares flag by flag. A gated quantity fails when more than
``max(MIN_FLIPS, FLIP_FRACTION * n)`` examples flip or its accuracy moves by
more than ``MAX_DELTA``. Training is not involved, so any change of an
attack, the evaluation or the model code shows up as flips (a PGD-20 that
silently runs 5 steps flips the examples it no longer breaks).
"""
from __future__ import annotations

import dataclasses
import math
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from bench.core import paths
from bench.core.io import atomic_json, atomic_npz
from bench.data import DataNotFoundError
from bench.evaluation.evaluate import correct_flags
from bench.harness import evaluate_run, find_or_load_ticket
from bench.methods.compact import save_compact
from bench.methods.ticket import Ticket, load_ticket, read_spec
from bench.spec import RunSpec

FLAGS = "flags.npz"
CLEAN = "clean"
# A quantity fails when more than max(MIN_FLIPS, FLIP_FRACTION * n) examples flip or it moves more than MAX_DELTA.
MIN_FLIPS = 2
FLIP_FRACTION = 0.005
MAX_DELTA = 0.01
# What a reference ticket folder holds (and what is copied to evaluate it afresh).
TICKET_FILES = ("spec.json", "meta.json", "ticket.compact.pt")


@dataclass(frozen=True)
class GateLine:
    """One gated quantity: reference and current accuracy, flips and what is allowed."""

    run_id: str
    method: str
    attack: str
    n: int
    reference: float
    now: float
    flips: int
    allowed_flips: int
    verdict: str

    @property
    def delta(self) -> float:
        """Current minus reference accuracy."""
        return self.now - self.reference

    def text(self) -> str:
        """One line: run, attack, reference, now, delta, flips / allowed, verdict."""
        return (f"eval  {self.run_id} {self.method:<9} {self.attack:<11} n={self.n:<5} ref {self.reference:.4f}  "
                f"now {self.now:.4f}  delta {self.delta:+.4f} (allowed ±{MAX_DELTA:.2f})  "
                f"flips {self.flips} (allowed {self.allowed_flips})  {self.verdict}")


def allowed_flips(n: int) -> int:
    """Examples allowed to flip among ``n``: ``max(MIN_FLIPS, FLIP_FRACTION * n)`` rounded down."""
    return max(MIN_FLIPS, int(math.floor(FLIP_FRACTION * n)))


def fresh_run_folder(source: Path, work: Path, run_id: str) -> Path:
    """``work/runs/<run_id>/`` holding only the committed ticket files of ``source`` (no evaluation cache)."""
    run_dir = paths.run_dir(work, run_id)
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    for name in TICKET_FILES:
        shutil.copyfile(source / name, run_dir / name)
    return run_dir


def per_example_flags(ticket: Ticket, n_eval: Optional[int] = None) -> Dict[str, np.ndarray]:
    """Clean flags on the first ``n_eval`` test examples and every attack's robust flags (uint8)."""
    results = evaluate_run(ticket)
    n = ticket.spec.n_eval if n_eval is None else n_eval
    n = len(ticket.data.test) if n == 0 else min(n, len(ticket.data.test))
    ticket.model.eval()
    with torch.no_grad():
        clean = correct_flags(ticket.model, ticket.data.test.subset(torch.arange(n)), ticket.device)
    flags = {CLEAN: clean.numpy().astype(np.uint8)}
    for r in results:
        flags[r.attack] = r.robust.cpu().numpy().astype(np.uint8)
    return flags


def write_reference_tickets(specs: Sequence[RunSpec], dest: Path, out: Path, data_root: Optional[str],
                            attacks: Sequence[str]) -> List[str]:
    """Copy each spec's finished run (in ``out``) into ``dest/<run_id>/`` as a compact ticket with its per-example
    flags under ``attacks``; returns the run ids. The written ``spec.json`` is the preset's spec with ``attacks``
    (what the gate replays, on the preset's ``n_eval``)."""
    written = []
    for preset_spec in specs:
        spec = dataclasses.replace(preset_spec.resolve(), eval_attacks=tuple(attacks))
        run_dir = paths.run_dir(out, spec.run_id)
        target = dest / spec.run_id
        target.mkdir(parents=True, exist_ok=True)
        # Runs made before compact tickets existed get theirs now.
        if not paths.compact_ticket(run_dir).exists():
            save_compact(paths.compact_ticket(run_dir), load_ticket(run_dir), read_spec(run_dir))
        for name in TICKET_FILES:
            shutil.copyfile(run_dir / name, target / name)
        atomic_json(paths.spec(target), spec.to_dict())
        # Flags from a fresh evaluation of the committed files, exactly as the gate will replay them (an
        # evaluation cache grown in steps draws other per-chunk attack seeds).
        fresh = out / "eval-gate-update"
        fresh_run_folder(target, fresh, spec.run_id)
        ticket = find_or_load_ticket(spec, fresh, data_root, must_exist=True)
        atomic_npz(target / FLAGS, per_example_flags(ticket))
        written.append(spec.run_id)
    return written


def read_flags(path: Path) -> Dict[str, np.ndarray]:
    """The committed flags of a reference ticket (``ValueError`` when absent or unreadable)."""
    if not path.exists():
        raise ValueError(f"reference ticket flags not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k].copy() for k in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(f"cannot read {path} ({type(exc).__name__}): re-create it with bench check --update") from None


def compare_flags(run_id: str, method: str, ref: Dict[str, np.ndarray], now: Dict[str, np.ndarray]) -> List[GateLine]:
    """One line per committed quantity; a quantity missing now, or of another length, fails."""
    lines = []
    for attack, want in ref.items():
        got = now.get(attack)
        if got is None or got.shape != want.shape:
            lines.append(GateLine(run_id, method, attack, len(want), float(want.mean()), math.nan, len(want),
                                  allowed_flips(len(want)), "MISSING"))
            continue
        flips = int((want != got).sum())
        line = GateLine(run_id, method, attack, len(want), float(want.mean()), float(got.mean()), flips,
                        allowed_flips(len(want)), "pass")
        ok = flips <= line.allowed_flips and abs(line.delta) <= MAX_DELTA + 1e-12
        lines.append(line if ok else dataclasses.replace(line, verdict="FAIL"))
    return lines


def exact_gate(ref_dir: Path, work: Path, data_root: Optional[str]) -> Tuple[List[GateLine], List[str]]:
    """Evaluate every committed reference ticket afresh in ``work``; returns the lines and the skipped runs."""
    if not ref_dir.is_dir() or not any(ref_dir.iterdir()):
        raise ValueError(f"no reference tickets in {ref_dir} (create them with bench check --update)")
    lines: List[GateLine] = []
    skipped: List[str] = []
    for folder in sorted(p for p in ref_dir.iterdir() if p.is_dir()):
        ref = read_flags(folder / FLAGS)
        spec = read_spec(folder)
        # A fresh run folder: the committed files only, no evaluation cache.
        fresh_run_folder(folder, work, folder.name)
        try:
            ticket = find_or_load_ticket(spec, work, data_root, must_exist=True)
        except DataNotFoundError:
            skipped.append(folder.name)
            continue
        lines += compare_flags(folder.name, spec.method, ref, per_example_flags(ticket))
    return lines, skipped
