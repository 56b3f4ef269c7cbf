"""Every bad input in tests/bad_inputs.py: one stderr line with the expected words, its exit code, no traceback,
nothing written; and docs/bad-inputs.md holds exactly the rows these runs produce."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from bad_inputs import CASES, Case, make_finished_run, run_case, table_row

DOC = Path(__file__).resolve().parent.parent / "docs" / "bad-inputs.md"


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny finished run the cases about existing runs copy."""
    return make_finished_run(tmp_path_factory.mktemp("finished"))


@pytest.fixture(scope="module")
def doc_rows() -> dict:
    """The rows of docs/bad-inputs.md by case name."""
    rows = {}
    for line in DOC.read_text().splitlines():
        m = re.match(r"\| \d+ \| (.+?) \| `", line)
        if m:
            rows[m.group(1)] = line
    return rows


def test_there_are_enough_cases_with_unique_names() -> None:
    names = [c.name for c in CASES]
    assert len(names) >= 140 and len(set(names)) == len(names)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(case: Case, finished: Path, tmp_path: Path, doc_rows: dict) -> None:
    outcome = run_case(case, tmp_path, finished)
    assert outcome.code == case.code, outcome
    assert len(outcome.lines) == 1 and "Traceback" not in outcome.message, outcome.lines
    assert case.expect in outcome.message, outcome.message
    assert outcome.written == (), f"wrote {outcome.written}"
    # The docs table is what this run printed (regenerate it with scripts/bad_inputs_table.py).
    number = CASES.index(case) + 1
    assert doc_rows.get(case.name) == table_row(number, case, outcome), "docs/bad-inputs.md is stale: run scripts/bad_inputs_table.py"
