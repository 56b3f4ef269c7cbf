"""Which rows count: one rule for every reader of ``runs.csv`` (tables, plots, sweep status, the gates, export,
the leaderboard).

A row counts when its ``status`` is ``ok`` (or blank: rows written before the column). Of several rows of one run
and attack, the one a reader shows is :func:`latest_rows`' choice (most examples, an attack-alone row over a
cascade row, then the newest); a security curve is :func:`latest_curves`' (one curve per run, one row per eps);
readers that key rows otherwise take the last written row per key (:func:`latest_per`).
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Sequence, Union

import pandas as pd

from bench.core.results import CURVE_ATTACKS, read_rows

# Statuses of rows that count ("" = a row written before the status column existed).
COUNTED_STATUSES = ("ok", "")


def counted(df: pd.DataFrame) -> pd.DataFrame:
    """The rows that count: status ``ok`` or blank."""
    if "status" not in df.columns:
        return df
    return df[df["status"].fillna("").astype(str).isin(COUNTED_STATUSES)]


def latest_per(df: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """The counted rows, one per ``keys``: the last written (file order)."""
    return counted(df).drop_duplicates(list(keys), keep="last")


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
    """One row per run and threat model (norm, eps) for ``attack``: the largest n_eval, an attack-alone row over a
    cascade row, then the newest. Rows of several threat models stay apart (a table refuses to mix them)."""
    if df.empty:
        raise ValueError("no rows")
    if attack in CURVE_ATTACKS:
        raise ValueError(f"{attack} rows are a security curve (one row per eps), not one figure per run; "
                         "draw them with bench plot --kind security")
    sub = counted(df[df["attack"] == attack])
    if sub.empty:
        present = ", ".join(sorted(df["attack"].astype(str).unique()))
        raise ValueError(f"no rows for attack {attack!r}; attacks present: {present} "
                         f"(worst_case exists only for runs evaluated with 2+ attacks)")
    # Most examples first, then the attack-alone row over a cascade row, then the newest.
    sub = sub.assign(_alone=sub["scope"].astype(str).isin(["alone", "all", ""]) if "scope" in sub else True)
    order = [c for c in ("n_eval", "_alone", "created_at") if c in sub]
    key = [c for c in ("run_id", "norm", "eps") if c in sub]
    return sub.sort_values(order, kind="mergesort").drop_duplicates(key, keep="last").drop(columns="_alone")


def row_norms(df: pd.DataFrame) -> pd.Series:
    """Each row's threat model (a blank cell or a file without the column, from before norms, is L-inf)."""
    norms = df["norm"].astype(str) if "norm" in df else pd.Series("Linf", index=df.index)
    return norms.where(~norms.isin(["", "nan"]), "Linf")


def latest_curves(df: pd.DataFrame) -> pd.DataFrame:
    """The security-curve rows (``CURVE_ATTACKS``) of one curve per run and threat model: its largest evaluation,
    then the newest (a curve is the rows of one ``version``, which names the step count, and one ``n_eval``); one
    row per eps. A row without a norm (made before norms) is L-inf."""
    curves = counted(df[df["attack"].astype(str).isin(CURVE_ATTACKS)])
    if curves.empty:
        return curves
    curves = curves.assign(_n=pd.to_numeric(curves["n_eval"]), _order=range(len(curves)), _norm=row_norms(curves),
                           _version=curves["version"].fillna("").astype(str) if "version" in curves else "")
    order = ["_n", "created_at", "_order"] if "created_at" in curves else ["_n", "_order"]
    chosen = curves.sort_values(order, kind="mergesort").drop_duplicates(["run_id", "_norm"], keep="last")
    kept = curves.merge(chosen[["run_id", "_norm", "_n", "_version"]], on=["run_id", "_norm", "_n", "_version"])
    kept = kept.sort_values("_order", kind="mergesort").drop_duplicates(["run_id", "_norm", "eps"], keep="last")
    return kept.drop(columns=["_n", "_order", "_version", "_norm"]).reset_index(drop=True)
