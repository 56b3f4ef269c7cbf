"""The ``ray`` sweep executor on a local two-CPU Ray instance (started once for the module).

Ray is a test requirement (``pip install -e '.[ray]'``): without it this module fails to import.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pandas as pd
import pytest
import ray
import torch
import yaml
from conftest import TINY as BASE_TINY

from bench.cli import main
from bench.core.results import UNREPEATABLE_COLUMNS
from bench.data import DataBundle
from bench.methods import RunContext
from bench.spec import RunSpec
from bench.sweep.executors.base import EXECUTORS, JobResult, SweepJob, discover_executors, run_job
from bench.sweep.executors.local import LocalExecutor
from bench.sweep.executors.ray_executor import INSTALL_HINT, RayExecutor, import_ray
from bench.sweep.grid import is_done, load_sweep, run_sweep
from bench.train import Compute

# The smallest real runs: a 10%-width MLP, one epoch of one-step PGD on 300 examples.
# The shared budget as sweep-file values (lists, not tuples), on the embedded data.
TINY: Dict[str, Any] = {**BASE_TINY, "dataset": "fashion-mnist", "data_source": "embedded", "method": "rst",
                        "eval_attacks": list(BASE_TINY["eval_attacks"])}

# Columns that legitimately differ between two executions of the same run.
VOLATILE = set(UNREPEATABLE_COLUMNS)


@pytest.fixture(scope="module", autouse=True)
def ray_cluster() -> Iterator[None]:
    """One local Ray instance with 2 CPUs for every test here; the driver's torch uses 1 thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    ray.init(num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()
    torch.set_num_threads(threads)


def write_sweep(tmp_path: Path, data: Dict[str, Any], name: str = "sweep.yaml") -> Path:
    """Write a sweep file and return its path."""
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def comparable(csv_path: Path) -> pd.DataFrame:
    """runs.csv without timing/provenance columns, sorted by run and attack."""
    df = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    return df.drop(columns=[c for c in VOLATILE if c in df]).sort_values(["run_id", "attack"]).reset_index(drop=True)


def test_ray_executor_is_registered_with_flags() -> None:
    discover_executors()
    assert EXECUTORS.get("ray") is RayExecutor
    ex = RayExecutor.build(1, {"address": "auto", "cpus_per_run": "2", "gpus_per_run": "0.5", "max_retries": "0"})
    assert (ex.address, ex.cpus_per_run, ex.gpus_per_run, ex.max_retries) == ("auto", 2, 0.5, 0)
    assert import_ray() is ray
    for kwargs, message in [({"cpus_per_run": 0}, "--cpus-per-run must be >= 1"),
                            ({"gpus_per_run": -1.0}, "--gpus-per-run must be >= 0"),
                            ({"max_retries": -1}, "--max-retries must be >= 0")]:
        with pytest.raises(ValueError, match=message):
            RayExecutor(**kwargs)


def test_missing_ray_is_a_one_line_error_with_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture) -> None:
    path = write_sweep(tmp_path, {"fixed": TINY})
    # A None entry in sys.modules makes `import ray` raise ImportError, as when it is not installed.
    monkeypatch.setitem(__import__("sys").modules, "ray", None)
    assert main(["sweep", str(path), "--out", str(tmp_path / "out"), "--executor", "ray"]) == 2
    err = capsys.readouterr().err.strip()
    assert INSTALL_HINT in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out" / "runs.csv").exists()


def test_ray_sweep_matches_local_and_builds_shared_stages_once(tmp_path: Path) -> None:
    # Two RST runs and two LWM runs; both LWM runs need the same dense AT network.
    grid = [{"method": ["rst"], "sparsity": [0.5, 0.9]}, {"method": ["lwm"], "sparsity": [0.5, 0.9]}]
    sweep = load_sweep(write_sweep(tmp_path, {"name": "cmp", "fixed": TINY, "grid": grid}))
    local = run_sweep(sweep, tmp_path / "local", LocalExecutor(jobs=1), progress=False)
    remote = run_sweep(sweep, tmp_path / "ray", RayExecutor(cpus_per_run=1), progress=False)
    assert (local.done, local.failed) == (remote.done, remote.failed) == (4, 0)
    # Same rows, same accuracies; every (run, attack) exactly once.
    ours, theirs = comparable(tmp_path / "ray" / "runs.csv"), comparable(tmp_path / "local" / "runs.csv")
    pd.testing.assert_frame_equal(ours, theirs)
    assert len(ours) == len(ours.drop_duplicates(["run_id", "attack"])) == 4
    # Every task ran with its --cpus-per-run: one torch thread, and OMP/MKL told so before torch loaded.
    for s in sweep.specs:
        threads = json.loads((tmp_path / "ray" / "runs" / s.run_id / "meta.json").read_text())["threads"]
        assert threads == {"torch": 1, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    # The dense stage was trained by one LWM run and loaded by the other.
    lwm = [s for s in sweep.specs if s.method == "lwm"]
    metas = [pd.read_json(tmp_path / "ray" / "runs" / s.run_id / "meta.json", typ="series") for s in lwm]
    assert sorted(len(m.get("reused_stages", [])) for m in metas) == [0, 1]
    assert len(list((tmp_path / "ray" / "stages").iterdir())) == 1


def test_failing_task_is_recorded_and_rerun_retries_only_it(tmp_path: Path) -> None:
    out = tmp_path / "out"
    sweep = load_sweep(write_sweep(tmp_path, {"name": "f", "fixed": TINY, "grid": {"seed": [0, 1, 2]}}))
    bad = sweep.specs[1].run_id
    # A corrupt checkpoint on the shared disk: the worker's harness refuses to load it.
    bad_dir = out / "runs" / bad
    bad_dir.mkdir(parents=True)
    (bad_dir / "ticket.pt").write_bytes(b"not a checkpoint")
    (bad_dir / "meta.json").write_text('{"measured_sparsity": 0.9, "train_seconds": 1.0, "train_passes": 1}')
    first = run_sweep(sweep, out, RayExecutor(), progress=False)
    assert (first.done, first.skipped, first.failed) == (2, 0, 1)
    assert [rid for rid, _ in first.failures] == [bad]
    assert first.failures[0][1].startswith("ValueError: refusing to load ")
    status = pd.read_csv(out / "sweeps" / "f.csv", keep_default_na=False).set_index("run_id")
    assert status.loc[bad, "status"] == "failed" and "refusing to load" in status.loc[bad, "error"]
    assert "ValueError: refusing to load" in (bad_dir / "error.txt").read_text()
    assert bad not in set(pd.read_csv(out / "runs.csv")["run_id"])
    # Rerun with the corrupt files gone: only the failed run runs, then everything is skipped.
    (bad_dir / "ticket.pt").unlink()
    (bad_dir / "meta.json").unlink()
    again = run_sweep(sweep, out, RayExecutor(), progress=False)
    assert (again.done, again.skipped, again.failed) == (1, 2, 0)
    assert all(is_done(s, out) for s in sweep.specs)
    rows = pd.read_csv(out / "runs.csv")
    third = run_sweep(sweep, out, RayExecutor(), progress=False)
    assert (third.done, third.skipped, third.failed) == (0, 3, 0)
    assert pd.read_csv(out / "runs.csv").equals(rows)


def test_retried_task_adds_its_rows_once_and_a_dead_worker_fails_only_its_run(tmp_path: Path) -> None:
    out = tmp_path / "out"
    sweep = load_sweep(write_sweep(tmp_path, {"name": "r", "fixed": TINY, "grid": {"seed": [0, 1, 2]}}))
    flaky, doomed = sweep.specs[0].run_id, sweep.specs[1].run_id
    marker = tmp_path / "first-attempt-done"

    # One worker dies after writing its rows (retried by Ray), one dies every time.
    def crashing(job: SweepJob) -> JobResult:
        if job.spec.run_id == doomed:
            os._exit(3)
        result = run_job(job)
        if job.spec.run_id == flaky and not marker.exists():
            marker.write_text("1")
            os._exit(3)
        return result

    summary = run_sweep(sweep, out, RayExecutor(max_retries=1, runner=crashing), progress=False)
    assert marker.exists()
    assert (summary.done, summary.failed) == (2, 1)
    assert [rid for rid, _ in summary.failures] == [doomed]
    assert (out / "runs" / doomed / "error.txt").exists()
    rows = pd.read_csv(out / "runs.csv")
    assert sorted(rows["run_id"]) == sorted(s.run_id for s in sweep.specs if s.run_id != doomed)


def test_shared_stage_lock_holds_across_ray_workers(tmp_path: Path, tiny_bundle: DataBundle) -> None:
    spec = RunSpec.from_dict({**TINY, "dataset": "fashion-mnist"})
    arrived = tmp_path / "arrived"
    arrived.mkdir()
    builds = tmp_path / "builds.txt"

    # Both tasks announce themselves; the builder holds the lock until the other has arrived.
    @ray.remote(num_cpus=1)
    def use_stage(name: str) -> Dict[str, Any]:
        ctx = RunContext(spec, tiny_bundle, torch.device("cpu"), tmp_path / name, tmp_path / "stages", Compute())

        def build(stage_dir: Path) -> torch.nn.Module:
            with builds.open("a") as f:
                f.write(f"{os.getpid()}\n")
            deadline = time.monotonic() + 60
            while len(list(arrived.iterdir())) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.5)
            # Trained weights differ from a fresh initialisation, so a loader must have read the file.
            model = ctx.build_model(bn_affine=True)
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(1.0)
            return model

        (arrived / name).write_text(str(os.getpid()))
        model = ctx.shared_stage("dense-test", {"k": 1}, build, lambda: ctx.build_model(bn_affine=True))
        weights = torch.cat([p.detach().flatten() for p in model.parameters()])
        return {"pid": os.getpid(), "reused": ctx.info.get("reused_stages", []), "weights": weights}

    results: List[Dict[str, Any]] = ray.get([use_stage.remote("a"), use_stage.remote("b")])
    assert len(list(arrived.iterdir())) == 2 and results[0]["pid"] != results[1]["pid"]
    assert len(builds.read_text().splitlines()) == 1
    assert sorted(len(r["reused"]) for r in results) == [0, 1]
    assert torch.equal(results[0]["weights"], results[1]["weights"])
    fresh = RunContext(spec, tiny_bundle, torch.device("cpu"), tmp_path, tmp_path, Compute()).build_model()
    assert not torch.equal(results[0]["weights"], torch.cat([p.detach().flatten() for p in fresh.parameters()]))


def test_executor_flags_come_from_options_and_belong_to_their_executor(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """bench sweep's executor flags are generated from each executor's Options (help shows the default); a flag of
    the ray executor with the local one is one line naming its executor, exit 2; a bad value names the field."""
    with pytest.raises(SystemExit):
        main(["sweep", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "ray executor:" in text and "--cpus-per-run CPUS_PER_RUN CPU cores reserved per run" in text
    assert "[default: 1]" in text
    path = write_sweep(tmp_path, {"fixed": TINY})
    assert main(["sweep", str(path), "--out", str(tmp_path / "o"), "--cpus-per-run", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "bench: error: --cpus-per-run is an option of the ray executor, not of local (add --executor ray)"
    assert not (tmp_path / "o").exists()
    with pytest.raises(ValueError, match="cpus_per_run"):
        RayExecutor.build(1, {"cpus_per_run": "two"})
