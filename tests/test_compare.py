"""bench compare: McNemar's exact test against closed forms, pairing on the common examples, and the CLI."""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import TINY

from bench.cli import main
from bench.reporting.compare import compare_flags, compare_runs, mcnemar_exact


@pytest.mark.parametrize("b, c, expected", [
    (0, 0, 1.0),
    (3, 3, 1.0),
    (0, 6, 2 * 0.5**6),                                   # all six discordant pairs one way
    (1, 9, 2 * (1 + 10) / 2**10),                          # P[X <= 1], X ~ Bin(10, 1/2), doubled
    (2, 8, 2 * (1 + 10 + 45) / 2**10),
    (5, 4, 1.0),                                           # doubled tail above one is capped
    (10, 30, 2 * sum(math.comb(40, k) for k in range(11)) / 2**40),
])
def test_mcnemar_exact_matches_the_binomial_tail(b: int, c: int, expected: float) -> None:
    assert mcnemar_exact(b, c) == pytest.approx(expected, rel=1e-12)
    assert mcnemar_exact(c, b) == pytest.approx(expected, rel=1e-12)


def test_negative_counts_are_refused() -> None:
    with pytest.raises(ValueError, match="must be >= 0"):
        mcnemar_exact(-1, 3)


def test_flags_are_paired_on_the_common_prefix() -> None:
    """Discordant counts on the first min(n_a, n_b) examples; accuracies of those examples."""
    a = torch.tensor([1, 1, 0, 0, 1, 1, 1, 0], dtype=torch.bool)
    b = torch.tensor([1, 0, 1, 0, 0, 0], dtype=torch.bool)
    r = compare_flags("pgd20", "alone", a, b)
    assert (r.n, r.only_a, r.only_b) == (6, 3, 1)
    assert (r.robust_a, r.robust_b) == (pytest.approx(4 / 6), pytest.approx(2 / 6))
    assert r.p_value == pytest.approx(2 * (1 + 4) / 16) and not r.significant(0.05)


def tiny_run(out: Path, seed: int, *extra: str) -> Path:
    """A finished tiny RST run; its run folder."""
    args = ["run", "--method", "rst", "--sparsity", "0.5", "--seed", str(seed), "--out", str(out), *extra]
    for key, value in TINY.items():
        args += [f"--{key.replace('_', '-')}", ",".join(value) if isinstance(value, tuple) else str(value)]
    assert main(args) == 0
    run_id = pd.read_csv(out / "runs.csv")["run_id"].iloc[-1]
    return out / "runs" / run_id


def test_bench_compare_two_runs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Two seeds of a tiny run: the table's counts are those of each run's own recorded accuracy; a run on
    another eps cannot be paired."""
    a, b = tiny_run(tmp_path / "out", 0), tiny_run(tmp_path / "out", 1)
    rows = compare_runs(a, b)
    assert [r.attack for r in rows] == ["pgd20"]
    recorded = pd.read_csv(tmp_path / "out" / "runs.csv").set_index("run_id")["robust_acc"]
    assert rows[0].n == TINY["n_eval"]
    assert rows[0].robust_a == pytest.approx(recorded[a.name]) and rows[0].robust_b == pytest.approx(recorded[b.name])
    assert rows[0].robust_a - rows[0].robust_b == pytest.approx((rows[0].only_a - rows[0].only_b) / rows[0].n)
    capsys.readouterr()
    assert main(["compare", str(a), str(b)]) == 0
    text = capsys.readouterr().out
    assert "McNemar's exact test" in text and "| pgd20 | alone | 60 |" in text
    other = tiny_run(tmp_path / "out", 0, "--eps", "0.2")
    with pytest.raises(ValueError, match="differ in eps"):
        compare_runs(a, other)
