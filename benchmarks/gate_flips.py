"""How many examples flip under benign float changes: the exact gate's tolerance, measured.

Re-evaluates every committed reference ticket (``results/reference/tickets``)
under changes that should not matter — 1 vs 2 torch threads, and another
evaluation batch size (which also moves the per-chunk attack seeds) — and
counts, per attack, the examples whose flag differs from the committed one:

    python benchmarks/gate_flips.py [--batch-sizes 500 250] [--threads 1 2]
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from bench.core import paths
from bench.evaluation.evaluate import correct_flags, evaluate
from bench.gate.check import REFERENCE_DIR
from bench.gate.exact import CLEAN, FLAGS, allowed_flips, fresh_run_folder, read_flags
from bench.harness import find_or_load_ticket
from bench.methods.ticket import read_spec


def flags_under(folder: Path, threads: int, batch_size: int, work: Path) -> dict:
    """Per-example flags of one committed ticket evaluated with ``threads`` and ``batch_size``."""
    torch.set_num_threads(threads)
    spec = read_spec(folder)
    run_dir = fresh_run_folder(folder, work, folder.name)
    ticket = find_or_load_ticket(spec, work, None, must_exist=True)
    n_aa = spec.n_eval_aa if spec.n_eval_aa is not None else 100
    results = evaluate(ticket.model, ticket.data.test, spec.eval_attacks, spec.eps_value, spec.n_eval, n_aa,
                       ticket.device, paths.eval_root(run_dir), seed=spec.seed, batch_size=batch_size, meta=ticket.meta)
    with torch.no_grad():
        clean = correct_flags(ticket.model, ticket.data.test.subset(torch.arange(spec.n_eval)), ticket.device)
    out = {CLEAN: clean.numpy().astype(np.uint8)}
    out.update({r.attack: r.robust.numpy().astype(np.uint8) for r in results})
    return out


def main() -> None:
    """Print one markdown row per (ticket, setting, attack)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tickets", type=Path, default=REFERENCE_DIR / "tickets")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[500, 250])
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="gate-flips-"))
    print("| ticket | threads | batch | attack | n | flips vs committed | allowed |")
    print("|---|---|---|---|---|---|---|")
    for folder in sorted(p for p in args.tickets.iterdir() if p.is_dir()):
        ref = read_flags(folder / FLAGS)
        settings = [(t, args.batch_sizes[0]) for t in args.threads] + [(args.threads[0], b) for b in args.batch_sizes[1:]]
        for threads, batch in settings:
            now = flags_under(folder, threads, batch, work)
            for attack, want in ref.items():
                got = now.get(attack)
                flips = "missing" if got is None or got.shape != want.shape else str(int((got != want).sum()))
                print(f"| {folder.name} | {threads} | {batch} | {attack} | {len(want)} | {flips} | {allowed_flips(len(want))} |")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
