"""The regression gate: rerun (or reuse) the reference specs and compare their accuracies.

Reference numbers live in ``results/reference/reference.csv``: tidy rows
produced by real runs of the committed preset ``results/reference/preset.yaml``
(a sweep file). ``bench check`` runs every preset spec not yet done in its
output folder, then compares clean and robust accuracy per (run, attack,
n_eval) with an absolute tolerance (the ``--tolerance`` default, or the
row's own ``tolerance`` column). The default tolerance is ``auto``: the
sampling noise of the evaluated subset, three binomial standard errors
``3 * sqrt(p (1 - p) / n_eval)`` with a floor of :data:`TOLERANCE_FLOOR`.
Runs are bit-identical on one CPU, but on another CPU model (or on CUDA)
floating-point rounding differs, training takes another trajectory and the
accuracies move like a reseeded run; ``auto`` covers that and nothing more.
A gate pinned to one CI machine can use ``--tolerance 0``. Exit codes: 0 all hold, 1 a regression (or a
reference row with no result), 2 bad input.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Tuple

import pandas as pd

from bench import paths
from bench.data import DataNotFoundError, load_data
from bench.exact_gate import GateLine, exact_gate, write_reference_tickets
from bench.executors.local import LocalExecutor
from bench.io import atomic_with
from bench.results import read_rows
from bench.spec import RunSpec
from bench.sweep import load_sweep, run_sweep

REFERENCE_DIR = Path(__file__).resolve().parent.parent / "results" / "reference"
KEY = ("run_id", "attack", "n_eval")
METRICS = ("clean_acc", "robust_acc")
TOLERANCE_FLOOR = 0.02
NOISE_SIGMAS = 3.0
REFERENCE_COLUMNS = ("run_id", "method", "dataset", "arch", "width", "target_sparsity", "seed", "attack", "eps",
                     "steps", "n_eval", "clean_acc", "robust_acc", "tolerance")


@dataclass(frozen=True)
class CheckResult:
    """The diff table and whether every row held."""

    table: pd.DataFrame
    passed: bool

    def text(self) -> str:
        """Human-readable diff table and verdict."""
        with pd.option_context("display.max_rows", None, "display.width", 200):
            body = self.table.to_string(index=False, float_format=lambda v: f"{v:.4f}")
        n_fail = int((~self.table["result"].isin(["pass", "no data"])).sum())
        verdict = "all rows hold" if self.passed else f"{n_fail} row(s) regressed"
        return f"{body}\nbench check: {verdict}"


def read_reference(path: Path) -> pd.DataFrame:
    """Load and validate a reference CSV; problems are ValueErrors (exit 2)."""
    if not path.exists():
        raise ValueError(f"reference file not found: {path}")
    try:
        ref = pd.read_csv(path, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ValueError(f"reference {path} is not a readable CSV ({type(exc).__name__})") from None
    missing = [c for c in (*KEY, *METRICS) if c not in ref.columns]
    if missing:
        raise ValueError(f"reference {path} lacks column(s): {', '.join(missing)}")
    if ref.empty:
        raise ValueError(f"reference {path} has no rows")
    for col in METRICS:
        values = pd.to_numeric(ref[col], errors="coerce")
        if values.isna().any() or not values.between(0, 1).all():
            bad = ref.loc[values.isna() | ~values.between(0, 1), col].iloc[0]
            raise ValueError(f"reference {path}: column {col} must hold fractions in [0,1], found {bad!r}")
        ref[col] = values
    if "tolerance" in ref.columns:
        tol = pd.to_numeric(ref["tolerance"].replace("", math.nan), errors="coerce")
        if (tol < 0).any():
            raise ValueError(f"reference {path}: tolerance must be >= 0")
        ref["tolerance"] = tol
    ref["n_eval"] = pd.to_numeric(ref["n_eval"], errors="coerce").astype("Int64")
    if ref.duplicated(list(KEY)).any():
        raise ValueError(f"reference {path} has duplicate (run_id, attack, n_eval) rows")
    return ref


def current_rows(out: Path) -> pd.DataFrame:
    """This checkout's rows (``ok`` status) from ``<out>/runs.csv``."""
    csv = paths.runs_csv(out)
    if not csv.exists():
        return pd.DataFrame(columns=[*KEY, *METRICS])
    df = read_rows(csv)
    if "status" in df:
        df = df[df["status"].isin(["ok", ""])]
    df["n_eval"] = pd.to_numeric(df["n_eval"], errors="coerce").astype("Int64")
    return df.drop_duplicates(list(KEY), keep="last")


def auto_tolerance(p: float, n: int) -> float:
    """Sampling noise of an accuracy ``p`` measured on ``n`` examples: 3 standard errors, floored."""
    if n is None or pd.isna(n) or int(n) < 1:
        return TOLERANCE_FLOOR
    return max(TOLERANCE_FLOOR, NOISE_SIGMAS * math.sqrt(p * (1.0 - p) / int(n)))


def compare(ref: pd.DataFrame, now: pd.DataFrame, tolerance: Optional[float], no_data: Sequence[str] = ()) -> CheckResult:
    """Row-by-row diff of reference vs current accuracies.

    Rows of runs in ``no_data`` (their dataset is absent on this machine) are
    listed as ``no data`` and do not fail the check. ``tolerance=None`` is
    ``auto`` (:func:`auto_tolerance` of each reference value).
    """
    if tolerance is not None and not (tolerance >= 0):
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    merged = ref.merge(now[[*KEY, *METRICS]], on=list(KEY), how="left", suffixes=("_ref", "_now"))
    rows = []
    for _, r in merged.iterrows():
        own = r["tolerance"] if "tolerance" in r and not pd.isna(r["tolerance"]) else None
        for m in METRICS:
            ref_v, now_v = float(r[f"{m}_ref"]), r[f"{m}_now"]
            # A row's own tolerance wins, then the flag, then the sampling noise.
            tol = own if own is not None else (tolerance if tolerance is not None else auto_tolerance(ref_v, r["n_eval"]))
            missing = pd.isna(now_v)
            delta = math.nan if missing else float(now_v) - ref_v
            ok = (not missing) and abs(delta) <= tol + 1e-12
            skipped = missing and r["run_id"] in set(no_data)
            rows.append({"run_id": r["run_id"], "method": r.get("method", ""), "attack": r["attack"], "n_eval": r["n_eval"],
                         "metric": m, "reference": ref_v, "now": math.nan if missing else float(now_v), "delta": delta,
                         "tolerance": tol, "result": "pass" if ok else ("no data" if skipped else ("missing" if missing else "FAIL"))})
    table = pd.DataFrame(rows)
    return CheckResult(table, bool(table["result"].isin(["pass", "no data"]).all()))


def reference_from_rows(now: pd.DataFrame, run_ids: Sequence[str], old: Optional[pd.DataFrame]) -> pd.DataFrame:
    """New reference rows for the preset's runs (keeping per-row tolerances of the old file)."""
    sub = now[now["run_id"].isin(list(run_ids))].copy()
    sub["tolerance"] = math.nan
    if old is not None and "tolerance" in old.columns:
        tol = old.set_index(list(KEY))["tolerance"]
        sub["tolerance"] = [tol.get(tuple(k), math.nan) for k in sub[list(KEY)].itertuples(index=False)]
    cols = [c for c in REFERENCE_COLUMNS if c in sub.columns]
    return sub[cols].sort_values(["run_id", "attack"]).reset_index(drop=True)


def describe_update(old: Optional[pd.DataFrame], new: pd.DataFrame) -> str:
    """What an update changed: added, removed and moved rows."""
    if old is None:
        return f"new reference with {len(new)} row(s)"
    o, n = old.set_index(list(KEY)), new.set_index(list(KEY))
    lines = [f"added {k}" for k in n.index.difference(o.index)] + [f"removed {k}" for k in o.index.difference(n.index)]
    for k in n.index.intersection(o.index):
        for m in METRICS:
            if float(o.at[k, m]) != float(n.at[k, m]):
                lines.append(f"changed {k} {m}: {float(o.at[k, m]):.4f} -> {float(n.at[k, m]):.4f}")
    return "\n".join(lines) if lines else "reference unchanged"


def eval_gate_report(lines: Sequence[GateLine], skipped: Sequence[str]) -> Tuple[bool, str]:
    """Whether every exactly gated quantity holds, and its lines."""
    passed = all(line.verdict == "pass" for line in lines)
    text = [line.text() for line in lines]
    text += [f"eval  {run_id} skipped: its dataset is not on this machine (set --data-root or $BENCH_DATA_ROOT)"
             for run_id in skipped]
    n_fail = sum(line.verdict != "pass" for line in lines)
    text.append("bench check (exact evaluation gate): " + ("all quantities hold" if passed else f"{n_fail} quantity(ies) FAILED"))
    return passed, "\n".join(text)


def run_check(preset: Path, reference: Path, out: Path, tolerance: Optional[float], update: bool = False,
              data_root: Optional[str] = None, progress: bool = True, tickets: Optional[Path] = None) -> Tuple[int, str]:
    """Evaluate the committed tickets (exact gate), run/reuse the preset's specs and compare, or update both.

    Returns (exit code, report). ``tickets`` is the reference tickets folder
    (default: ``tickets/`` beside the reference CSV).
    """
    tickets = reference.parent / "tickets" if tickets is None else tickets
    sweep = load_sweep(preset)
    old = read_reference(reference) if reference.exists() else None
    if old is None and not update:
        raise ValueError(f"reference file not found: {reference} (create it with --update)")
    if tolerance is not None and not (tolerance >= 0):
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    # Specs whose data is absent here (e.g. MNIST without ../shared) are not run.
    available = [s for s in sweep.specs if _data_available(s, data_root)]
    no_data = [s.run_id for s in sweep.specs if s not in available]
    specs = available
    summary = run_sweep(dataclasses.replace(sweep, specs=tuple(specs)), out, LocalExecutor(1), data_root, progress=progress)
    now = current_rows(out)
    if update:
        new = reference_from_rows(now, [s.run_id for s in specs], old)
        if old is not None and no_data:
            # Rows this machine cannot reproduce (no data) are kept as they were.
            kept = old[old["run_id"].isin(no_data)]
            new = pd.concat([new, kept[[c for c in new.columns if c in kept.columns]]], ignore_index=True)
        atomic_with(reference, lambda tmp: new.to_csv(tmp, index=False))
        # The exact gate's tickets: the preset runs' compact tickets and per-example flags.
        written = write_reference_tickets([paths.run_dir(out, s.run_id) for s in specs], tickets, out, data_root)
        return (1 if summary.failed else 0), (f"{summary.text()}\nupdated {reference}:\n{describe_update(old, new)}\n"
                                              f"updated {tickets}: {len(written)} ticket(s) with per-example flags")
    gate_ok, gate_text = eval_gate_report(*exact_gate(tickets, out / "eval-gate", data_root))
    result = compare(old, now, tolerance, no_data)
    note = f"\nno data here for run(s) {', '.join(no_data)}: their rows are not checked" if no_data else ""
    return (0 if result.passed and gate_ok else 1), f"{gate_text}\n{summary.text()}\n{result.text()}{note}"


def _data_available(spec: RunSpec, data_root: Optional[str]) -> bool:
    """Whether the spec's data can be loaded here (MNIST needs ../shared or a data root)."""
    try:
        load_data(spec.dataset, spec.data_source, data_root)
    except DataNotFoundError:
        return False
    return True
