"""Export tickets as RobustBench model-info JSON files (one per run), plus our own fields.

RobustBench keeps one JSON per model under ``model_info/<dataset>/<threat>/``
with the fields of ``robustbench.utils.ModelInfo`` plus ``external`` and
``unreliable``. As in its published files, ``eps`` and the accuracies are
strings (accuracies in percent with two decimals), ``additional_data`` and
``unreliable`` are booleans and ``number_forward_passes`` is an integer.
:func:`export_robustbench_json` writes that layout from tidy ``runs.csv``
rows; it needs only pandas (not the ``robustbench`` package).

Field mapping (per run, using each attack's row with the most examples):
``autoattack_acc`` = the standard AutoAttack row, ``external`` = the
per-example worst case over every attack run (the lowest worst-case row when
several evaluations left one each; or the only attack's figure),
``reported`` = PGD-20 (the protocol of the ticket papers), ``clean_acc`` =
clean accuracy on the largest evaluated subset. Our extra fields:
``sparsity`` (measured), ``target_sparsity``, ``density``, ``width``,
``method``, ``randomized``, ``eot_iter``, ``non_adaptive``, ``flags``,
``run_id``, ``n_eval`` and ``evaluations`` (every attack's figures).
``unreliable`` is set for a randomised model evaluated only non-adaptively
and for any sanity flag except ``sparsity_off_target``. Rows of randomised
tickets (``bench.evaluation.randomized``) carry ``randomized`` and ``adaptive`` columns:
such a ticket is ``non_adaptive`` exactly when none of its rows is adaptive
(rows from an earlier non-adaptive-only evaluation no longer count once an
adaptive attack was run).
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, Union

import pandas as pd

from bench.attacks.norms import NORMS
from bench.core.io import atomic_write, slug
from bench.core.results import CURVE_ATTACKS, EXTERNAL_METHOD, format_eps
from bench.core.rows import counted, latest_curves, row_norms
from bench.data import DATASETS

# The threat models an entry may name (folder names), and what a run id looks like.
THREAT_MODELS = NORMS
RUN_ID = re.compile(r"[0-9a-f]{12}")

ROBUSTBENCH_FIELDS = ("link", "name", "authors", "additional_data", "number_forward_passes", "dataset", "venue",
                      "architecture", "eps", "clean_acc", "reported", "autoattack_acc", "external", "footnote", "unreliable")
EXTRA_FIELDS = ("threat_model", "sparsity", "target_sparsity", "density", "width", "method", "randomized", "eot_iter", "non_adaptive",
                "flags", "run_id", "n_eval", "median_distance", "evaluations")
# Sanity flags that say nothing about how trustworthy the robust accuracy is (all others mark an entry unreliable):
# an off-target sparsity, and a security curve weaker than the fixed-eps attacks (the curve is the weak one).
NOT_ROBUSTNESS_FLAGS = frozenset({"sparsity_off_target", "fmn_weaker"})
ARCH_NAMES = {"resnet18": "ResNet-18", "wrn-28-4": "WideResNet-28-4", "wrn-28-10": "WideResNet-28-10",
              "wrn-34-10": "WideResNet-34-10", "convnet": "ConvNet", "mlp": "MLP"}


def percent(acc: Optional[float]) -> Optional[str]:
    """Accuracy in [0,1] as RobustBench's percent string ('57.14'); None stays None."""
    return None if acc is None else f"{100 * float(acc):.2f}"


def _number(value: Any) -> Optional[float]:
    """A float from a CSV cell, None for blank/NaN."""
    if value is None or (isinstance(value, str) and value.strip() == ""):
        return None
    out = float(value)
    return None if math.isnan(out) else out


def _text(value: Any) -> str:
    """A CSV cell as text ('' for None/NaN)."""
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def _flag(value: Any) -> bool:
    """A boolean from a CSV cell ('True', '1', 'yes'; blank is False)."""
    return str(value).strip().lower() in ("true", "1", "yes")


def _pick(rows: pd.DataFrame) -> pd.DataFrame:
    """Per attack (and version), the row with the most examples (the last such row on ties)."""
    rows = rows.assign(_n=pd.to_numeric(rows["n_eval"], errors="coerce"), _order=range(len(rows)))
    rows = rows.sort_values(["_n", "_order"])
    return rows.groupby(["attack", "version"], sort=False).tail(1).drop(columns=["_n", "_order"])


def model_info(rows: pd.DataFrame, threat: str = "Linf") -> Dict[str, Any]:
    """One RobustBench model-info dict (plus extra fields) from the rows of one run."""
    if rows["run_id"].nunique() != 1:
        raise ValueError("model_info expects the rows of exactly one run")
    # Security-curve rows (one per eps) give the median minimal perturbation and their flags, not accuracies.
    curve = latest_curves(rows)
    if len(rows[rows["attack"].astype(str).isin(CURVE_ATTACKS)]) == len(rows):
        raise ValueError(f"run {rows['run_id'].iloc[0]} has only security-curve rows; evaluate it first (bench eval)")
    curve_flags = {f.strip() for v in curve.get("flags", pd.Series(dtype=str)) for f in re.split(r"[;,|]", _text(v)) if f.strip()}
    medians = [m for m in (_number(v) for v in curve.get("median_distance", pd.Series(dtype=str))) if m is not None]
    rows = rows[~rows["attack"].astype(str).isin(CURVE_ATTACKS)]
    rows = _pick(rows.assign(version=[_text(v) for v in rows.get("version", [""] * len(rows))]))
    first = rows.iloc[0]
    by_attack = {r["attack"]: r for _, r in rows.iterrows()}
    # RobustBench's accuracy fields.
    aa = next((r for _, r in rows.iterrows() if r["attack"] == "autoattack" and r["version"] in ("standard", "")), None)
    # Several worst-case rows (evaluations with different attack sets): the lowest one, so a later
    # evaluation with fewer attacks (e.g. a non-adaptive one of a randomised ticket) never raises the figure.
    wcs = rows[rows["attack"] == "worst_case"]
    wc = wcs.loc[wcs["robust_acc"].astype(float).idxmin()] if len(wcs) else None
    attacks = rows[rows["attack"] != "worst_case"]
    external = wc if wc is not None else (attacks.loc[attacks["robust_acc"].astype(float).idxmin()] if len(attacks) else None)
    largest = rows.loc[pd.to_numeric(rows["n_eval"]).idxmax()]
    pgd = by_attack.get("pgd20")
    # Our fields.
    sparsity = _number(first.get("measured_sparsity"))
    width = _number(first.get("width"))
    # A model made elsewhere (or a zoo model) is evaluated as given: width 1.
    if width is None and str(first["method"]) in (EXTERNAL_METHOD, "zoo"):
        width = 1.0
    eot = [_number(v) for v in rows.get("eot_samples", pd.Series(dtype=str))]
    eot_iter = int(max([v for v in eot if v is not None], default=1))
    randomized = _flag(first.get("randomized", ""))
    flag_set = {f.strip() for v in rows.get("flags", pd.Series(dtype=str)) for f in re.split(r"[;,|]", _text(v)) if f.strip()}
    flag_set |= curve_flags
    flags = ";".join(sorted(flag_set))
    non_adaptive = _flag(first.get("non_adaptive", "")) or "non_adaptive" in flag_set
    # With an `adaptive` column (randomised tickets): non-adaptive means no adaptive row at all for this ticket.
    if "adaptive" in rows and randomized:
        non_adaptive = not any(_flag(v) for v in rows["adaptive"])
        if not non_adaptive:
            flag_set.discard("non_adaptive")
            flags = ";".join(sorted(flag_set))
    arch = ARCH_NAMES.get(str(first["arch"]), str(first["arch"]))
    width_text = f" (width x{width:g})" if width is not None and width != 1 else ""
    sparsity_text = f"{sparsity:.4f}" if sparsity is not None else "unknown"
    n_text = ", ".join(f"{r['attack']} on {int(float(r['n_eval']))}" for _, r in attacks.iterrows())
    return {
        "link": "",
        "name": (f"{first.get('model', '')} (RobustBench zoo, re-evaluated)" if first["method"] == "zoo"
                 else f"{first.get('model', '')} ({arch}, evaluated here), sparsity {sparsity_text}"
                 if first["method"] == EXTERNAL_METHOD
                 else f"{first['method']} ticket, {arch}{width_text}, sparsity {sparsity_text}"),
        "authors": "",
        "additional_data": False,
        "number_forward_passes": 1,
        "dataset": str(first["dataset"]),
        "venue": "N/A",
        "architecture": f"{arch}{width_text}",
        "eps": format_eps(float(first["eps"])),
        "clean_acc": percent(_number(largest["clean_acc"])),
        "reported": percent(_number(pgd["robust_acc"])) if pgd is not None else None,
        "autoattack_acc": percent(_number(aa["robust_acc"])) if aa is not None else None,
        "external": percent(_number(external["robust_acc"])) if external is not None else None,
        "footnote": (f"Evaluated by the robust-tickets harness: method {first['method']}, measured sparsity "
                     f"{sparsity_text}. Accuracies on the first test examples only ({n_text}); "
                     f"'external' is the per-example worst case over all attacks run."
                     + (" Randomised model evaluated non-adaptively." if non_adaptive else "")
                     + (f" Flags: {flags}." if flags else "")),
        "unreliable": bool(non_adaptive or flag_set - NOT_ROBUSTNESS_FLAGS),
        "threat_model": threat,
        "sparsity": sparsity,
        "target_sparsity": _number(first.get("target_sparsity")),
        "density": None if sparsity is None else round(1.0 - sparsity, 6),
        "width": width,
        "method": str(first["method"]),
        "randomized": randomized,
        "eot_iter": eot_iter,
        "non_adaptive": non_adaptive,
        "flags": flags,
        "run_id": str(first["run_id"]),
        "n_eval": int(float(largest["n_eval"])),
        # FMN's median minimal L-inf perturbation (bench security); None before one ran, or when FMN broke fewer
        # than half the examples (an infinite median has no JSON number).
        "median_distance": medians[-1] if medians and math.isfinite(medians[-1]) else None,
        "evaluations": [{"attack": r["attack"], "version": r["version"], "n_eval": int(float(r["n_eval"])),
                         "clean_acc": _number(r["clean_acc"]), "robust_acc": _number(r["robust_acc"])}
                        for _, r in rows.iterrows()],
    }


def export_robustbench_json(rows_df: pd.DataFrame, out_dir: Union[str, Path], include_zoo: bool = False,
                            validate: Optional[Callable[[Dict[str, Any], str], Any]] = None) -> List[Path]:
    """Write ``out_dir/<dataset>/<threat>/<method>_<arch>_<run_id>.json`` per run; returns the paths.

    Rows of RobustBench's own models (method ``zoo``) are left out unless ``include_zoo``. ``validate(info,
    path)`` is called on every entry before any file is written (a bad one writes nothing).
    """
    required = {"run_id", "method", "dataset", "arch", "attack", "eps", "n_eval", "clean_acc", "robust_acc", "measured_sparsity"}
    missing = sorted(required - set(rows_df.columns))
    if missing:
        raise ValueError(f"rows lack column(s) {', '.join(missing)}; pass rows of a runs.csv")
    df = rows_df if include_zoo else rows_df[rows_df["method"].astype(str) != "zoo"]
    df = counted(df)
    out_dir = Path(out_dir)
    entries = []
    for run_id, norm, eps, rows in threat_groups(df):
        info = model_info(rows, norm)
        path = entry_path(out_dir, info["dataset"], norm, info["method"], str(rows["arch"].iloc[0]), str(run_id),
                          eps if several_budgets(df, str(run_id), norm) else None)
        # JSON has no infinity or NaN: a row with width inf is refused, not written as 'Infinity'.
        try:
            text = json.dumps(info, indent=2, allow_nan=False) + "\n"
        except ValueError:
            bad = sorted(k for k, v in info.items() if isinstance(v, float) and not math.isfinite(v))
            raise ValueError(f"run {run_id}: {', '.join(bad)} is not a finite number; fix its rows") from None
        if validate is not None:
            validate(info, str(path))
        entries.append((path, text))
    # Every entry was checked before the first file is written.
    for path, text in entries:
        atomic_write(path, text)
    return [path for path, _ in entries]


def several_budgets(df: pd.DataFrame, run_id: str, norm: str) -> bool:
    """Whether run ``run_id`` has fixed-eps rows at more than one budget in ``norm`` (entry files then name it)."""
    fixed = df[(df["run_id"].astype(str) == run_id) & (row_norms(df) == norm) & ~df["attack"].astype(str).isin(CURVE_ATTACKS)]
    return fixed["eps"].astype(float).round(8).nunique() > 1


def threat_groups(df: pd.DataFrame) -> Iterator[Tuple[str, str, float, pd.DataFrame]]:
    """(run id, norm, eps, rows) per threat model a run was evaluated in: one leaderboard entry each. A run's
    security-curve rows go with each of its groups in the curve's threat model."""
    norms = row_norms(df)
    curve = df["attack"].astype(str).isin(CURVE_ATTACKS)
    fixed = df[~curve].assign(_norm=norms[~curve], _eps=df.loc[~curve, "eps"].astype(float).round(8))
    for (run_id, norm, eps), rows in fixed.groupby(["run_id", "_norm", "_eps"], sort=True):
        extra = df[curve & (df["run_id"] == run_id) & (norms == norm)]
        yield str(run_id), str(norm), float(eps), pd.concat([rows.drop(columns=["_norm", "_eps"]), extra])


def entry_path(out_dir: Path, dataset: str, threat: str, method: str, arch: str, run_id: str,
               eps: Optional[float] = None) -> Path:
    """``out_dir/<dataset>/<threat>/<method>_<arch>_<run_id>.json``, every part checked, never outside ``out_dir``.

    The parts come from a CSV someone may have edited: the dataset must be a
    registered one, the threat model a known one and the run id a 12-digit hex
    digest; method and arch are reduced to file-name-safe text.
    """
    if dataset not in DATASETS:
        raise ValueError(f"row of run {run_id!r}: unknown dataset {dataset!r}; choices: {', '.join(DATASETS.names())}")
    if threat not in THREAT_MODELS:
        raise ValueError(f"row of run {run_id!r}: unknown norm {threat!r}; choices: {', '.join(THREAT_MODELS)}")
    if not RUN_ID.fullmatch(run_id):
        raise ValueError(f"run_id {run_id!r} is not a run id (12 hexadecimal digits)")
    root = out_dir.resolve()
    budget = "" if eps is None else f"_eps{slug(format_eps(eps))}"
    path = (root / dataset / threat / f"{slug(method)}_{slug(arch)}_{run_id}{budget}.json").resolve()
    if root not in path.parents:
        raise ValueError(f"refusing to write {path}: outside the output folder {root}")
    return path
