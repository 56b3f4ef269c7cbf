"""Prune a given dense network (issue 30 item 5): ``--init-from FILE`` for HYDRA and LWM."""
from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Dict

import pytest
import torch
from conftest import Exploit

from bench.cli import main
from bench.core.io import file_sha256

TINY = ["--arch", "mlp", "--width", "0.1", "--epochs", "1", "--train-steps", "1", "--n-train", "300", "--n-eval", "40",
        "--eval-attacks", "fgsm", "--device", "cpu", "--no-progress"]




@pytest.fixture(scope="module")
def dense(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A dense AT network of the tiny architecture: a dense-at run's ticket.pt."""
    out = tmp_path_factory.mktemp("dense")
    assert main(["run", "--method", "dense-at", "--sparsity", "0", "--out", str(out), *TINY]) == 0
    return next((out / "runs").iterdir()) / "ticket.pt"


def run_dir_of(out: Path) -> Path:
    return next((out / "runs").iterdir())


def test_lwm_prunes_the_given_network_and_trains_no_dense_one(dense: Path, tmp_path: Path) -> None:
    """The mask is the magnitude mask of the given weights (same fraction per layer); no dense stage is trained;
    meta.json names the file and its sha256."""
    out = tmp_path / "out"
    assert main(["run", "--method", "lwm", "--sparsity", "0.5", "--init-from", str(dense), "--out", str(out), *TINY]) == 0
    run = run_dir_of(out)
    meta = json.loads((run / "meta.json").read_text())
    assert meta["init_from"] == {"path": str(dense), "sha256": file_sha256(dense)} and "dense_stage" not in meta
    assert not (out / "stages").exists() or not any("dense" in p.name for p in (out / "stages").iterdir())
    given: Dict[str, torch.Tensor] = torch.load(dense, weights_only=True)
    ticket: Dict[str, torch.Tensor] = torch.load(run / "ticket.pt", weights_only=True)
    for key, mask in ticket.items():
        if not key.endswith(".mask"):
            continue
        w = given[key[: -len("mask")] + "weight"].abs().flatten()
        # The kept half: the largest |w| of the given network, layer by layer.
        n_zero = round(0.5 * w.numel())
        expected = torch.ones_like(w)
        expected[torch.argsort(w, stable=True)[:n_zero]] = 0
        assert torch.equal(mask.flatten(), expected), key


def test_hydra_starts_from_the_given_network(dense: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main(["run", "--method", "hydra", "--sparsity", "0.5", "--init-from", str(dense), "--out", str(out), *TINY]) == 0
    meta = json.loads((run_dir_of(out) / "meta.json").read_text())
    assert meta["init_from"]["sha256"] == file_sha256(dense) and meta["measured_sparsity"] == pytest.approx(0.5, abs=0.01)


def test_a_bad_init_from_is_one_line_and_no_run(dense: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with open(tmp_path / "payload.pt", "wb") as fh:
        pickle.dump({"w": Exploit(str(tmp_path / "pwned"))}, fh)
    cases = {
        str(tmp_path / "missing.pt"): "not a file",
        str(tmp_path / "payload.pt"): "not a plain tensor state dict",
    }
    for path, words in cases.items():
        out = tmp_path / "o"
        assert main(["run", "--method", "lwm", "--sparsity", "0.5", "--init-from", path, "--out", str(out), *TINY]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and words in err, err
    assert not (tmp_path / "pwned").exists()
    # Another width is another architecture: named before anything trains.
    out = tmp_path / "w"
    wide = [*TINY[:2], "--width", "0.25", *TINY[4:]]
    assert main(["run", "--method", "lwm", "--sparsity", "0.5", "--init-from", str(dense), "--out", str(out), *wide]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "does not match mlp at width 0.25: tensor body.1.weight" in err, err
    assert not out.exists()


def test_a_changed_init_from_file_is_not_given_the_old_ticket(dense: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture) -> None:
    """The run id holds the path: a network retrained and saved under the same name used to get the old ticket
    (and its rows) silently; now the rerun is one line naming the file, and an unchanged file still reuses it."""
    given = tmp_path / "my_dense.pt"
    given.write_bytes(dense.read_bytes())
    out = tmp_path / "out"
    args = ["run", "--method", "lwm", "--sparsity", "0.5", "--init-from", str(given), "--out", str(out), *TINY]
    assert main(args) == 0
    rows = (out / "runs.csv").read_text()
    assert main(args) == 0
    assert "ticket exists" in (run_dir_of(out) / "log.txt").read_text()
    capsys.readouterr()
    # The user retrains and overwrites the file.
    state: Dict[str, torch.Tensor] = torch.load(given, weights_only=True)
    torch.save({k: v * 2 if k.endswith("weight") else v for k, v in state.items()}, given)
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"--init-from {given} has changed since" in err, err
    assert (out / "runs.csv").read_text() == rows
