"""Paper-style tables from tidy ``runs.csv`` files, built with pandas.

Three layouts (all accuracies in percent, aggregated over seeds):

- ``sparsity``: rows = target sparsity, columns = method, cells = mean ± std
  of robust (or clean) accuracy under one attack or the worst case (RST paper);
- ``method``: rows = method, columns = architecture x sparsity, cells =
  "clean / robust" means (Adversarial Pruning Benchmark);
- ``width``: rows = width multiplier, columns = sparsity or method.

Each table carries a caption with dataset, eps, attack, n_eval and the
training budget; :mod:`bench.reporting.render` writes it as Markdown, LaTeX or a CSV
pivot. A cell must aggregate runs that differ only in their seed
(:mod:`bench.reporting.cells`); anything else is an error that names the columns to
filter on (``--where``). Which rows count is :mod:`bench.core.rows`' rule.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Optional, Tuple

import pandas as pd

from bench.core.results import format_eps
from bench.core.rows import latest_rows
from bench.reporting.cells import check_cells
from bench.reporting.stats import REFERENCE_LEVEL, pooled_counts, pooled_interval, reference_marks

LAYOUTS = ("sparsity", "method", "width")
LABELS = {"target_sparsity": "sparsity", "method": "method", "width": "width", "arch": "arch"}


@dataclass(frozen=True)
class Table:
    """A pivot: numeric aggregates per (row, column) cell plus what the caption needs.

    ``mean``/``std``/``n`` hold the ranked metric (robust accuracy, or clean with
    ``metric='clean'``) in percent; ``clean`` the clean-accuracy mean (method
    layout); ``flagged`` marks cells with a run that has flags (or ``non_adaptive``).
    """

    layout: str
    row_name: str
    col_names: Tuple[str, ...]
    mean: pd.DataFrame
    std: pd.DataFrame
    n: pd.DataFrame
    clean: Optional[pd.DataFrame]
    flagged: pd.DataFrame
    caption: str
    flags: Tuple[str, ...]
    # 95 % Wilson interval (percent) of the ranked metric over each cell's pooled examples, when asked for.
    low: Optional[pd.DataFrame] = None
    high: Optional[pd.DataFrame] = None
    # With a reference method: True where a cell does not differ significantly from the reference's cell.
    same_as_reference: Optional[pd.DataFrame] = None


def span(values: pd.Series, unit: str = "") -> str:
    """'5' or '5-10' (with an optional unit) for the distinct values of a column."""
    vals = sorted(set(pd.to_numeric(values, errors="coerce").dropna()))
    if not vals:
        return "?"
    fmt = lambda v: f"{v:g}"  # noqa: E731 - tiny local formatter
    return (fmt(vals[0]) if len(vals) == 1 else f"{fmt(vals[0])}-{fmt(vals[-1])}") + unit


def caption_for(rows: pd.DataFrame, attack: str, what: str, std_shown: bool = True) -> str:
    """Dataset, eps, attack, n_eval, seeds and the training budget of the rows in a table."""
    datasets = sorted(rows["dataset"].astype(str).unique())
    eps = sorted(set(rows["eps"].round(8)))
    norms = sorted(rows["norm"].astype(str).unique()) if "norm" in rows else ["Linf"]
    if len(datasets) > 1 or len(eps) > 1 or len(norms) > 1:
        raise ValueError(f"rows span several datasets/threat models ({', '.join(datasets)}; {', '.join(norms)}; eps "
                         f"{', '.join(map(str, eps))}): filter with --where dataset=... --where norm=... --where eps=...")
    attack_text = attack
    if attack == "worst_case" and "version" in rows:
        combos = sorted(rows["version"].astype(str).unique())
        attack_text = "worst case over " + " | ".join(c.replace("+", ", ") for c in combos)
    seeds = rows.groupby([c for c in ("method", "arch", "width", "target_sparsity") if c in rows])["seed"].nunique()
    if "scope" in rows and rows["scope"].astype(str).str.startswith("after:").any():
        after = sorted({sc[len("after:"):].replace("+", ", ") for sc in rows["scope"].astype(str) if sc.startswith("after:")})
        attack_text += f" (cascade: run only on points still robust after {' | '.join(after)})"
    norm_text = {"Linf": "L-inf"}.get(norms[0], norms[0])
    parts = [f"{what} on {datasets[0]}", f"{norm_text} eps {format_eps(eps[0])}", f"attack: {attack_text}",
             f"n_eval {span(rows['n_eval'])} test examples"]
    if seeds.max() > 1:
        parts.append(f"{'means' if std_shown is False else 'mean ± std'} over {span(seeds)} seeds")
    else:
        parts.append("1 seed")
    budget = []
    if "epochs" in rows:
        budget.append(f"{span(rows['epochs'])} epoch(s)")
    if "train_steps" in rows:
        budget.append(f"PGD-{span(rows['train_steps'])} training")
    if "data_source" in rows:
        budget.append("data " + "/".join(sorted(rows["data_source"].astype(str).unique())))
    if "n_train" in rows and pd.to_numeric(rows["n_train"], errors="coerce").fillna(0).max() > 0:
        budget.append(f"{span(rows['n_train'])} training examples")
    if budget:
        parts.append("budget: " + ", ".join(budget))
    return "; ".join(parts) + "."


def row_flags(rows: pd.DataFrame) -> pd.Series:
    """Each row's flags as a ';'-joined string: the ``flags`` column plus ``non_adaptive`` when that column is true."""
    flags = rows["flags"].astype(str).str.strip() if "flags" in rows else pd.Series("", index=rows.index)
    if "non_adaptive" in rows:
        marked = rows["non_adaptive"].astype(str).str.strip().str.lower().isin(["true", "1", "yes"])
        flags = flags.where(~marked, (flags + ";non_adaptive").str.strip(";"))
    return flags


def _flag_names(flags: pd.Series) -> Tuple[str, ...]:
    """Distinct flag names in a series of ';'-separated flag strings."""
    names: set[str] = set()
    for text in flags:
        names.update(f for f in re.split(r"[;,|\s]+", text) if f)
    return tuple(sorted(names))


def build_table(df: pd.DataFrame, layout: str, attack: str = "worst_case", metric: str = "robust",
                columns: Optional[str] = None, interval: bool = False, reference: Optional[str] = None) -> Table:
    """Aggregate tidy rows into one of the three layouts (see the module docstring).

    With ``interval`` each cell also gets the 95 % Wilson score interval of its accuracy over the test
    examples of all its runs pooled (accuracy x n_eval correct of n_eval, summed over seeds). With
    ``reference`` (a method; layouts whose columns are methods) cells that do not differ significantly from
    the reference's are marked ‡ (:func:`reference_marks`).
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown table layout {layout!r}; choices: {', '.join(LAYOUTS)}")
    if metric not in ("robust", "clean"):
        raise ValueError(f"unknown metric {metric!r}; choices: robust, clean")
    rows = latest_rows(df, attack).copy()
    rows["robust_pct"] = rows["robust_acc"] * 100
    rows["clean_pct"] = rows["clean_acc"] * 100
    rows["all_flags"] = row_flags(rows)
    rows["flagged"] = rows["all_flags"] != ""
    # Row and column keys of each layout.
    if layout == "sparsity":
        row_key, col_keys = "target_sparsity", ["method"]
    elif layout == "method":
        row_key, col_keys = "method", ["arch", "target_sparsity"]
    else:
        col = columns or "target_sparsity"
        if col not in ("target_sparsity", "sparsity", "method"):
            raise ValueError(f"width table columns must be sparsity or method, got {col!r}")
        row_key, col_keys = "width", ["target_sparsity" if col == "sparsity" else col]
    keys = [row_key] + col_keys
    check_cells(rows, keys)
    value = "clean_pct" if metric == "clean" else "robust_pct"
    grouped = rows.groupby(keys)
    stats = grouped[value].agg(["mean", "std", "count"])
    flagged = grouped["flagged"].any()
    clean = grouped["clean_pct"].mean() if layout == "method" else None

    def wide(series: pd.Series) -> pd.DataFrame:
        """Row key down, column key(s) across."""
        return series.unstack(col_keys).sort_index().sort_index(axis=1)

    what = {"sparsity": f"{metric} accuracy (%) by sparsity and method",
            "method": "clean / robust accuracy (%) by method, architecture and sparsity",
            "width": f"{metric} accuracy (%) by width and {LABELS.get(col_keys[0], col_keys[0])}"}[layout]
    caption = caption_for(rows, attack, what.capitalize(), std_shown=layout != "method")
    flags = _flag_names(rows["all_flags"])
    if flags:
        caption += f" † = a run in the cell is flagged ({', '.join(flags)})."
    low = high = None
    if interval:
        bounds = pooled_interval(rows, keys, "clean_acc" if metric == "clean" else "robust_acc")
        low, high = wide(bounds["lo"]), wide(bounds["hi"])
        caption += (f" [a, b] = 95 % Wilson score interval of the {metric} accuracy over the cell's test examples, "
                    "all seeds pooled.")
    same = None
    if reference is not None:
        if col_keys != ["method"]:
            raise ValueError("--reference compares methods: use --layout sparsity, or --layout width --columns method")
        present = sorted(rows["method"].astype(str).unique())
        if reference not in present:
            raise ValueError(f"--reference {reference!r} has no rows in this table; methods: {', '.join(present)}")
        counts = pooled_counts(rows, keys, "clean_acc" if metric == "clean" else "robust_acc")
        same = reference_marks(counts, reference).reindex(index=wide(stats["mean"]).index,
                                                           columns=wide(stats["mean"]).columns).eq(True)
        caption += (f" ‡ = not significantly different from {reference} (two-sided Fisher's exact test on the pooled "
                    f"test examples, level {REFERENCE_LEVEL:g}; unpaired, so conservative for the same examples).")
    return Table(layout, row_key, tuple(col_keys), wide(stats["mean"]), wide(stats["std"]), wide(stats["count"]),
                 wide(clean) if clean is not None else None, wide(flagged).fillna(False).astype(bool), caption, flags,
                 low, high, same)


def transpose_table(table: Table) -> Table:
    """The same table with rows and columns swapped: methods down and sparsities (or widths) across, as the
    published grid's tables are laid out. Only tables with one column key (sparsity and width layouts)."""
    if len(table.col_names) != 1 or table.layout == "method":
        raise ValueError("--transpose swaps one row key and one column key: use --layout sparsity or width")

    def swap(frame: Optional[pd.DataFrame]) -> Optional[pd.DataFrame]:
        return None if frame is None else frame.T.sort_index().sort_index(axis=1)

    words = {"target_sparsity": "sparsity", "width": "width", "method": "method"}
    row, col = words.get(table.row_name, table.row_name), words.get(table.col_names[0], table.col_names[0])
    caption = table.caption.replace(f"by {row} and {col}", f"by {col} and {row}", 1)
    flagged = swap(table.flagged)
    return dataclasses.replace(table, row_name=table.col_names[0], col_names=(table.row_name,), mean=swap(table.mean),
                               std=swap(table.std), n=swap(table.n), clean=swap(table.clean),
                               flagged=flagged if flagged is not None else table.flagged, caption=caption,
                               low=swap(table.low), high=swap(table.high),
                               same_as_reference=swap(table.same_as_reference))
