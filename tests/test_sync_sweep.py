"""scripts/sync_sweep.py: a worktree's sweep rows and status come into this checkout without losing the seconds
of runs an earlier sitting recorded as done, and without dropping rows."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
HEADER = "run_id,status,seconds,error,method,dataset,arch,width,sparsity,seed\n"


def _status(path: Path, *lines: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(HEADER + "".join(line + "\n" for line in lines))


def _sync(source: Path, here: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "sync_sweep.py"), str(source), str(here)],
                          capture_output=True, text=True, cwd=ROOT)


def test_sync_keeps_earlier_done_lines_and_takes_new_ones(tmp_path: Path) -> None:
    source, here = tmp_path / "worktree", tmp_path / "here"
    (source / "sweeps").mkdir(parents=True)
    (source / "runs.csv").write_text("run_id,attack\na,pgd20\nb,pgd20\nc,pgd20\n")
    (here / "sweeps").mkdir(parents=True)
    (here / "runs.csv").write_text("run_id,attack\na,pgd20\n")
    # The worktree resumed: run a (done in an earlier sitting) is now "skipped", b ran in this sitting, c pending.
    _status(source / "sweeps" / "g.csv", "a,skipped,0.0,,rst,fm,convnet,0.5,0.5,0",
            "b,done,12.5,,rst,fm,convnet,0.5,0.8,0", "c,pending,0.0,,rst,fm,convnet,0.5,0.9,0")
    _status(here / "sweeps" / "g.csv", "a,done,700.25,,rst,fm,convnet,0.5,0.5,0",
            "b,pending,0.0,,rst,fm,convnet,0.5,0.8,0", "c,pending,0.0,,rst,fm,convnet,0.5,0.9,0")
    proc = _sync(source, here)
    assert proc.returncode == 0, proc.stderr
    assert "1 earlier done line(s) kept" in proc.stdout
    merged = pd.read_csv(here / "sweeps" / "g.csv")
    assert list(merged["status"]) == ["done", "done", "pending"]
    assert list(merged["seconds"]) == [700.25, 12.5, 0.0]
    assert (here / "runs.csv").read_text() == (source / "runs.csv").read_text()


def test_sync_refuses_rows_that_would_be_dropped(tmp_path: Path) -> None:
    source, here = tmp_path / "worktree", tmp_path / "here"
    (source / "sweeps").mkdir(parents=True)
    (source / "runs.csv").write_text("run_id,attack\na,pgd20\n")
    here.mkdir()
    (here / "runs.csv").write_text("run_id,attack\na,pgd20\nz,cw20\n")
    proc = _sync(source, here)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "lacks 1 row(s)" in proc.stderr
    assert "z,cw20" in (here / "runs.csv").read_text()


def test_sync_checks_everything_before_writing(tmp_path: Path) -> None:
    """A bad status file here, or no rows there, is one line and leaves this folder as it was."""
    source, here = tmp_path / "worktree", tmp_path / "here"
    (source / "sweeps").mkdir(parents=True)
    (source / "runs.csv").write_text("run_id,attack\na,pgd20\nb,pgd20\n")
    _status(source / "sweeps" / "g.csv", "a,done,1.0,,rst,fm,convnet,0.5,0.5,0")
    (here / "sweeps").mkdir(parents=True)
    (here / "runs.csv").write_text("run_id,attack\na,pgd20\n")
    (here / "sweeps" / "g.csv").write_text("not,a,status,file\n")
    proc = _sync(source, here)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "not a sweep status file" in proc.stderr
    assert (here / "runs.csv").read_text() == "run_id,attack\na,pgd20\n"
    (source / "runs.csv").unlink()
    proc = _sync(source, here)
    assert proc.returncode == 2 and "no rows to bring in" in proc.stderr


def test_sync_compares_rows_by_cells_not_lines(tmp_path: Path) -> None:
    """Code of another commit reorders and adds columns: the same rows still match; a column only ours fills is
    refused (copying would drop it), and a changed cell is a missing row."""
    source, here = tmp_path / "worktree", tmp_path / "here"
    (source / "sweeps").mkdir(parents=True)
    (source / "runs.csv").write_text("attack,run_id,extra\npgd20,a,1\ncw20,a,2\n")
    (here / "sweeps").mkdir(parents=True)
    (here / "runs.csv").write_text("run_id,attack,device_name\na,pgd20,\n")
    proc = _sync(source, here)
    assert proc.returncode == 0, proc.stderr
    assert (here / "runs.csv").read_text() == (source / "runs.csv").read_text()
    (here / "runs.csv").write_text("run_id,attack,device_name\na,pgd20,EPYC\n")
    proc = _sync(source, here)
    assert proc.returncode == 2 and "lacks column(s) device_name" in proc.stderr
    (here / "runs.csv").write_text("run_id,attack\na,fgsm\n")
    proc = _sync(source, here)
    assert proc.returncode == 2 and "lacks 1 row(s)" in proc.stderr
