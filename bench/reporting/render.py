"""Rendering a :class:`bench.reporting.tables.Table`: Markdown, LaTeX (booktabs) and a CSV pivot."""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import pandas as pd

from bench.reporting.tables import LABELS, Table

FORMATS = ("markdown", "latex", "csv")


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
