"""Results survive crashes, races and hostile files; the regression gate catches regressions."""
from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import List

import pandas as pd
import pytest
import torch
from conftest import Exploit

from bench.cli import main
from bench.core.results import UNREPEATABLE_COLUMNS, append_rows
from bench.harness import load_ticket, run_spec
from bench.spec import RunSpec

VOLATILE = list(UNREPEATABLE_COLUMNS)


def cli(args: List[str]) -> int:
    """Run the CLI in-process; argparse exits become return codes."""
    try:
        return main(args)
    except SystemExit as exc:
        return int(exc.code)


def _append_worker(csv_path: str, worker: int) -> None:
    """Append 20 own rows plus one row every worker shares."""
    rows = [{"run_id": f"w{worker}", "attack": f"a{i}", "n_eval": 10, "eps": 0.1, "version": "", "robust_acc": i / 20}
            for i in range(20)]
    rows.append({"run_id": "shared", "attack": "pgd20", "n_eval": 10, "eps": 0.1, "version": "", "robust_acc": 0.5})
    for row in rows:
        append_rows(Path(csv_path), [row])


def test_eight_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    csv_path = tmp_path / "runs.csv"
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_append_worker, args=(str(csv_path), w)) for w in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    df = pd.read_csv(csv_path)
    assert len(df) == 8 * 20 + 1
    assert not df.duplicated(["run_id", "attack", "n_eval"]).any()
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))


TINY = dict(method="rst", arch="mlp", width=0.5, sparsity=0.8, epochs=4, train_steps=2, n_train=1500, n_eval=200,
            eval_attacks=("pgd20", "cw20"), device="cpu")


def _flags(kw: dict) -> List[str]:
    """CLI flags for a spec dict."""
    out: List[str] = []
    for k, v in kw.items():
        out += [f"--{k.replace('_', '-')}", ",".join(v) if isinstance(v, tuple) else str(v)]
    return out


def _rows(out: Path) -> pd.DataFrame:
    """runs.csv without the columns that legitimately differ between runs."""
    df = pd.read_csv(out / "runs.csv").drop(columns=VOLATILE)
    return df.sort_values(["run_id", "attack"]).reset_index(drop=True)


@pytest.mark.slow
@pytest.mark.parametrize("kill_after", ["search/last.pt", "ticket.pt"])
def test_sigkill_then_rerun_gives_the_uninterrupted_rows(tmp_path: Path, kill_after: str) -> None:
    spec = RunSpec(**TINY).resolve()
    # Reference: one uninterrupted run.
    assert cli(["run", "--out", str(tmp_path / "clean"), *_flags(TINY)]) == 0
    # Killed run: SIGKILL as soon as the artifact appears (mid-training or mid-evaluation).
    killed = tmp_path / "killed"
    marker = killed / "runs" / spec.run_id / kill_after
    proc = subprocess.Popen([sys.executable, "-m", "bench", "run", "--out", str(killed), *_flags(TINY)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    assert marker.exists(), "the run ended before the kill point"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    # Rerun resumes and ends with exactly the uninterrupted rows.
    assert cli(["run", "--out", str(killed), *_flags(TINY)]) == 0
    pd.testing.assert_frame_equal(_rows(killed), _rows(tmp_path / "clean"))


def test_same_spec_and_seed_give_identical_accuracies(tmp_path: Path) -> None:
    kw = dict(TINY, epochs=1, n_train=400, n_eval=100)
    a = run_spec(RunSpec(**kw), tmp_path / "a", show=False)
    b = run_spec(RunSpec(**kw), tmp_path / "b", show=False)
    cols = ["attack", "clean_acc", "robust_acc", "measured_sparsity"]
    pd.testing.assert_frame_equal(a[cols], b[cols])
    ta = torch.load(tmp_path / "a" / "runs" / a["run_id"][0] / "ticket.pt", weights_only=True)
    tb = torch.load(tmp_path / "b" / "runs" / b["run_id"][0] / "ticket.pt", weights_only=True)
    assert all(torch.equal(ta[k], tb[k]) for k in ta)


def test_diverging_run_fails_cleanly(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    kw = dict(method="dense-at", arch="mlp", width=0.5, sparsity=0.0, epochs=2, train_steps=1, n_train=300,
              n_eval=50, eval_attacks=("pgd20",), device="cpu", lr=1e12, momentum=0.0)
    out = tmp_path / "res"
    assert cli(["run", "--out", str(out), *_flags(kw)]) == 1
    assert "loss became" in capsys.readouterr().err
    assert not (out / "runs.csv").exists()
    run_dir = out / "runs" / RunSpec(**kw).resolve().run_id
    assert '"failed"' in (run_dir / "status.json").read_text()
    assert not (run_dir / "ticket.pt").exists()




def _tiny_run(tmp_path: Path) -> Path:
    """A finished tiny run folder."""
    kw = dict(TINY, epochs=1, n_train=200, n_eval=20, eval_attacks=("pgd20",))
    df = run_spec(RunSpec(**kw), tmp_path / "res", show=False)
    return tmp_path / "res" / "runs" / df["run_id"][0]


def test_crafted_pickle_is_refused(tmp_path: Path) -> None:
    run_dir = _tiny_run(tmp_path)
    marker = tmp_path / "pwned"
    with open(run_dir / "ticket.pt", "wb") as fh:
        pickle.dump({"x": Exploit(str(marker))}, fh)
    with pytest.raises(ValueError, match="refusing to load"):
        load_ticket(run_dir)
    assert not marker.exists()


def test_wrong_architecture_checkpoint_names_the_mismatch(tmp_path: Path) -> None:
    run_dir = _tiny_run(tmp_path)
    state = torch.load(run_dir / "ticket.pt", weights_only=True)
    key = next(k for k in state if k.endswith("weight") and state[k].dim() == 2)
    state[key] = torch.zeros(3, 3)
    torch.save(state, run_dir / "ticket.pt")
    with pytest.raises(ValueError, match=f"tensor {key} has shape \\(3, 3\\)"):
        load_ticket(run_dir)
    del state[key]
    torch.save(state, run_dir / "ticket.pt")
    with pytest.raises(ValueError, match="does not match the architecture: missing"):
        load_ticket(run_dir)


GATE_PRESET = """name: gate
fixed: {method: rst, arch: mlp, width: 0.25, epochs: 2, train_steps: 2, n_train: 1000, n_eval: 150,
        eval_attacks: [pgd20, cw20], device: cpu}
grid: {sparsity: [0.5], seed: [0, 1, 2]}
"""


def _gate(tmp_path: Path, out: str, *extra: str) -> int:
    """`bench check` on the tiny preset."""
    return cli(["check", "--preset", str(tmp_path / "preset.yaml"), "--reference", str(tmp_path / "ref.csv"),
                "--out", str(tmp_path / out), "--no-progress", *extra])


@pytest.mark.parametrize("content, message", [
    (None, "reference file not found"),
    ("run_id,attack\nx,pgd20\n", "lacks column(s): base, method"),
    ("base,method,dataset,arch,width,target_sparsity,attack,n_eval,metric,mean,std,seeds\n"
     "b,rst,fashion-mnist,mlp,0.25,0.5,pgd20,150,robust_acc,1.7,0.01,0+1+2\n", "fractions in [0,1]"),
])
def test_gate_bad_input_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture, content: str, message: str) -> None:
    (tmp_path / "preset.yaml").write_text(GATE_PRESET)
    if content is not None:
        (tmp_path / "ref.csv").write_text(content)
    assert _gate(tmp_path, "runs") == 2
    assert message in capsys.readouterr().err
