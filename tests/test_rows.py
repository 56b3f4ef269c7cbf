"""Which rows count (issue 32): one rule in bench.core.rows, used by every reader of runs.csv."""
from __future__ import annotations

import ast
from pathlib import Path

import pandas as pd
import pytest

from bench.core.rows import counted, latest_curves, latest_per, latest_rows

ROOT = Path(__file__).resolve().parent.parent


def frame(**columns: list) -> pd.DataFrame:
    """A small rows frame, text cells as runs.csv is read."""
    return pd.DataFrame(columns)


def test_counted_keeps_ok_and_blank_status_and_drops_failed() -> None:
    rows = frame(run_id=["a", "b", "c", "d"], status=["ok", "", "failed", "killed"])
    assert list(counted(rows)["run_id"]) == ["a", "b"]
    # Rows from a file without the column (concatenated with one that has it) count.
    older = pd.concat([frame(run_id=["e"]), frame(run_id=["f"], status=["failed"])], ignore_index=True)
    assert list(counted(older)["run_id"]) == ["e"]
    assert list(counted(frame(run_id=["g"]))["run_id"]) == ["g"]


def test_latest_per_is_the_last_counted_row_per_key() -> None:
    rows = frame(run_id=["a", "a", "a", "b"], attack=["pgd20"] * 4, value=["1", "2", "3", "4"],
                 status=["ok", "ok", "failed", "ok"])
    kept = latest_per(rows, ("run_id", "attack"))
    assert dict(zip(kept["run_id"], kept["value"])) == {"a": "2", "b": "4"}


def test_latest_rows_prefers_more_examples_then_alone_then_newest_and_skips_failed() -> None:
    rows = frame(run_id=["a"] * 5, attack=["pgd20"] * 5, n_eval=[100, 200, 200, 200, 500],
                 scope=["alone", "after:fgsm", "alone", "alone", "alone"],
                 created_at=["1", "4", "2", "3", "5"], status=["ok", "ok", "ok", "ok", "failed"],
                 robust_acc=[0.1, 0.2, 0.3, 0.4, 0.5])
    assert latest_rows(rows, "pgd20")["robust_acc"].tolist() == [0.4]


def test_a_failed_curve_row_is_not_a_curve_point() -> None:
    rows = frame(run_id=["a", "a"], attack=["fmn", "fmn"], n_eval=[10, 10], eps=[0.1, 0.2], version=["v", "v"],
                 status=["ok", "failed"])
    assert latest_curves(rows)["eps"].tolist() == [0.1]


# Functions that read a sweep's status table (``sweeps/<name>.csv``: done / skipped / pending per spec), whose
# column is also called ``status``; they never see rows.
SWEEP_STATUS_READERS = {("bench/sweep/grid.py", "ran_before"), ("scripts/sync_sweep.py", "merged_status")}


def status_readers(path: Path) -> list:
    """Lines of ``path`` that read a rows frame's status column (``df["status"]`` or ``"status" in df``)."""
    tree = ast.parse(path.read_text())
    relative = path.relative_to(ROOT).as_posix()
    skipped = {id(inner) for node in ast.walk(tree)
               if isinstance(node, ast.FunctionDef) and (relative, node.name) in SWEEP_STATUS_READERS
               for inner in ast.walk(node)}
    hits = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant) and node.slice.value == "status":
            hits.append(node.lineno)
        if (isinstance(node, ast.Compare) and isinstance(node.left, ast.Constant) and node.left.value == "status"
                and any(isinstance(op, ast.In) for op in node.ops)):
            hits.append(node.lineno)
    return hits


@pytest.mark.parametrize("path", sorted(p.relative_to(ROOT).as_posix() for pkg in ("bench", "tickets", "baselines", "scripts")
                                        for p in (ROOT / pkg).rglob("*.py") if p.name != "rows.py"))
def test_only_bench_rows_reads_the_status_column(path: str) -> None:
    """The status rule lives in bench.core.rows; no other module filters rows on it by hand."""
    assert status_readers(ROOT / path) == [], f"{path} reads the status column itself: use bench.core.rows"
