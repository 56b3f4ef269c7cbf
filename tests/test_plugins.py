"""Plugins (issue 30): a separately installed distribution adds a method and a subcommand through entry points,
with no file of this project edited; `bench run`, `bench sweep --jobs 2` (spawned workers) and `bench list` find
them. A plugin that fails to load is one line naming it, and everything built in still works."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, Iterator, List

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "robust-tickets-plugin-example"
DIST = "robust-tickets-plugin-example"
TINY = ["--arch", "mlp", "--width", "0.1", "--epochs", "1", "--train-steps", "1", "--n-train", "300", "--n-eval", "50",
        "--eval-attacks", "pgd20", "--device", "cpu", "--no-progress"]


def pip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args],
                          capture_output=True, text=True)


@pytest.fixture(scope="module")
def installed() -> Iterator[None]:
    """The example plugin distribution installed into this environment for the module's tests, then removed."""
    # Offline first (setuptools of this environment), else with an isolated build.
    done = pip("install", "--no-deps", "--no-build-isolation", str(EXAMPLE))
    if done.returncode != 0:
        done = pip("install", "--no-deps", str(EXAMPLE))
    assert done.returncode == 0, done.stderr
    yield
    pip("uninstall", "-y", DIST)


def bench(args: List[str], cwd: Path, env: Dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``bench ARGS`` in a fresh process (one thread)."""
    full = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=cwd, capture_output=True, text=True, env=full,
                          timeout=600)


def test_bench_list_shows_the_plugin_and_where_it_comes_from(installed: None, tmp_path: Path) -> None:
    done = bench(["list"], tmp_path)
    assert done.returncode == 0, done.stderr
    line = next(x for x in done.stdout.splitlines() if x.strip().startswith("mag-init"))
    assert f"[plugin {DIST} (rt_plugin_example.mag_init)]" in line
    assert any(x.strip().startswith("hello-plugin") for x in done.stdout.splitlines())
    # The plugin's subcommand runs, and bench --help names it without importing it.
    hello = bench(["hello-plugin"], tmp_path)
    assert hello.returncode == 0 and "mag-init" in hello.stdout
    assert "hello-plugin" in bench(["--help"], tmp_path).stdout


def test_the_plugin_method_runs_through_bench_run_and_a_sweep_with_two_workers(installed: None, tmp_path: Path) -> None:
    done = bench(["run", "--method", "mag-init", "--sparsity", "0.8", "--out", str(tmp_path / "run"), *TINY], tmp_path)
    assert done.returncode == 0, done.stderr
    rows = pd.read_csv(tmp_path / "run" / "runs.csv")
    assert list(rows["method"]) == ["mag-init"] and abs(rows["measured_sparsity"].iloc[0] - 0.8) < 0.01
    sweep = tmp_path / "s.yaml"
    sweep.write_text("name: plugin\nfixed: {method: mag-init, arch: mlp, width: 0.1, epochs: 1, train_steps: 1, "
                     "n_train: 300, n_eval: 50, eval_attacks: [pgd20], device: cpu}\ngrid: {sparsity: [0.5, 0.9]}\n")
    done = bench(["sweep", str(sweep), "--out", str(tmp_path / "sweep"), "--jobs", "2", "--no-progress"], tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = pd.read_csv(tmp_path / "sweep" / "runs.csv")
    assert sorted(rows["target_sparsity"]) == [0.5, 0.9] and set(rows["method"]) == {"mag-init"}


def test_the_plugin_method_runs_on_ray_workers(installed: None, tmp_path: Path) -> None:
    """Ray's worker processes find the plugin's method through its entry point too (a local Ray, one core per run)."""
    pytest.importorskip("ray")
    sweep = tmp_path / "s.yaml"
    sweep.write_text("name: plugin-ray\nfixed: {method: mag-init, arch: mlp, width: 0.1, epochs: 1, train_steps: 1, "
                     "n_train: 300, n_eval: 50, eval_attacks: [pgd20], device: cpu}\ngrid: {sparsity: [0.7]}\n")
    done = bench(["sweep", str(sweep), "--out", str(tmp_path / "ray"), "--executor", "ray", "--cpus-per-run", "1",
                  "--no-progress"], tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = pd.read_csv(tmp_path / "ray" / "runs.csv")
    assert list(rows["method"]) == ["mag-init"] and abs(rows["measured_sparsity"].iloc[0] - 0.7) < 0.01


def test_a_plugin_that_fails_to_load_is_one_line_and_the_rest_works(tmp_path: Path) -> None:
    """A distribution whose entry point names a module that raises: one warning line naming it; bench list and
    bench run of a built-in method still work."""
    site = tmp_path / "site"
    info = site / "broken_plugin-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[robust_tickets.methods]\nbroken = broken_plugin_mod\n")
    (site / "broken_plugin_mod.py").write_text("raise ImportError('needs a library that is not installed')\n")
    env = {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    done = bench(["list"], tmp_path, env)
    assert done.returncode == 0 and "  rst " in done.stdout
    warnings = [x for x in done.stderr.splitlines() if "broken" in x]
    assert warnings == ["bench: warning: method plugin 'broken' (plugin broken-plugin (broken_plugin_mod)) failed to "
                        "load, skipped: ImportError: needs a library that is not installed"]
    done = bench(["run", "--method", "rst", "--sparsity", "0.5", "--out", str(tmp_path / "o"), *TINY], tmp_path, env)
    assert done.returncode == 0, done.stderr


def test_a_registry_loads_entry_point_objects_and_skips_a_taken_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                     capsys: pytest.CaptureFixture) -> None:
    """An entry point naming an object registers it under its name with its origin; one whose name is taken is one
    warning naming who has it, and the entry that had it stays."""
    from bench.core.registry import BUILT_IN, Registry

    site = tmp_path / "site"
    info = site / "widgets-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: widgets\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[test_bench.widgets]\nfirst = widgets_mod:THING\ntaken = widgets_mod:OTHER\n")
    (site / "widgets_mod.py").write_text("THING = 'thing'\nOTHER = 'other'\n")
    monkeypatch.syspath_prepend(str(site))
    registry: "Registry[str]" = Registry("widget", entry_points="test_bench.widgets")
    registry.add("taken", "built-in one")
    assert registry.get("first") == "thing" and registry.entry("first").origin == "plugin widgets (widgets_mod:THING)"
    assert registry.get("taken") == "built-in one" and registry.entry("taken").origin == BUILT_IN
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["bench: warning: widget plugin 'taken' (plugin widgets (widgets_mod:OTHER)) failed to load, skipped: "
                   "ValueError: duplicate widget name 'taken' (built in has it)"]
