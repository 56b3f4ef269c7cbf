"""Validation accuracies of finished runs, mean ± std over seeds, grouped by spec fields.

Settings are chosen on these numbers (the held-out validation split each run
records in ``meta.json``), never on the test rows of ``runs.csv``:

    python scripts/validation_table.py results/study --by method craft_bn --where sparsity=0.9,0.0 epochs=8
"""
from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

from bench.core import paths
from bench.methods.ticket import read_meta, read_spec


def final_stage(meta: Dict[str, Any]) -> Dict[str, Any]:
    """The record of the stage that produced the ticket (a reused dense stage records itself apart)."""
    stages = meta.get("stages") or []
    if stages:
        last: Dict[str, Any] = stages[-1]
        return last
    dense: Dict[str, Any] = meta.get("dense_stage", {})
    return dense


def matches(spec: Dict[str, Any], where: Sequence[str]) -> bool:
    """``field=a,b`` keeps specs whose field (or hyperparameter) is one of the values."""
    for cond in where:
        key, _, values = cond.partition("=")
        value = spec.get(key, spec["hparams"].get(key))
        if str(value) not in values.split(","):
            return False
    return True


def collect(out: Path, by: Sequence[str], where: Sequence[str]) -> Dict[Tuple[str, ...], List[Tuple[float, float]]]:
    """(val_clean, val_robust) of every finished run, grouped by the ``by`` fields."""
    groups: Dict[Tuple[str, ...], List[Tuple[float, float]]] = {}
    for run_dir in sorted(paths.runs_root(out).iterdir()):
        if not paths.ticket_finished(run_dir):
            continue
        spec = read_spec(run_dir).to_dict()
        if not matches(spec, where):
            continue
        record = final_stage(read_meta(run_dir))
        key = tuple(str(spec.get(b, spec["hparams"].get(b))) for b in by)
        groups.setdefault(key, []).append((float(record["val_clean"]), float(record["val_robust"])))
    return groups


def cell(values: Sequence[float]) -> str:
    """Mean ± std in percent (std over seeds; 0 for one run)."""
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.fmean(values):.1f} ± {100 * std:.1f}"


def main() -> None:
    """Print the markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="output folder of the runs (holds runs/)")
    parser.add_argument("--by", nargs="+", default=["method"], help="spec fields or hyperparameters to group by")
    parser.add_argument("--where", nargs="*", default=[], help="field=value[,value] filters")
    args = parser.parse_args()
    groups = collect(args.out, args.by, args.where)
    print("| " + " | ".join(args.by) + " | runs | val clean (%) | val PGD robust (%) |")
    print("|" + "---|" * (len(args.by) + 3))
    for key, vals in sorted(groups.items()):
        print("| " + " | ".join(key) + f" | {len(vals)} | {cell([c for c, _ in vals])} | {cell([r for _, r in vals])} |")


if __name__ == "__main__":
    main()
