"""Robustness against what a ticket costs to run: multiply-accumulates, non-zero parameters or measured latency,
with the Pareto front of each family.

A point is one configuration (method, granularity, architecture, width, sparsity), its accuracy the mean over
seeds of the chosen attack's rows, its cost the mean of the cost column (the same for every seed but latency).
A point is on its family's (method's) front when no other point of the same method costs at most as much and is
at least as robust, one of them strictly. Rows without the cost column (made before it existed) are left out and
counted in the caption.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Tuple

import pandas as pd

from bench.core.rows import latest_rows
from bench.reporting.cells import check_cells
from bench.reporting.tables import caption_for

# Cost axes: name -> (row column, label). MACs count the conv and linear layers (bench.nn.cost).
COSTS: Dict[str, Tuple[str, str]] = {
    "macs": ("macs_ticket", "MACs of the ticket's non-zero weights"),
    "macs_compacted": ("macs_compacted", "MACs the compacted copy performs"),
    "params": ("params_nonzero", "non-zero parameters"),
    "latency_b1": ("latency_b1_ms", "CPU latency at batch 1 (ms; a ticket's compacted copy, a model made elsewhere as given)"),
    "latency_b128": ("latency_b128_ms", "CPU latency at batch 128 (ms; a ticket's compacted copy, a model made elsewhere "
                                        "as given)"),
}
# What makes one point (the seed varies inside it).
POINT_KEYS = ["method", "granularity", "arch", "width", "target_sparsity"]


@dataclass(frozen=True)
class CostPoints:
    """One row per configuration: accuracy mean/std/seeds, mean cost, whether it is on its method's front."""

    points: pd.DataFrame
    cost: str
    caption: str


def check_cost(cost: str) -> Tuple[str, str]:
    """The row column and label of a cost axis (``ValueError`` naming the choices)."""
    if cost not in COSTS:
        raise ValueError(f"unknown cost {cost!r}; choices: {', '.join(COSTS)}")
    return COSTS[cost]


def pareto_front(points: pd.DataFrame, cost: str = "cost", value: str = "mean") -> pd.Series:
    """True for the points no other point of the same method dominates (cost <=, value >=, one strictly)."""
    on = pd.Series(True, index=points.index)
    for _method, g in points.groupby("method"):
        for i, p in g.iterrows():
            others = g.drop(index=i)
            dominated = ((others[cost] <= p[cost]) & (others[value] >= p[value])
                         & ((others[cost] < p[cost]) | (others[value] > p[value])))
            on.at[i] = not bool(dominated.any())
    return on


def cost_points(df: pd.DataFrame, attack: str, cost: str, metric: str = "robust") -> CostPoints:
    """The points of ``attack``'s rows against ``cost`` (see the module docstring)."""
    column, label = check_cost(cost)
    rows = latest_rows(df, attack).copy()
    # Rows written before granularity existed pruned weights.
    rows["granularity"] = rows["granularity"].astype(object).where(rows["granularity"].astype(str) != "", "weight") \
        if "granularity" in rows else "weight"
    rows["granularity"] = rows["granularity"].fillna("weight")
    values = pd.to_numeric(rows[column], errors="coerce") if column in rows else pd.Series(float("nan"), index=rows.index)
    missing = int(values.isna().sum())
    rows = rows.assign(_cost=values)[values.notna()]
    if rows.empty:
        raise ValueError(f"no {attack} row carries {column} ({label}): rows written before the cost columns existed "
                         "have none; rows written since carry them (`bench eval RUN` with more attacks or examples writes such "
                         "rows for an older ticket)")
    check_cells(rows, POINT_KEYS)
    # Latencies compare only at one thread count (on one machine: the rows cannot tell machines apart).
    if column.startswith("latency") and "latency_threads" in rows:
        counts = sorted(set(rows["latency_threads"].astype(str)) - {"", "nan"})
        if len(counts) > 1:
            raise ValueError(f"latencies measured with {', '.join(counts)} threads: filter with --where "
                             "latency_threads=N")
    accuracy = ("clean_acc" if metric == "clean" else "robust_acc")
    grouped = rows.groupby(POINT_KEYS)
    points = grouped[accuracy].agg(["mean", "std", "count"]).mul([100, 100, 1]).reset_index()
    points["cost"] = grouped["_cost"].mean().to_numpy()
    points["front"] = pareto_front(points)
    caption = caption_for(rows, attack, f"{metric.capitalize()} accuracy (%) against {label}")
    caption += (" ★ = on its method's Pareto front (no point of the same method costs at most as much and is at least "
                "as robust, one of them strictly).")
    if missing:
        caption += f" {missing} row(s) without {column} left out."
    return CostPoints(points.sort_values(["method", "cost"]).reset_index(drop=True), cost, caption)


def render_points(points: CostPoints, fmt: str, decimals: int = 1) -> str:
    """The points as a Markdown, LaTeX or CSV table, one line per configuration."""
    _column, label = COSTS[points.cost]
    p = points.points
    table = pd.DataFrame({
        "method": p["method"], "granularity": p["granularity"], "arch": p["arch"], "width": p["width"].map(lambda v: f"{v:g}"),
        "sparsity": p["target_sparsity"].map(lambda v: f"{v:g}"), "seeds": p["count"].astype(int),
        "accuracy": [f"{m:.{decimals}f}" + (f" ± {s:.{decimals}f}" if n > 1 and pd.notna(s) else "")
                     for m, s, n in zip(p["mean"], p["std"], p["count"])],
        label: p["cost"].map(lambda v: f"{v:.4g}"), "front": p["front"].map(lambda on: "★" if on else ""),
    })
    if fmt == "csv":
        out = p.rename(columns={"mean": "accuracy_mean", "std": "accuracy_std", "count": "seeds", "cost": points.cost})
        return str(out.to_csv(index=False))
    if fmt == "latex":
        body = "\n".join(" & ".join(str(v).replace("★", r"$\star$").replace("±", r"$\pm$") for v in r) + r" \\"
                         for r in table.itertuples(index=False))
        head = " & ".join(table.columns) + r" \\"
        return (f"% {points.caption}\n\\begin{{tabular}}{{{'l' * len(table.columns)}}}\n\\toprule\n{head}\n"
                f"\\midrule\n{body}\n\\bottomrule\n\\end{{tabular}}\n")
    if fmt != "markdown":
        raise ValueError(f"unknown format {fmt!r}; choices: markdown, latex, csv")
    lines: List[str] = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(str(v) for v in r) + " |" for r in table.itertuples(index=False)]
    return "\n".join(lines) + f"\n\n{points.caption}\n"
