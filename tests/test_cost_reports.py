"""Robustness against cost: the Pareto front by hand, `bench table --metric <cost>` and `bench plot --kind cost`."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from conftest import TINY  # noqa: E402 - the shared budget (tests/ is on sys.path)

from bench.cli import main
from bench.harness import run_spec
from bench.reporting.costs import COSTS, cost_points, pareto_front
from bench.spec import RunSpec


def test_pareto_front_by_hand() -> None:
    """Dominated points (costlier and no more robust, within a method) are off the front; methods are apart."""
    points = pd.DataFrame({"method": ["a", "a", "a", "a", "b"], "cost": [1.0, 2.0, 3.0, 3.0, 9.0],
                           "mean": [10.0, 30.0, 20.0, 30.0, 5.0]})
    # a@3/20 is dominated by a@2/30; a@3/30 too (costlier, equally robust); b stands alone.
    assert list(pareto_front(points)) == [True, True, False, False, True]


@pytest.fixture(scope="module")
def rows(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Rows of four random-mask controls (no training): weight and channel tickets at 0.5 and 0.9."""
    out = tmp_path_factory.mktemp("costs")
    for granularity in ("weight", "channel"):
        for sparsity in (0.5, 0.9):
            run_spec(RunSpec(**{**TINY, "epochs": 0, "arch": "convnet", "width": 0.25}, method="random",
                             sparsity=sparsity, granularity=granularity), out, show=False)
    return out / "runs.csv"


def test_cost_points_from_rows(rows: Path) -> None:
    """One point per configuration with the rows' cost; the front is pareto_front's; channel tickets cost less."""
    df = pd.read_csv(rows)
    found = cost_points(df, "pgd20", "macs_compacted")
    points = found.points
    assert len(points) == 4 and set(points["granularity"]) == {"weight", "channel"}
    by = points.set_index(["granularity", "target_sparsity"])["cost"]
    assert by[("channel", 0.9)] < by[("weight", 0.9)]
    assert list(points["front"]) == list(pareto_front(points))
    assert "Pareto front" in found.caption


def test_missing_cost_is_a_clear_error(rows: Path) -> None:
    """Rows without the cost column are named in the error."""
    df = pd.read_csv(rows).drop(columns=["latency_b1_ms"])
    with pytest.raises(ValueError, match="latency_b1_ms"):
        cost_points(df, "pgd20", "latency_b1")
    with pytest.raises(ValueError, match="unknown cost"):
        cost_points(df, "pgd20", "flops")


@pytest.mark.parametrize("cost", sorted(COSTS))
def test_table_and_plot_commands(rows: Path, tmp_path: Path, cost: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`bench table --metric COST` prints one line per configuration with ★ on the fronts; `bench plot --kind
    cost` writes PNG and PDF."""
    main(["table", str(rows), "--attack", "pgd20", "--metric", cost])
    text = capsys.readouterr().out
    lines = [line for line in text.splitlines() if line.startswith("| random")]
    assert len(lines) == 4 and any("★" in line for line in lines)
    main(["plot", str(rows), "--kind", "cost", "--cost", cost, "--attack", "pgd20", "--out-dir", str(tmp_path)])
    assert (tmp_path / f"robust_vs_{cost}.png").stat().st_size > 0
    assert (tmp_path / f"robust_vs_{cost}.pdf").stat().st_size > 0


def test_an_older_ticket_gets_its_cost_on_new_rows(tmp_path: Path) -> None:
    """A ticket whose meta.json predates the cost (no 'cost', no 'removed_channels') writes new rows that carry
    them, counted on load; meta.json itself is left as it was."""
    spec = RunSpec(**{**TINY, "epochs": 0}, method="random", sparsity=0.5, granularity="channel")
    first = run_spec(spec, tmp_path, show=False)
    meta_path = tmp_path / "runs" / first["run_id"].iloc[0] / "meta.json"
    meta = json.loads(meta_path.read_text())
    old = {k: v for k, v in meta.items() if k not in ("cost", "removed_channels")}
    meta_path.write_text(json.dumps(old))
    main(["eval", str(meta_path.parent), "--attacks", "fgsm", "--no-progress"])
    rows = pd.read_csv(tmp_path / "runs.csv")
    fgsm = rows[rows["attack"] == "fgsm"].iloc[0]
    assert fgsm["macs_ticket"] == meta["cost"]["macs_ticket"] and fgsm["params_nonzero"] == meta["cost"]["params_nonzero"]
    assert fgsm["removed_channels"] == pytest.approx(meta["removed_channels"], abs=1e-6)
    assert json.loads(meta_path.read_text()) == old


def test_latencies_of_several_thread_counts_are_refused(rows: Path) -> None:
    """Latencies measured with different thread counts do not share a cost table (MACs still do)."""
    df = pd.read_csv(rows)
    df.loc[df.index[0], "latency_threads"] = 4
    with pytest.raises(ValueError, match="latency_threads"):
        cost_points(df, "pgd20", "latency_b128")
    assert len(cost_points(df, "pgd20", "macs").points) == 4


def test_a_rerun_that_adds_no_row_measures_no_latency(tmp_path: Path) -> None:
    """Latency is measured when a run writes a new row; a rerun that adds nothing leaves latency.json absent."""
    spec = RunSpec(**{**TINY, "epochs": 0}, method="random", sparsity=0.5)
    first = run_spec(spec, tmp_path, show=False)
    path = tmp_path / "runs" / first["run_id"].iloc[0] / "latency.json"
    path.unlink()
    run_spec(spec, tmp_path, show=False)
    assert not path.exists()
    # A new row (another attack) measures it again.
    main(["eval", str(path.parent), "--attacks", "fgsm", "--no-progress"])
    assert path.exists()
