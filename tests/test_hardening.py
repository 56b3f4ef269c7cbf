"""File and input boundaries: paths built from CSV cells stay inside the output folder, the leaderboard
deletes only what it wrote, spreadsheet formulas are neutralised, a finished run's spec is never rewritten."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from bench.cli import main
from bench.export import export_robustbench_json
from bench.leaderboard import build_leaderboard, neutralise

RUN_ID = "0123456789ab"


def rows(**overrides: Any) -> pd.DataFrame:
    """Minimal runs.csv rows of one ticket (PGD-20 and the worst case)."""
    base = {"run_id": RUN_ID, "method": "rst", "dataset": "fashion-mnist", "arch": "convnet", "width": 1.0,
            "target_sparsity": 0.9, "measured_sparsity": 0.9, "seed": 0, "norm": "Linf", "eps": 0.1, "version": "",
            "eot_samples": 1, "n_eval": 100, "clean_acc": 0.8, "flags": "", "status": "ok"}
    base.update(overrides)
    return pd.DataFrame([{**base, "attack": "pgd20", "robust_acc": 0.5},
                         {**base, "attack": "worst_case", "robust_acc": 0.4, "version": "pgd20"}])


@pytest.mark.parametrize("field, value", [("dataset", "../../x"), ("dataset", "/tmp/outside"), ("norm", "../../../x"),
                                          ("run_id", "../../../../x"), ("run_id", "ABCDEF012345")])
def test_crafted_cells_never_write_outside_the_output_folder(field: str, value: str, tmp_path: Path) -> None:
    out = tmp_path / "a" / "b" / "out"
    with pytest.raises(ValueError, match=field if field != "norm" else "norm"):
        export_robustbench_json(rows(**{field: value}), out)
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert written == []


def test_leaderboard_deletes_only_what_it_wrote(tmp_path: Path) -> None:
    """Someone's JSON files in --out survive; entries the board wrote for dropped tickets go."""
    out = tmp_path / "board"
    theirs = out / "entries" / "fashion-mnist" / "Linf" / "their_notes.json"
    theirs.parent.mkdir(parents=True)
    theirs.write_text("{}")
    build_leaderboard(rows(), out)
    mine = out / "entries" / "fashion-mnist" / "Linf" / f"rst_convnet_{RUN_ID}.json"
    assert mine.exists() and theirs.exists()
    build_leaderboard(rows(run_id="fedcba987654"), out)
    assert not mine.exists() and theirs.exists()


@pytest.mark.parametrize("cell", ["=HYPERLINK(\"http://x\")", "+1+2", "-2+3", "@SUM(A1)", "\tx"])
def test_formula_cells_are_neutralised(cell: str, tmp_path: Path) -> None:
    assert neutralise(cell) == "'" + cell
    build_leaderboard(rows(method=cell), tmp_path / "board")
    written = pd.read_csv(tmp_path / "board" / "leaderboard.csv", dtype=str, keep_default_na=False)
    assert list(written["method"]) == ["'" + cell]
    assert all(not str(v).startswith(("=", "+", "-", "@", "\t")) for col in written for v in written[col])
    assert neutralise(0.5) == 0.5 and neutralise("rst") == "rst"


def test_eval_with_other_attacks_keeps_the_finished_spec(tmp_path: Path, tiny_spec_kwargs: Any) -> None:
    """`bench eval RUN --attacks fgsm` appends rows and leaves the run's spec.json as the run wrote it."""
    flags = ["--arch", "mlp", "--width", "0.1", "--epochs", "1", "--train-steps", "1", "--n-train", "300",
             "--n-eval", "40", "--eval-attacks", "pgd20", "--device", "cpu", "--batch-size", "100"]
    assert main(["run", "--out", str(tmp_path), *flags]) == 0
    run_dir = next((tmp_path / "runs").iterdir())
    before = (run_dir / "spec.json").read_text()
    assert main(["eval", str(run_dir), "--attacks", "fgsm"]) == 0
    assert (run_dir / "spec.json").read_text() == before
    assert json.loads(before)["eval_attacks"] == ["pgd20"]
    assert "fgsm" in set(pd.read_csv(tmp_path / "runs.csv")["attack"])
