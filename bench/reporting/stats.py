"""Statistics of table cells: Wilson intervals over pooled test examples and Fisher's exact test against a
reference method."""
from __future__ import annotations

from typing import List

import pandas as pd
from scipy.stats import fisher_exact

from bench.core.results import wilson_interval

# Significance level of the --reference marks (two-sided Fisher's exact test on pooled examples).
REFERENCE_LEVEL = 0.05


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
