"""Ticket / reference robust-accuracy ratios from tidy rows, per seed and over seeds.

Each comparison pairs the ticket's and the reference's rows of the same seed
(same attack, same n_eval) and reports the ratio of the means and the mean ±
std of the per-seed ratios:

    python scripts/ratio_table.py results/study/runs.csv --attack pgd20 \\
        --pair "rst-0.9 / dense-at=method=rst,target_sparsity=0.9,width=0.5,epochs=8|method=dense-at,width=0.5,epochs=8"
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Dict, List, Tuple

import pandas as pd

from bench.core.results import read_rows


def select(rows: pd.DataFrame, spec: str, attack: str) -> Dict[int, float]:
    """Robust accuracy by seed of the rows matching ``col=value,...`` for ``attack`` (one row per seed).

    ``hp.NAME=value`` matches a method hyperparameter.
    """
    keep = rows["attack"] == attack
    for cond in spec.split(","):
        col, _, value = cond.partition("=")
        if col.startswith("hp."):
            # A method hyperparameter, read from the row's hparams JSON.
            values = rows["hparams"].map(lambda text, name=col[3:]: str(json.loads(text).get(name)))
            keep &= values == value
            continue
        if col not in rows.columns:
            raise ValueError(f"no column {col!r} in the rows")
        keep &= rows[col].astype(str) == value
    picked = rows[keep]
    if picked["seed"].duplicated().any():
        raise ValueError(f"{spec!r} matches more than one row per seed; add filters")
    return {int(s): float(r) for s, r in zip(picked["seed"], picked["robust_acc"])}


def compare(rows: pd.DataFrame, ticket: str, reference: str, attack: str) -> Tuple[int, float, float, float, float, float]:
    """(seeds, ticket mean, reference mean, ratio of means, mean and std of per-seed ratios)."""
    a, b = select(rows, ticket, attack), select(rows, reference, attack)
    seeds = sorted(set(a) & set(b))
    if not seeds:
        raise ValueError(f"no seed has rows for both {ticket!r} and {reference!r}")
    ratios: List[float] = [a[s] / b[s] for s in seeds]
    mean_a, mean_b = statistics.fmean(a[s] for s in seeds), statistics.fmean(b[s] for s in seeds)
    std = statistics.stdev(ratios) if len(ratios) > 1 else 0.0
    return len(seeds), mean_a, mean_b, mean_a / mean_b, statistics.fmean(ratios), std


def main() -> None:
    """Print one markdown row per ``--pair``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv", type=Path)
    parser.add_argument("--attack", default="pgd20")
    parser.add_argument("--pair", action="append", required=True,
                        help="'LABEL=TICKET_FILTERS|REFERENCE_FILTERS', filters as col=value,col=value")
    args = parser.parse_args()
    rows = read_rows(args.csv)
    print(f"| comparison ({args.attack}) | seeds | ticket (%) | reference (%) | ratio of means | per-seed ratio (mean ± std) |")
    print("|---|---|---|---|---|---|")
    for pair in args.pair:
        label, _, filters = pair.partition("=")
        ticket, _, reference = filters.partition("|")
        n, ma, mb, ratio, mr, sr = compare(rows, ticket, reference, args.attack)
        print(f"| {label} | {n} | {100 * ma:.1f} | {100 * mb:.1f} | {ratio:.3f} | {mr:.3f} ± {sr:.3f} |")


if __name__ == "__main__":
    main()
