"""The regression gate: an exact evaluation gate and a seed-aware training gate.

``results/reference/`` holds the committed preset (``preset.yaml``, a sweep
file whose specs come in at least three seeds), the training reference
(``reference.csv``: mean and std over seeds per base, attack and metric;
:mod:`bench.gate.training`) and the reference tickets (``tickets/``: the
seed-0 ticket of every base, compact, with its per-example flags under
:data:`GATE_ATTACKS`; :mod:`bench.gate.exact`).

``bench check`` evaluates the committed tickets afresh and compares flags
(any change of attacks, evaluation or model code), then runs (or reuses)
every preset spec and compares seed means with the reference's spread (any
change of training). ``--update`` rewrites both on purpose. Exit codes: 0
all hold, 1 a regression, 2 bad input. Runs whose dataset is absent here
(MNIST without ``../shared`` or ``$BENCH_DATA_ROOT``) are skipped with a
line saying so.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import pandas as pd

from bench.core import paths
from bench.core.io import atomic_with
from bench.core.results import read_rows
from bench.core.rows import latest_per
from bench.data import DataNotFoundError, load_data
from bench.gate.exact import GateLine, exact_gate, write_reference_tickets
from bench.gate.training import COLUMNS, TrainLine, base_of, check_reference_seeds, seed_stats, training_gate
from bench.spec import RunSpec
from bench.sweep.executors.local import LocalExecutor
from bench.sweep.grid import load_sweep, run_sweep

REFERENCE_DIR = Path(__file__).resolve().parents[2] / "results" / "reference"
# The attacks the exact gate replays on the reference tickets (AutoAttack is gated here, exactly).
GATE_ATTACKS = ("pgd20", "cw20", "autoattack")
# The seed whose ticket of every base is committed for the exact gate.
GATE_SEED = 0


def read_reference(path: Path) -> pd.DataFrame:
    """Load and validate the training reference; problems are ValueErrors (exit 2)."""
    if not path.exists():
        raise ValueError(f"reference file not found: {path} (create it with bench check --update)")
    if not path.is_file():
        raise ValueError(f"reference {path} is not a file: --reference takes the reference.csv (its tickets/ "
                         "folder beside it)")
    try:
        ref = pd.read_csv(path, keep_default_na=False, dtype={"base": str, "seeds": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ValueError(f"reference {path} is not a readable CSV ({type(exc).__name__})") from None
    missing = [c for c in COLUMNS if c not in ref.columns]
    if missing:
        raise ValueError(f"reference {path} lacks column(s): {', '.join(missing)} (recreate it with bench check --update)")
    if ref.empty:
        raise ValueError(f"reference {path} has no rows")
    for col in ("mean", "std"):
        values = pd.to_numeric(ref[col], errors="coerce")
        if values.isna().any() or not values.between(0, 1).all():
            bad = ref.loc[values.isna() | ~values.between(0, 1), col].iloc[0]
            raise ValueError(f"reference {path}: column {col} must hold fractions in [0,1], found {bad!r}")
        ref[col] = values
    ref["n_eval"] = pd.to_numeric(ref["n_eval"], errors="coerce").astype("Int64")
    if ref.duplicated(["base", "attack", "metric"]).any():
        raise ValueError(f"reference {path} has duplicate (base, attack, metric) rows")
    check_reference_seeds(ref)
    return ref


def current_rows(out: Path) -> pd.DataFrame:
    """This checkout's rows (``ok`` status) from ``<out>/runs.csv``."""
    csv = paths.runs_csv(out)
    if not csv.exists():
        return pd.DataFrame(columns=["run_id", "attack", "n_eval", "clean_acc", "robust_acc"])
    return latest_per(read_rows(csv), ("run_id", "attack", "n_eval"))


def describe_update(old: Optional[pd.DataFrame], new: pd.DataFrame) -> str:
    """What an update changed: added, removed and moved (base, attack, metric) means."""
    if old is None:
        return f"new reference with {len(new)} row(s)"
    key = ["base", "attack", "metric"]
    o, n = old.set_index(key), new.set_index(key)
    lines = [f"added {k}" for k in n.index.difference(o.index)] + [f"removed {k}" for k in o.index.difference(n.index)]
    for k in n.index.intersection(o.index):
        if float(o.at[k, "mean"]) != float(n.at[k, "mean"]):
            lines.append(f"changed {k}: mean {float(o.at[k, 'mean']):.4f} -> {float(n.at[k, 'mean']):.4f}")
    return "\n".join(lines) if lines else "reference unchanged"


def report(eval_lines: Sequence[GateLine], skipped: Sequence[str], train_lines: Sequence[TrainLine],
           no_data: Sequence[RunSpec]) -> Tuple[bool, str]:
    """Whether every gated quantity holds, and one line per quantity plus the verdict."""
    text = [line.text() for line in eval_lines]
    text += [f"eval  {run_id} skipped: its dataset is not on this machine (set --data-root or $BENCH_DATA_ROOT)"
             for run_id in skipped]
    text += [line.text() for line in train_lines]
    text += [f"train {s.run_id} ({s.method} {s.dataset} seed {s.seed}) skipped: its dataset is not on this machine"
             for s in no_data]
    failed = [line for line in eval_lines if line.verdict != "pass"] + [line for line in train_lines if line.verdict != "pass"]
    n_total = len(eval_lines) + len(train_lines)
    text.append(f"bench check: {n_total - len(failed)}/{n_total} gated quantities hold"
                + ("" if not failed else f"; {len(failed)} FAILED"))
    return not failed, "\n".join(text)


def run_check(preset: Path, reference: Path, out: Path, update: bool = False, data_root: Optional[str] = None,
              progress: bool = True, tickets: Optional[Path] = None) -> Tuple[int, str]:
    """Both gates, or ``update`` their references. Returns (exit code, report).

    ``tickets`` is the reference tickets folder (default: ``tickets/`` beside
    the reference CSV).
    """
    tickets = reference.parent / "tickets" if tickets is None else tickets
    sweep = load_sweep(preset)
    old = read_reference(reference) if reference.exists() or not update else None
    # The exact gate first: it needs no training and fails fast.
    eval_lines: List[GateLine] = []
    skipped: List[str] = []
    if not update:
        eval_lines, skipped = exact_gate(tickets, out / "eval-gate", data_root)
    # Specs whose data is absent here (e.g. MNIST without ../shared) are not run.
    available = [s for s in sweep.specs if _data_available(s, data_root)]
    no_data = [s for s in sweep.specs if s not in available]
    summary = run_sweep(dataclasses.replace(sweep, specs=tuple(available)), out, LocalExecutor(1), data_root,
                        progress=progress)
    now = seed_stats(current_rows(out), available, sweep.specs[0].eval_attacks if sweep.specs else ())
    if update:
        counts = now.groupby("base")["seeds"].first().map(lambda s: len(s.split("+")))
        if (counts < 3).any():
            raise ValueError(f"{preset}: every reference spec needs at least 3 seeds (seed: [0, 1, 2])")
        new = now
        if old is not None and no_data:
            # Bases this machine cannot reproduce (no data) are kept as they were.
            missing = {base_of(s) for s in no_data}
            new = pd.concat([new, old[old["base"].isin(missing)]], ignore_index=True)
        atomic_with(reference, lambda tmp: new.to_csv(tmp, index=False))
        # The exact gate's tickets: the seed-0 run of every base, evaluated under GATE_ATTACKS.
        gated = [s for s in available if s.seed == GATE_SEED]
        written = write_reference_tickets(gated, tickets, out, data_root, GATE_ATTACKS)
        return (1 if summary.failed else 0), (f"{summary.text()}\nupdated {reference}:\n{describe_update(old, new)}\n"
                                              f"updated {tickets}: {len(written)} ticket(s) with per-example flags")
    if old is None:
        raise ValueError(f"reference file not found: {reference} (create it with --update)")
    lines = training_gate(old, now, skip_bases=[base_of(s) for s in no_data])
    ok, text = report(eval_lines, skipped, lines, no_data)
    return (0 if ok and not summary.failed else 1), f"{summary.text()}\n{text}"


def _data_available(spec: RunSpec, data_root: Optional[str]) -> bool:
    """Whether the spec's data can be loaded here (MNIST needs ../shared or a data root)."""
    try:
        load_data(spec.dataset, spec.data_source, data_root, info=spec.data_info)
    except DataNotFoundError:
        return False
    return True

