"""Paper-style tables from tidy ``runs.csv`` files, built with pandas.

Three layouts (all accuracies in percent, aggregated over seeds):

- ``sparsity``: rows = target sparsity, columns = method, cells = mean ± std
  of robust (or clean) accuracy under one attack or the worst case (RST paper);
- ``method``: rows = method, columns = architecture x sparsity, cells =
  "clean / robust" means (Adversarial Pruning Benchmark);
- ``width``: rows = width multiplier, columns = sparsity or method.

Rendered as Markdown, LaTeX (booktabs, best value per column in bold, a
caption with dataset, eps, attack, n_eval and the training budget) or a CSV
pivot. A cell must aggregate runs that differ only in their seed; anything
else is an error that names the columns to filter on (``--where``).
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import pandas as pd
from scipy.stats import fisher_exact

from bench.results import CURVE_ATTACKS, format_eps, read_rows, wilson_interval
from bench.spec import METHODS, RunSpec, config_columns

# Columns that define a run (besides the row/column keys and the seed), derived from the spec's groups; a table
# cell must not mix values of these.
CONFIG_COLUMNS = config_columns()
# A row without a method protocol was made before protocols existed: protocol 1.
FIRST_PROTOCOL = 1
LAYOUTS = ("sparsity", "method", "width")
FORMATS = ("markdown", "latex", "csv")
LABELS = {"target_sparsity": "sparsity", "method": "method", "width": "width", "arch": "arch"}
# Significance level of the --reference marks (two-sided Fisher's exact test on pooled examples).
REFERENCE_LEVEL = 0.05


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


def load_rows(paths: Sequence[Union[str, Path]]) -> pd.DataFrame:
    """Concatenate one or more tidy CSVs (numeric columns parsed)."""
    if not paths:
        raise ValueError("give at least one runs.csv")
    frames = []
    for p in paths:
        if not Path(p).exists():
            raise ValueError(f"results file not found: {p}")
        frames.append(read_rows(Path(p)))
    df = pd.concat(frames, ignore_index=True)
    if df.empty:
        raise ValueError(f"{', '.join(map(str, paths))}: no rows (a header and nothing else)")
    return df


def _matches(series: pd.Series, wanted: Sequence[str]) -> pd.Series:
    """Element-wise: equal as strings, or equal as numbers when both sides are numeric."""
    text = series.astype(str)
    hit = text.isin(wanted)
    numbers = []
    for w in wanted:
        try:
            numbers.append(float(w))
        except ValueError:
            continue
    if numbers:
        values = pd.to_numeric(series, errors="coerce")
        hit |= values.apply(lambda v: any(math.isclose(v, w, rel_tol=1e-9, abs_tol=1e-12) for w in numbers) if pd.notna(v) else False)
    return hit


def apply_filters(df: pd.DataFrame, where: Sequence[str]) -> pd.DataFrame:
    """Keep rows matching every ``col=value`` (``col=a,b`` means a or b; ``col!=value`` excludes)."""
    for clause in where:
        m = re.fullmatch(r"\s*([A-Za-z_][\w.]*)\s*(!=|=)\s*(.*)", clause)
        if not m:
            raise ValueError(f"--where {clause!r}: expected COLUMN=VALUE or COLUMN!=VALUE")
        col, op, value = m.groups()
        if col not in df.columns:
            raise ValueError(f"--where {clause!r}: unknown column {col!r}; columns: {', '.join(df.columns)}")
        hit = _matches(df[col], [v.strip() for v in value.split(",")])
        # A filter that leaves nothing says what the column holds.
        if not (hit if op == "=" else ~hit).any():
            values = sorted(df[col].astype(str).unique())
            shown = ", ".join(values[:10]) + (", ..." if len(values) > 10 else "")
            raise ValueError(f"--where {clause!r} leaves no rows; {col} holds: {shown}")
        df = df[hit if op == "=" else ~hit]
    return df


def latest_rows(df: pd.DataFrame, attack: str) -> pd.DataFrame:
    """One row per run for ``attack``: the largest n_eval, an attack-alone row over a cascade row, then the newest."""
    if df.empty:
        raise ValueError("no rows")
    if attack in CURVE_ATTACKS:
        raise ValueError(f"{attack} rows are a security curve (one row per eps), not one figure per run; "
                         "draw them with bench plot --kind security")
    sub = df[df["attack"] == attack]
    if "status" in sub:
        sub = sub[sub["status"].astype(str).isin(["ok", ""])]
    if sub.empty:
        present = ", ".join(sorted(df["attack"].astype(str).unique()))
        raise ValueError(f"no rows for attack {attack!r}; attacks present: {present} "
                         f"(worst_case exists only for runs evaluated with 2+ attacks)")
    # Most examples first, then the attack-alone row over a cascade row, then the newest.
    sub = sub.assign(_alone=sub["scope"].astype(str).isin(["alone", "all", ""]) if "scope" in sub else True)
    order = [c for c in ("n_eval", "_alone", "created_at") if c in sub]
    return sub.sort_values(order, kind="mergesort").drop_duplicates("run_id", keep="last").drop(columns="_alone")


def latest_curves(df: pd.DataFrame) -> pd.DataFrame:
    """The security-curve rows (``CURVE_ATTACKS``) of one curve per run: its largest evaluation, then the newest
    (a curve is the rows of one ``version``, which names the step count, and one ``n_eval``); one row per eps."""
    curves = df[df["attack"].astype(str).isin(CURVE_ATTACKS)]
    if curves.empty:
        return curves
    curves = curves.assign(_n=pd.to_numeric(curves["n_eval"]), _order=range(len(curves)),
                           _version=curves["version"].fillna("").astype(str) if "version" in curves else "")
    order = ["_n", "created_at", "_order"] if "created_at" in curves else ["_n", "_order"]
    chosen = curves.sort_values(order, kind="mergesort").drop_duplicates("run_id", keep="last")[["run_id", "_n", "_version"]]
    kept = curves.merge(chosen, on=["run_id", "_n", "_version"])
    kept = kept.sort_values("_order", kind="mergesort").drop_duplicates(["run_id", "eps"], keep="last")
    return kept.drop(columns=["_n", "_order", "_version"]).reset_index(drop=True)


def _spec_defaults() -> Dict[str, Any]:
    """Each run spec field's default, for rows written before the field existed (their runs used it)."""
    return {f.name: f.default for f in dataclasses.fields(RunSpec) if f.default is not None
            and not isinstance(f.default, dataclasses._MISSING_TYPE)}


def _non_default_hparams(method: Any, text: Any) -> Any:
    """A row's hyperparameters as compared between rows: only those off the method's current defaults (a row
    written before a hyperparameter existed ran its default), as canonical JSON; other text is kept as is."""
    if not isinstance(method, str) or method not in METHODS.names() or not isinstance(text, str):
        return text
    try:
        values = json.loads(text)
    except (ValueError, RecursionError):
        return text
    if not isinstance(values, dict):
        return text
    defaults: Dict[str, str] = {}
    for f in dataclasses.fields(METHODS.get(method).Hparams):
        if not isinstance(f.default, dataclasses._MISSING_TYPE):
            default: Any = f.default
            defaults[f.name] = json.dumps(list(default) if isinstance(default, tuple) else default)
    kept = {k: v for k, v in values.items() if defaults.get(k) != json.dumps(v)}
    return json.dumps(kept, sort_keys=True)


def _canonical(value: Any) -> Any:
    """A configuration value as cells compare it: numbers by value (``2``, ``'2'`` and ``2.0`` agree)."""
    if isinstance(value, bool) or value is None:
        return value
    try:
        number = float(value)
    except (TypeError, ValueError):
        return value
    return f"{number:.12g}" if math.isfinite(number) else value


def comparable(rows: pd.DataFrame) -> pd.DataFrame:
    """The configuration columns as cells compare them: a spec field missing in older rows (or the whole
    column) takes its default, hyperparameters only where they differ from the method's defaults."""
    out = rows.copy()
    defaults = {**_spec_defaults(), "protocol": FIRST_PROTOCOL}
    for column in CONFIG_COLUMNS:
        if column in defaults and column != "method":
            # A blank cell (rows files are read as text) is a field the row's writer did not have.
            filled = out[column].astype(object).where(out[column].astype(str) != "") if column in out else None
            out[column] = filled.fillna(defaults[column]) if filled is not None else defaults[column]
        if column in out:
            out[column] = out[column].map(_canonical)
    if "hparams" in out and "method" in out:
        out["hparams"] = [_non_default_hparams(m, h) for m, h in zip(out["method"], out["hparams"])]
    return out


def check_cells(rows: pd.DataFrame, keys: List[str]) -> None:
    """Every cell may mix only seeds; name the columns that vary otherwise."""
    rows = comparable(rows)
    others = [c for c in CONFIG_COLUMNS if c in rows and c not in keys]
    varying = sorted({c for c in others if (rows.groupby(keys, dropna=False)[c].nunique(dropna=False) > 1).any()})
    if varying:
        examples = {c: sorted(map(str, rows[c].unique()))[:4] for c in varying}
        hint = "; ".join(f"{c} in {v}" for c, v in examples.items())
        raise ValueError(f"table cells would mix runs that differ in {', '.join(varying)} ({hint}); "
                         f"filter with --where (e.g. --where {varying[0]}={examples[varying[0]][0]})")


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
    if len(datasets) > 1 or len(eps) > 1:
        raise ValueError(f"rows span several datasets/eps ({', '.join(datasets)}; eps {', '.join(map(str, eps))}): "
                         f"filter with --where dataset=... --where eps=...")
    attack_text = attack
    if attack == "worst_case" and "version" in rows:
        combos = sorted(rows["version"].astype(str).unique())
        attack_text = "worst case over " + " | ".join(c.replace("+", ", ") for c in combos)
    seeds = rows.groupby([c for c in ("method", "arch", "width", "target_sparsity") if c in rows])["seed"].nunique()
    if "scope" in rows and rows["scope"].astype(str).str.startswith("after:").any():
        after = sorted({sc[len("after:"):].replace("+", ", ") for sc in rows["scope"].astype(str) if sc.startswith("after:")})
        attack_text += f" (cascade: run only on points still robust after {' | '.join(after)})"
    parts = [f"{what} on {datasets[0]}", f"L-inf eps {format_eps(eps[0])}", f"attack: {attack_text}",
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


def pooled_interval(rows: pd.DataFrame, keys: List[str], column: str) -> pd.DataFrame:
    """Per key, the 95 % Wilson interval (percent, columns ``lo`` and ``hi``) of accuracy ``column`` over the
    test examples of all the key's runs pooled: accuracy x n_eval correct of n_eval, summed over seeds."""
    n = pd.to_numeric(rows["n_eval"])
    pooled = pd.DataFrame({"k": rows[column] * n, "n": n}).groupby([rows[k] for k in keys]).sum()
    bounds = [wilson_interval(k / n if n else 0.0, int(round(n))) for k, n in zip(pooled["k"], pooled["n"])]
    return pd.DataFrame({"lo": [100 * lo for lo, _ in bounds], "hi": [100 * hi for _, hi in bounds]}, index=pooled.index)


def pooled_counts(rows: pd.DataFrame, keys: List[str], column: str) -> pd.DataFrame:
    """Per key, ``k`` correct of ``n`` examples of accuracy ``column``, all the key's runs pooled."""
    n = pd.to_numeric(rows["n_eval"])
    pooled = pd.DataFrame({"k": (rows[column] * n).round(), "n": n}).groupby([rows[k] for k in keys]).sum()
    return pooled.astype(int)


def reference_marks(counts: pd.DataFrame, reference: str, level: float = REFERENCE_LEVEL) -> pd.DataFrame:
    """True where a cell's pooled accuracy does not differ from the reference method's at ``level`` (two-sided
    Fisher's exact test on the 2 x 2 table of robust / not robust examples).

    ``counts`` is indexed by (row key, method). A cell is compared with the reference's cell of its row, or with
    the reference's only cell when the reference has one (a dense method, at sparsity 0 only).
    """
    ref = counts.xs(reference, level="method")
    # A reference with one cell at sparsity 0 (a dense method) serves every row.
    dense = len(ref) == 1 and ref.index.name == "target_sparsity" and float(ref.index[0]) == 0.0
    out = {}
    for (row, method), (k, n) in counts[["k", "n"]].iterrows():
        if method == reference:
            continue
        if row in ref.index:
            rk, rn = ref.loc[row, "k"], ref.loc[row, "n"]
        elif dense:
            rk, rn = ref["k"].iloc[0], ref["n"].iloc[0]
        else:
            continue
        p = fisher_exact([[int(k), int(n - k)], [int(rk), int(rn - rk)]])[1]
        out[(row, method)] = bool(p >= level)
    marks = pd.Series(out, dtype=bool)
    if marks.empty:
        return pd.DataFrame()
    marks.index = marks.index.set_names(counts.index.names)
    return marks.unstack("method").sort_index().sort_index(axis=1)


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


# ---------------------------------------------------------------------------
# Rendering.
# ---------------------------------------------------------------------------

def _label(value: Any) -> str:
    """A row/column label: numbers without trailing zeros."""
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _col_label(col: Any) -> str:
    """A column key (tuple for arch x sparsity) as one label."""
    return " ".join(_label(c) for c in col) if isinstance(col, tuple) else _label(col)


def best_mask(table: Table, bold: str = "column", decimals: int = 1) -> pd.DataFrame:
    """True where the rounded mean is the best (max) of its column or row; ties all bold."""
    if bold not in ("column", "row", "none"):
        raise ValueError(f"unknown --bold {bold!r}; choices: column, row, none")
    shown = table.mean.round(decimals)
    if bold == "none":
        return shown.isna() & False
    axis = 0 if bold == "column" else 1
    best = shown.max(axis=axis)
    return shown.eq(best, axis=1 - axis) & shown.notna()


def cell_texts(table: Table, decimals: int = 1) -> pd.DataFrame:
    """Formatted cells without markup: 'm ± s', 'm' (one seed), or 'clean / robust'."""
    out = pd.DataFrame("", index=table.mean.index, columns=table.mean.columns)
    for r in table.mean.index:
        for c in table.mean.columns:
            m = table.mean.at[r, c]
            if pd.isna(m):
                out.at[r, c] = "–"
                continue
            if table.clean is not None:
                text = f"{table.clean.at[r, c]:.{decimals}f} / {m:.{decimals}f}"
            elif table.n.at[r, c] > 1 and pd.notna(table.std.at[r, c]):
                text = f"{m:.{decimals}f} ± {table.std.at[r, c]:.{decimals}f}"
            else:
                text = f"{m:.{decimals}f}"
            if table.low is not None and table.high is not None:
                text += f" [{table.low.at[r, c]:.{decimals}f}, {table.high.at[r, c]:.{decimals}f}]"
            same = table.same_as_reference is not None and bool(table.same_as_reference.at[r, c])
            out.at[r, c] = text + ("†" if table.flagged.at[r, c] else "") + ("‡" if same else "")
    return out


def _bold_part(text: str, table: Table, wrap: Any) -> str:
    """Bold the ranked number: the robust half of 'clean / robust', else the whole cell."""
    if table.clean is not None and " / " in text:
        clean, robust = text.split(" / ", 1)
        return f"{clean} / {wrap(robust)}"
    return wrap(text)


def to_markdown(table: Table, bold: str = "column", decimals: int = 1) -> str:
    """A GitHub Markdown table (best values in **bold**) followed by its caption."""
    cells = cell_texts(table, decimals)
    mask = best_mask(table, bold, decimals)
    head = [LABELS.get(table.row_name, table.row_name)] + [_col_label(c) for c in cells.columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + [":---:"] * len(cells.columns)) + "|"]
    for r in cells.index:
        row = [_label(r)]
        for c in cells.columns:
            text = cells.at[r, c]
            row.append(_bold_part(text, table, lambda t: f"**{t}**") if mask.at[r, c] else text)
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + f"\n\n{table.caption}\n"


LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                 "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def latex_escape(text: str) -> str:
    """Escape LaTeX special characters in plain text."""
    return "".join(LATEX_ESCAPES.get(ch, ch) for ch in text)


def _latex_cell(text: str) -> str:
    """Escape a cell and typeset ± and † in math/text mode."""
    return latex_escape(text).replace("±", r"$\pm$").replace("†", r"$^\dagger$").replace("‡", r"$^\ddagger$").replace("–", "--")


def to_latex(table: Table, bold: str = "column", decimals: int = 1, label: Optional[str] = None) -> str:
    """A booktabs ``table`` environment with caption; best values in \\textbf."""
    cells = cell_texts(table, decimals)
    mask = best_mask(table, bold, decimals)
    cols = list(cells.columns)
    lines = [r"\begin{table}[t]", r"\centering", r"\caption{" + _latex_cell(table.caption) + "}"]
    if label:
        lines.append(r"\label{" + label + "}")
    lines += [r"\begin{tabular}{l" + "c" * len(cols) + "}", r"\toprule"]
    row_head = latex_escape(LABELS.get(table.row_name, table.row_name))
    # Two header rows for arch x sparsity columns (grouped by architecture), else one.
    if len(table.col_names) == 2:
        groups: List[Tuple[str, int]] = []
        for c in cols:
            if groups and groups[-1][0] == _label(c[0]):
                groups[-1] = (groups[-1][0], groups[-1][1] + 1)
            else:
                groups.append((_label(c[0]), 1))
        lines.append(" & ".join([""] + [rf"\multicolumn{{{n}}}{{c}}{{{latex_escape(g)}}}" for g, n in groups]) + r" \\")
        start, rules = 2, []
        for _g, n in groups:
            rules.append(rf"\cmidrule(lr){{{start}-{start + n - 1}}}")
            start += n
        lines.append(" ".join(rules))
        sub = latex_escape(LABELS.get(table.col_names[1], table.col_names[1]))
        lines.append(" & ".join([f"{row_head} / {sub}"] + [latex_escape(_label(c[1])) for c in cols]) + r" \\")
    else:
        col_head = latex_escape(LABELS.get(table.col_names[0], table.col_names[0]))
        lines.append(" & ".join([f"{row_head} / {col_head}"] + [latex_escape(_col_label(c)) for c in cols]) + r" \\")
    lines.append(r"\midrule")
    for r in cells.index:
        row = [latex_escape(_label(r))]
        for c in cols:
            text = _latex_cell(cells.at[r, c])
            row.append(_bold_part(text, table, lambda t: r"\textbf{" + t + "}") if mask.at[r, c] else text)
        lines.append(" & ".join(row) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def to_csv_pivot(table: Table) -> str:
    """The numeric pivot as CSV: one column per (column key, statistic)."""
    parts: Dict[str, pd.DataFrame] = {"mean": table.mean, "std": table.std, "n": table.n}
    if table.clean is not None:
        parts = {"clean_mean": table.clean, "robust_mean": table.mean, "robust_std": table.std, "n": table.n}
    frames = []
    for stat, frame in parts.items():
        f = frame.copy()
        f.columns = [f"{_col_label(c)} {stat}" for c in f.columns]
        frames.append(f)
    merged = pd.concat(frames, axis=1)
    order = [f"{_col_label(c)} {stat}" for c in table.mean.columns for stat in parts]
    merged = merged[order]
    merged.index.name = LABELS.get(table.row_name, table.row_name)
    return merged.to_csv(float_format="%.4f")


def render(table: Table, fmt: str, bold: str = "column", decimals: int = 1, label: Optional[str] = None) -> str:
    """The table in ``fmt`` (markdown | latex | csv)."""
    if fmt == "markdown":
        return to_markdown(table, bold, decimals)
    if fmt == "latex":
        return to_latex(table, bold, decimals, label)
    if fmt == "csv":
        return to_csv_pivot(table)
    raise ValueError(f"unknown table format {fmt!r}; choices: {', '.join(FORMATS)}")
