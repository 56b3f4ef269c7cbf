"""The published results are rebuilt from their committed rows: every table byte for byte, the paper-vs-here
table, and every row traced to a committed sweep file."""
from __future__ import annotations

import shlex
from pathlib import Path
from typing import List

import pandas as pd
import pytest
from conftest import load_script

from bench.cli import main
from bench.sweep.grid import load_sweep

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "published.sh"
OUT = "results/published"


def table_commands() -> List[List[str]]:
    """The `bench table` commands of scripts/published.sh, as argument lists (without `bench`)."""
    lines = [line for line in SCRIPT.read_text(encoding="utf-8").splitlines() if line.startswith("bench table ")]
    return [shlex.split(line.replace("$OUT", OUT))[1:] for line in lines]


def test_the_script_lists_tables() -> None:
    assert len(table_commands()) >= 8


@pytest.mark.parametrize("args", table_commands(), ids=lambda a: Path(a[a.index("--output") + 1]).name)
def test_each_table_is_rebuilt_byte_for_byte(args: List[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`bench table` on the committed runs.csv writes exactly the committed file."""
    monkeypatch.chdir(ROOT)
    i = args.index("--output")
    committed = ROOT / args[i + 1]
    rebuilt = tmp_path / committed.name
    assert main([*args[:i + 1], str(rebuilt), *args[i + 2:]]) == 0
    assert committed.exists(), f"{committed} is not committed: run bash scripts/published.sh derive"
    assert rebuilt.read_bytes() == committed.read_bytes(), f"{committed} differs from a rebuild from runs.csv"


def test_the_paper_vs_here_table_is_up_to_date(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_script(monkeypatch, "paper_vs_here").main(["--check"]) == 0


def test_every_published_row_comes_from_a_committed_sweep() -> None:
    """Each run of results/published/runs.csv is a spec of one of the published sweep files."""
    ids = {s.run_id for path in (ROOT / "configs" / "sweeps").glob("published-*.yaml") for s in load_sweep(path).specs}
    rows = pd.read_csv(ROOT / OUT / "runs.csv", usecols=["run_id"], dtype=str)
    assert not rows.empty and set(rows["run_id"]) <= ids


def test_results_readme_lists_every_command_of_the_script() -> None:
    """results/README.md lists the published results' commands: each bench / python line of scripts/published.sh."""
    readme = (ROOT / "results" / "README.md").read_text(encoding="utf-8")
    commands = [line.strip() for line in SCRIPT.read_text(encoding="utf-8").splitlines()
                if line.strip().startswith(("bench ", "python scripts/", "OMP_NUM_THREADS=1 bench "))]
    assert len(commands) >= 15
    missing = [c for c in commands if c not in readme]
    assert not missing, f"results/README.md does not list: {missing}"


def test_the_grid_findings_are_up_to_date(monkeypatch: pytest.MonkeyPatch) -> None:
    """results/published/findings.md is exactly what scripts/grid_findings.py makes of the committed rows."""
    assert load_script(monkeypatch, "grid_findings").main(["--check"]) == 0
    text = (ROOT / OUT / "findings.md").read_text(encoding="utf-8")
    assert "## Peak sparsity per family" in text and "## Paper vs here" in text
