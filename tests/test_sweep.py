"""bench sweep: grid expansion, validation, skip-on-rerun, failure recording, executors, CLI."""
from __future__ import annotations

import dataclasses
import itertools
import json
import shutil
from pathlib import Path
from typing import Any, Dict, Iterator, Sequence

import pandas as pd
import pytest
import yaml
from conftest import TINY as BASE_TINY

import bench.sweep.executors.base as executor_base
from bench.cli import main
from bench.core.threads import THREAD_ENV_VARS, thread_env, threads_per_worker
from bench.spec import RunSpec
from bench.sweep.executors.base import EXECUTORS, Executor, JobResult, SweepJob, discover_executors, get_executor
from bench.sweep.executors.local import LocalExecutor
from bench.sweep.grid import Sweep, dry_run_table, expand, finished_pairs, is_done, load_sweep, run_sweep

# The smallest real runs: a 10%-width MLP, one epoch of one-step PGD on 256 examples.
# The shared budget as sweep-file values (lists, not tuples), on the embedded data.
TINY: Dict[str, Any] = {**BASE_TINY, "dataset": "fashion-mnist", "data_source": "embedded", "method": "rst",
                        "eval_attacks": list(BASE_TINY["eval_attacks"])}


def write_sweep(tmp_path: Path, data: Dict[str, Any], name: str = "sweep.yaml") -> Path:
    """Write a sweep file and return its path."""
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_expansion_is_the_grid_product_over_fixed_fields(tmp_path: Path) -> None:
    grid = {"sparsity": [0.5, 0.9], "seed": [0, 1, 2], "hparams": {"weight_init": ["signed-constant", "kaiming-normal"]}}
    sweep = load_sweep(write_sweep(tmp_path, {"name": "g", "fixed": {**TINY, "epochs": 3}, "grid": grid}))
    assert sweep.name == "g"
    assert len(sweep.specs) == 2 * 3 * 2
    combos = {(s.sparsity, s.seed, s.hparams.weight_init) for s in sweep.specs}
    assert combos == set(itertools.product([0.5, 0.9], [0, 1, 2], ["signed-constant", "kaiming-normal"]))
    # Fixed fields reach every spec; eps is resolved so the id is the one the harness writes.
    assert all(s.epochs == 3 and s.arch == "mlp" and s.eps == pytest.approx(0.1) for s in sweep.specs)
    assert len({s.run_id for s in sweep.specs}) == len(sweep.specs)
    assert all(s.run_id == s.resolve().run_id for s in sweep.specs)


def test_list_of_grids_is_a_union_and_duplicates_collapse() -> None:
    fixed = dict(TINY)
    specs = expand(fixed, [{"method": ["rst"], "sparsity": [0.5, 0.9]},
                           {"method": ["dense-at"], "sparsity": [0.0]},
                           {"method": ["rst"], "sparsity": [0.9]}])
    assert [(s.method, s.sparsity) for s in specs] == [("rst", 0.5), ("rst", 0.9), ("dense-at", 0.0)]


def test_no_grid_is_one_run_of_the_fixed_fields() -> None:
    specs = expand(TINY, None)
    assert len(specs) == 1 and specs[0].arch == "mlp"


@pytest.mark.parametrize("data, message", [
    ({"fixed": TINY, "grid": {"sparsity": [0.5]}, "grids": {}}, "unknown sweep key(s) in"),
    ({"fixed": {**TINY, "colour": "red"}, "grid": {"seed": [0]}}, "unknown run spec key(s) in sweep.yaml.fixed: colour"),
    ({"fixed": TINY, "grid": {"sparsty": [0.5]}}, "unknown run spec key 'sparsty'"),
    ({"fixed": TINY, "grid": {"sparsity": 0.5}}, "sweep.yaml.grid.sparsity must be a non-empty list"),
    ({"fixed": TINY, "grid": {"sparsity": []}}, "must be a non-empty list"),
    ({"fixed": TINY, "grid": {"hparams": {"no_such": [1]}}}, "unknown rst hparams key(s): no_such"),
    ({"fixed": TINY, "grid": {"sparsity": [0.5, 1.5]}}, "point (sparsity=1.5): sparsity must be in [0, 1)"),
    ({"fixed": TINY, "grid": {"method": ["nope"]}}, "unknown method 'nope'"),
    ({"fixed": TINY, "grid": []}, "grid must not be an empty list"),
])
def test_bad_sweep_files_are_clear_errors(tmp_path: Path, data: Dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError) as err:
        load_sweep(write_sweep(tmp_path, data))
    assert message in str(err.value)


def test_conflicting_runtime_fields_for_one_run_are_an_error() -> None:
    with pytest.raises(ValueError, match="different evaluation settings"):
        expand(TINY, {"n_eval": [50, 100]})


def test_cli_reports_bad_sweep_with_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = write_sweep(tmp_path, {"fixed": TINY, "grid": {"sparsty": [0.5]}})
    assert main(["sweep", str(path), "--out", str(tmp_path / "out")]) == 2
    assert "unknown run spec key 'sparsty'" in capsys.readouterr().err


def test_executor_registry() -> None:
    discover_executors()
    assert "local" in EXECUTORS
    assert get_executor("local") is LocalExecutor
    with pytest.raises(ValueError, match="unknown executor 'nope'; choices: .*local"):
        get_executor("nope")
    with pytest.raises(ValueError, match="duplicate executor name 'local'"):
        EXECUTORS.add("local", LocalExecutor)
    with pytest.raises(ValueError, match="--jobs must be >= 1"):
        LocalExecutor(jobs=0)
    assert LocalExecutor.build(3).jobs == 3


def test_sweep_runs_then_skips_on_rerun(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    path = write_sweep(tmp_path, {"name": "tiny", "fixed": TINY, "grid": {"sparsity": [0.5, 0.9]}})
    sweep = load_sweep(path)
    assert not any(is_done(s, out) for s in sweep.specs)
    first = run_sweep(sweep, out, LocalExecutor(jobs=1), progress=False)
    assert (first.total, first.done, first.skipped, first.failed) == (2, 2, 0, 0)
    rows = pd.read_csv(out / "runs.csv")
    assert sorted(rows["run_id"]) == sorted(s.run_id for s in sweep.specs)
    assert set(rows["attack"]) == {"pgd20"}
    assert all(is_done(s, out) for s in sweep.specs)
    ran = pd.read_csv(out / "sweeps" / "tiny.csv")
    assert list(ran["status"]) == ["done", "done"] and (ran["seconds"] > 0).all()
    # Rerun: nothing runs, runs.csv is unchanged, the status file still says done with the seconds the runs
    # took (a resume used to overwrite them with skipped, 0 s: the sweep's cost was lost).
    second = run_sweep(sweep, out, LocalExecutor(jobs=1), progress=False)
    assert (second.done, second.skipped, second.failed) == (0, 2, 0)
    assert pd.read_csv(out / "runs.csv").equals(rows)
    status = pd.read_csv(out / "sweeps" / "tiny.csv")
    assert status.equals(ran)
    # Runs whose rows another sweep made are skipped by this one.
    other = run_sweep(dataclasses.replace(sweep, name="other"), out, LocalExecutor(jobs=1), progress=False)
    assert other.skipped == 2
    skipped = pd.read_csv(out / "sweeps" / "other.csv")
    assert list(skipped["status"]) == ["skipped", "skipped"] and (skipped["seconds"] == 0).all()
    # The dry run lists both specs as done.
    assert main(["sweep", str(path), "--out", str(out), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert all(s.run_id in printed for s in sweep.specs) and "2 spec(s), 2 done, 0 to run" in printed
    # The committed rows are what counts: without the run folders (a fresh clone) the runs stay done.
    for spec in sweep.specs:
        shutil.rmtree(out / "runs" / spec.run_id)
    assert all(is_done(s, out) for s in sweep.specs)
    third = run_sweep(sweep, out, LocalExecutor(jobs=1), progress=False)
    assert (third.done, third.skipped) == (0, 2) and pd.read_csv(out / "runs.csv").equals(rows)
    # Asking for another attack makes the same tickets not done (no row for it yet).
    more = expand({**TINY, "eval_attacks": ["pgd20", "cw20"]}, {"sparsity": [0.5]})
    assert more[0].run_id == sweep.specs[0].run_id and not is_done(more[0], out)
    # Re-queued under the same sweep name, the run's line adds the new job's seconds to the earlier ones (the
    # earlier training time was lost to the evaluation-only job's seconds before).
    jobs: list = []
    again = run_sweep(Sweep("tiny", tuple(more)), out, LocalExecutor(jobs=1), progress=False, on_result=jobs.append)
    assert again.done == 1 and len(jobs) == 1
    line = pd.read_csv(out / "sweeps" / "tiny.csv").set_index("run_id").loc[more[0].run_id]
    before = ran.set_index("run_id").loc[more[0].run_id, "seconds"]
    assert line["status"] == "done" and line["seconds"] == pytest.approx(before + jobs[0].seconds, abs=0.002)


def test_failed_run_is_recorded_and_the_sweep_goes_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    sweep = load_sweep(write_sweep(tmp_path, {"name": "f", "fixed": TINY, "grid": {"sparsity": [0.5, 0.9]}}))
    bad = sweep.specs[0].run_id
    real = executor_base.run_spec

    def flaky(spec: RunSpec, *args: Any, **kwargs: Any) -> pd.DataFrame:
        if spec.run_id == bad:
            raise RuntimeError("boom: out of memory")
        return real(spec, *args, **kwargs)

    monkeypatch.setattr(executor_base, "run_spec", flaky)
    summary = run_sweep(sweep, out, LocalExecutor(jobs=1), progress=False)
    assert (summary.done, summary.failed) == (1, 1)
    assert summary.failures == [(bad, "RuntimeError: boom: out of memory")]
    assert "1 failed" in summary.text() and f"FAILED {bad}: RuntimeError: boom" in summary.text()
    status = pd.read_csv(out / "sweeps" / "f.csv", keep_default_na=False).set_index("run_id")
    assert status.loc[bad, "status"] == "failed" and "boom" in status.loc[bad, "error"]
    assert status.loc[sweep.specs[1].run_id, "status"] == "done"
    assert "RuntimeError: boom" in (out / "runs" / bad / "error.txt").read_text()
    assert bad not in set(pd.read_csv(out / "runs.csv")["run_id"])
    # Rerun without the fault: only the failed run runs.
    monkeypatch.setattr(executor_base, "run_spec", real)
    again = run_sweep(sweep, out, LocalExecutor(jobs=1), progress=False)
    assert (again.done, again.skipped, again.failed) == (1, 1, 0)
    assert {bad} | {sweep.specs[1].run_id} == {rid for rid, _, _ in finished_pairs(out)}


@pytest.mark.slow
def test_parallel_processes_write_the_same_rows(tmp_path: Path) -> None:
    out = tmp_path / "out"
    sweep = load_sweep(write_sweep(tmp_path, {"name": "p", "fixed": TINY, "grid": {"seed": [0, 1]}}))
    summary = run_sweep(sweep, out, LocalExecutor(jobs=2), progress=False)
    assert (summary.done, summary.failed) == (2, 0)
    rows = pd.read_csv(out / "runs.csv")
    assert sorted(rows["run_id"]) == sorted(s.run_id for s in sweep.specs)
    assert all(is_done(s, out) for s in sweep.specs)
    # Each worker had its share of the cores, in torch and in the math libraries' environment.
    share = threads_per_worker(2)
    for s in sweep.specs:
        threads = json.loads((out / "runs" / s.run_id / "meta.json").read_text())["threads"]
        assert threads == {"torch": share, **{name: str(share) for name in THREAD_ENV_VARS}}


def test_threads_per_worker_shares_the_cores() -> None:
    """cores // workers, never below one; the environment names OpenMP, MKL and OpenBLAS."""
    assert [threads_per_worker(w, cores=16) for w in (1, 2, 3, 16, 32)] == [16, 8, 5, 1, 1]
    assert thread_env(3) == {"OMP_NUM_THREADS": "3", "MKL_NUM_THREADS": "3", "OPENBLAS_NUM_THREADS": "3"}


class RecordingExecutor(Executor):
    """A second executor built only from the interface: runs jobs in reverse order."""

    def run(self, jobs: Sequence[SweepJob]) -> Iterator[JobResult]:
        for job in reversed(list(jobs)):
            yield JobResult(job.index, job.spec.run_id, "failed", 0.0, error="not run")


def test_any_executor_plugs_into_the_driver(tmp_path: Path) -> None:
    sweep = load_sweep(write_sweep(tmp_path, {"name": "r", "fixed": TINY, "grid": {"seed": [0, 1, 2]}}))
    seen = []
    summary = run_sweep(sweep, tmp_path / "out", RecordingExecutor(), progress=False, on_result=seen.append)
    assert [r.index for r in seen] == [2, 1, 0]
    assert summary.failed == 3 and summary.done == 0


def test_dry_run_table_shows_varying_fields(tmp_path: Path) -> None:
    sweep = load_sweep(write_sweep(tmp_path, {"fixed": TINY, "grid": {"epochs": [1, 2], "hparams": {"weight_init": ["signed-constant", "kaiming-normal"]}}}))
    table = dry_run_table(sweep, tmp_path / "out")
    assert list(table.columns[:8]) == ["run_id", "state", "method", "dataset", "arch", "width", "sparsity", "seed"]
    assert "epochs" in table.columns and "hparams.weight_init" in table.columns and "lr" not in table.columns
    assert set(table["state"]) == {"todo"}


@pytest.mark.parametrize("path", sorted(Path(__file__).resolve().parent.parent.glob("configs/sweeps/*.yaml")), ids=lambda p: p.name)
def test_shipped_sweep_files_expand(path: Path) -> None:
    sweep = load_sweep(path)
    assert sweep.specs and len({s.run_id for s in sweep.specs}) == len(sweep.specs)


def test_more_examples_than_the_test_set_resume(tmp_path: Path) -> None:
    """n_eval 100000 on a test set of 1000 ran all 1000 and then repeated on every invocation (its rows said
    1000); the rows record the test set's size, and a sweep resumes. A request the whole set covers only when
    the row was the whole set: 60 rows never satisfy 100000."""
    out = tmp_path / "out"
    fixed = {**TINY, "n_eval": 100000, "eval_attacks": ["fgsm"]}
    sweep = load_sweep(write_sweep(tmp_path, {"name": "big", "fixed": fixed, "grid": {"sparsity": [0.5]}}))
    assert run_sweep(sweep, out, LocalExecutor(jobs=1), progress=False).done == 1
    rows = pd.read_csv(out / "runs.csv")
    assert set(rows["n_eval"]) == {1000} and set(rows["n_test"]) == {1000}
    assert is_done(sweep.specs[0], out)
    assert run_sweep(sweep, out, LocalExecutor(jobs=1), progress=False).done == 0
    assert is_done(dataclasses.replace(sweep.specs[0], n_eval=1000), out)
    assert not is_done(dataclasses.replace(sweep.specs[0], n_eval=999), out)


def test_more_examples_make_a_done_run_not_done(tmp_path: Path) -> None:
    """Rows on 30 examples do not make a spec asking for 60 done (its n_eval rows are missing)."""
    out = tmp_path / "out"
    path = write_sweep(tmp_path, {"name": "n", "fixed": {**TINY, "n_eval": 30}, "grid": {"sparsity": [0.5]}})
    sweep = load_sweep(path)
    run_sweep(sweep, out, LocalExecutor(jobs=1), progress=False)
    assert is_done(sweep.specs[0], out)
    bigger = dataclasses.replace(sweep.specs[0], n_eval=60)
    assert bigger.run_id == sweep.specs[0].run_id and not is_done(bigger, out)
    more = dataclasses.replace(sweep, specs=(bigger,))
    assert run_sweep(more, out, LocalExecutor(jobs=1), progress=False).done == 1
    assert is_done(bigger, out)


def test_sweep_refuses_a_status_file_that_is_not_one(tmp_path: Path) -> None:
    out = tmp_path / "out"
    sweep = load_sweep(write_sweep(tmp_path, {"name": "tiny", "fixed": TINY, "grid": {"sparsity": [0.5]}}))
    (out / "sweeps").mkdir(parents=True)
    (out / "sweeps" / "tiny.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match=r"tiny\.csv: not a sweep status file"):
        run_sweep(sweep, out, LocalExecutor(jobs=1), progress=False)
