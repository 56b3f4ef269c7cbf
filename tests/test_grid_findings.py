"""scripts/grid_findings.py's R2S section: R2S set against RST-0.9 of the same seed, attack by attack."""
from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Dict, List

import pandas as pd
import pytest
from conftest import load_script

from bench.core.results import read_rows

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def findings(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The findings script as a module."""
    return load_script(monkeypatch, "grid_findings")


def row(method: str, seed: int, attack: str, acc: float, **extra: object) -> Dict[str, object]:
    """One tidy row of the R2S cell (Fashion-MNIST, width 0.5, sparsity 0.9)."""
    base: Dict[str, object] = {"run_id": f"{method}{seed}", "method": method, "dataset": "fashion-mnist",
                               "width": 0.5, "target_sparsity": 0.9, "seed": seed, "attack": attack,
                               "norm": "Linf", "eps": 0.1, "scope": "alone", "n_eval": 1000, "robust_acc": acc,
                               "status": "ok", "created_at": "2026-12-07T00:00:00+00:00"}
    base.update(extra)
    return base


def table_lines(lines: List[str]) -> Dict[str, List[str]]:
    """The section's table rows by attack, split into cells."""
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines if line.startswith("| ")]
    return {c[0]: c for c in cells[1:]}


def test_r2s_is_paired_with_rst_by_seed_not_by_order(findings: ModuleType) -> None:
    """Differences are R2S minus the RST run of the same seed, whatever order the rows come in."""
    rows = [row("rst", 1, "pgd20", 0.50), row("rst", 0, "pgd20", 0.60),
            row("r2s", 0, "r2s-nonadaptive", 0.70, adaptive=False, draws=5),
            row("r2s", 1, "r2s-nonadaptive", 0.62, adaptive=False, draws=5),
            row("r2s", 0, "eot-pgd", 0.58, adaptive=True, draws=5),
            row("r2s", 1, "eot-pgd", 0.47, adaptive=True, draws=5)]
    table = table_lines(findings.r2s_section(pd.DataFrame(rows)))
    # Seed 0: 70 - 60 = 10, seed 1: 62 - 50 = 12 (in order of the file it would be 70 - 50 and 62 - 60).
    assert table["r2s-nonadaptive"][-1] == "11.0 ± 1.4"
    assert table["r2s-nonadaptive"][1] == "no" and table["eot-pgd"][1] == "yes"
    assert table["eot-pgd"][-1] == "-2.5 ± 0.7"
    assert table["eot-pgd"][4] == "52.5 ± 7.8 (2 seeds)"


def test_r2s_section_on_the_committed_evidence(findings: ModuleType) -> None:
    """On results/r2s (seed 0): the non-adaptive gain over RST's PGD-20, and AutoAttack-rand without a counterpart."""
    table = table_lines(findings.r2s_section(read_rows(ROOT / "results" / "r2s" / "runs.csv")))
    assert table["r2s-nonadaptive"][4:] == ["70.6 (1 seed)", "pgd20", "500", "60.6", "10.0"]
    assert table["autoattack-rand"][5:] == ["–", "–", "–", "–"]
    assert table["worst_case"][1:4] == ["yes", "200", "5"]


def test_no_r2s_rows_says_so(findings: ModuleType) -> None:
    """Without R2S rows the section says none has finished, and has no table."""
    lines = findings.r2s_section(pd.DataFrame([row("rst", 0, "pgd20", 0.6)]))
    assert any("No R2S run has finished yet" in line for line in lines)
    assert not table_lines(lines)


def test_r2s_reference_rows_replace_the_grids(findings: ModuleType) -> None:
    """With R2S's reference rows (its own candidates), RST comes from them, on R2S's examples, not from the grid."""
    grid = [row("rst", 0, "worst_case", 0.60, n_eval=500), row("r2s", 0, "worst_case", 0.55, adaptive=True, n_eval=200)]
    reference = pd.DataFrame([row("rst", 0, "worst_case", 0.54, n_eval=200)])
    table = table_lines(findings.r2s_section(pd.DataFrame(grid), reference))
    assert table["worst_case"][6:] == ["200", "54.0", "1.0"]
    table = table_lines(findings.r2s_section(pd.DataFrame(grid)))
    assert table["worst_case"][6:] == ["500", "60.0", "-5.0"]


def test_r2s_pairs_one_run_per_seed_at_the_grids_budget(findings: ModuleType) -> None:
    """Rows at another eps are left out; two RST runs of one seed are refused by name; '-0.0' never appears."""
    rows = [row("rst", 0, "pgd20", 0.60), row("rst", 0, "pgd20", 0.20, run_id="other-eps", eps=0.2),
            row("r2s", 0, "pgd20", 0.5996, adaptive=False)]
    table = table_lines(findings.r2s_section(pd.DataFrame(rows)))
    assert table["pgd20"][7:] == ["60.0", "0.0"]
    rows.append(row("rst", 0, "pgd20", 0.61, run_id="second"))
    with pytest.raises(ValueError, match="several runs of seed"):
        findings.r2s_section(pd.DataFrame(rows))


def test_r2s_adaptive_column_says_what_the_rows_say(findings: ModuleType) -> None:
    """'?' for rows without the column, and an attack outside the sweep's list still gets its line."""
    rows = [row("r2s", 0, "eot-pgd", 0.5), row("r2s", 0, "fgsm", 0.7, adaptive="False")]
    table = table_lines(findings.r2s_section(pd.DataFrame(rows)))
    assert table["eot-pgd"][1] == "?" and table["fgsm"][1] == "no" and table["fgsm"][5] == "–"
