"""Is each R2S run's reference candidate the very ticket of an RST run? Tensor by tensor.

R2S (tickets/r2s.py) takes each candidate from a finished ``rst`` run or trains it as a shared stage; its run's
meta.json names the source (``candidate_sources``, in the order of ``candidates``). This compares, for every R2S
run in ``R2S_OUT/runs``, the candidate at the run's own sparsity with the ``rst`` ticket of the same seed and
sparsity in ``RST_OUT/runs`` (results/published/r2s-reference holds those for the published R2S runs), and prints
one line per run. Exit 1 when a pair differs or is missing.

    python scripts/r2s_candidate_check.py ../grid/results/published results/published/r2s-reference
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch

from bench.core import paths
from bench.methods.ticket import read_meta, read_spec


def candidate_file(out: Path, meta: Dict[str, Any], sparsity: float) -> Path:
    """Where the R2S run's candidate at ``sparsity`` is stored (a shared stage's model or an rst run's ticket)."""
    candidates: List[float] = meta["candidates"]
    index = next(i for i, s in enumerate(candidates) if abs(s - sparsity) < 1e-9)
    kind, name = str(meta["candidate_sources"][index]).split(":", 1)
    if kind == "stage":
        return paths.stage_model(paths.stages_root(out) / name)
    return paths.ticket(paths.run_dir(out, name))


def rst_tickets(out: Path) -> Dict[Tuple[int, float], Path]:
    """The finished rst tickets of ``out``'s runs by (seed, sparsity)."""
    found = {}
    for run in sorted(paths.runs_root(out).glob("*/")):
        if not paths.ticket_finished(run):
            continue
        spec = read_spec(run)
        if spec.method == "rst" and paths.ticket(run).exists():
            found[(spec.seed, spec.sparsity)] = paths.ticket(run)
    return found


def same_tensors(a: Path, b: Path) -> bool:
    """Whether two state dicts hold the same names and equal tensors."""
    left = torch.load(a, map_location="cpu", weights_only=True)
    right = torch.load(b, map_location="cpu", weights_only=True)
    return left.keys() == right.keys() and all(torch.equal(left[k], right[k]) for k in left)


def main(argv: Optional[List[str]] = None) -> int:
    """Compare every R2S run's reference candidate with the rst ticket of its seed; one line each."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("r2s_out", type=Path, help="output folder of the R2S runs (runs/ and stages/)")
    parser.add_argument("rst_out", type=Path, help="output folder of the rst runs to compare with")
    args = parser.parse_args(argv)
    references = rst_tickets(args.rst_out)
    failed = checked = 0
    # One line per finished R2S run.
    for run in sorted(paths.runs_root(args.r2s_out).glob("*/")):
        if not paths.ticket_finished(run):
            continue
        spec = read_spec(run)
        if spec.method != "r2s":
            continue
        seed, sparsity = spec.seed, spec.sparsity
        mine = candidate_file(args.r2s_out, read_meta(run), sparsity)
        theirs = references.get((seed, sparsity))
        checked += 1
        if theirs is None or not mine.exists():
            failed += 1
            print(f"{run.name} seed {seed}: missing ({mine if not mine.exists() else 'no rst run'})")
            continue
        equal = same_tensors(mine, theirs)
        failed += not equal
        print(f"{run.name} seed {seed}: candidate {sparsity:g} {mine.parent.name} "
              f"{'equals' if equal else 'DIFFERS from'} rst {theirs.parent.name}")
    if not checked:
        raise ValueError(f"{args.r2s_out}/runs: no finished R2S run")
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ValueError as exc:
        print(f"r2s_candidate_check: {exc}", file=sys.stderr)
        sys.exit(2)
