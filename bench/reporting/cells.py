"""Which rows may share a table cell: runs that differ only in their seed.

The configuration columns are derived from the run spec's groups (:func:`bench.spec.config_columns`); a row
written before a field existed ran its default, and hyperparameters are compared only where they differ from the
method's defaults.
"""
from __future__ import annotations

import dataclasses
import json
import math
from typing import Any, Dict, List

import pandas as pd

from bench.spec import METHODS, RunSpec, config_columns

# Columns that define a run (besides the row/column keys and the seed), derived from the spec's groups, and the
# name of a zoo or external model; a table cell must not mix values of these.
CONFIG_COLUMNS = config_columns() + ("model",)
# A row without a method protocol was made before protocols existed: protocol 1.
FIRST_PROTOCOL = 1


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
    try:
        values = METHODS.get(method).current_hparams(values)
    except ValueError:
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
