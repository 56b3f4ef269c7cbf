"""Prune a given dense network (issue 30 item 5): ``--init-from FILE`` for HYDRA and LWM."""
from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Dict, List

import pytest
import torch
from conftest import Exploit

from bench.cli import main
from bench.core import paths
from bench.core.io import file_sha256
from bench.data import load_data
from bench.methods import RunContext, get_method
from bench.methods.stages import DENSE_STAGE, dense_key, dense_stage, load_dense
from bench.spec import RunSpec
from bench.train import Compute

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


def level_stages(out: Path) -> List[Path]:
    """The ALTH level stages of an output folder, in level order (from the run's meta.json)."""
    meta = json.loads((run_dir_of(out) / "meta.json").read_text())
    return [out / "stages" / level["stage"] for level in meta["levels"]]


def test_alth_prunes_the_given_network_level_by_level(dense: Path, tmp_path: Path) -> None:
    """ALTH from a given dense network: no dense stage is trained; level 1's masks are the magnitude masks of the
    given weights (20 % of hidden, 10 % of output weights); the levels are keyed by the file's contents, so the
    same network under another name shares them and another network does not."""
    def alth(folder: Path, given: Path) -> int:
        return main(["run", "--method", "alth", "--sparsity", "0.3", "--rewind", "dense", "--init-from", str(given),
                     "--out", str(folder), *TINY])

    out = tmp_path / "out"
    assert alth(out, dense) == 0
    meta = json.loads((run_dir_of(out) / "meta.json").read_text())
    assert meta["init_from"]["sha256"] == file_sha256(dense) and "dense_stage" not in meta
    assert not any(p.name.startswith("dense-at") for p in (out / "stages").iterdir())
    assert meta["measured_sparsity"] == pytest.approx(0.3, abs=0.005) and len(meta["levels"]) == 2
    given: Dict[str, torch.Tensor] = torch.load(dense, weights_only=True)
    masks: Dict[str, torch.Tensor] = torch.load(level_stages(out)[0] / "masks.pt", weights_only=True)
    names = sorted(masks)
    for name in names:
        w = given[f"{name}.weight"].abs().flatten()
        fraction = 0.1 if name == names[-1] else 0.2
        expected = torch.ones_like(w)
        expected[torch.argsort(w, stable=True)[:round(fraction * w.numel())]] = 0
        assert torch.equal(masks[name].flatten(), expected), name
    first = level_stages(out)
    # The same file under another name: the same levels (no retraining); other weights: other levels.
    renamed, other = tmp_path / "renamed.pt", tmp_path / "other.pt"
    renamed.write_bytes(dense.read_bytes())
    torch.save({k: -v if k.endswith("weight") else v for k, v in given.items()}, other)
    out2, out3 = tmp_path / "out2", tmp_path / "out3"
    for path, folder in ((renamed, out2), (other, out3)):
        folder.mkdir()
        (folder / "stages").symlink_to(out / "stages", target_is_directory=True)
        assert alth(folder, path) == 0
    assert level_stages(out2) == [out2 / "stages" / p.name for p in first]
    assert not {p.name for p in level_stages(out3)} & {p.name for p in first}


def test_alth_rewinds_to_the_given_network(dense: Path, tmp_path: Path) -> None:
    """``--rewind dense`` with a given network rewinds survivors to its weights; without one, to the dense stage's
    last epoch (the state level 1 prunes, Cosentino's code's rewind point)."""
    given: Dict[str, torch.Tensor] = torch.load(dense, weights_only=True)
    method = get_method("alth")

    def context(**hparams: str) -> RunContext:
        # A large constant learning rate, so the dense stage's best epoch is not its last.
        spec = RunSpec.from_dict({"method": "alth", "sparsity": 0.5, "arch": "mlp", "width": 0.1, "epochs": 4,
                                  "lr": 2.0, "lr_schedule": "constant", "train_steps": 1, "n_train": 300, "device": "cpu",
                                  "hparams": {"rewind": "dense", **hparams}}).resolve()
        data = load_data(spec.dataset, spec.data_source, None, spec.val_fraction, spec.seed, spec.n_train)
        return RunContext(spec, data, torch.device("cpu"), tmp_path / "run", tmp_path / "stages", Compute())

    ctx = context(init_from=str(dense))
    rewind = method.rewind_state(ctx, {}, load_dense(ctx, str(dense)), None)  # type: ignore[attr-defined]
    assert all(torch.equal(rewind[k], v) for k, v in given.items())
    # The dense stage's last epoch (start_from last, the default), not the best epoch the stage leaves loaded.
    ctx = context()
    model = dense_stage(ctx, None)
    train_dir = ctx.stage_path(DENSE_STAGE, dense_key(ctx.spec, ctx.spec.epochs)) / "train"
    last = torch.load(paths.checkpoint(train_dir), weights_only=True)["model"]
    # The stage's best epoch is not its last here, so the check below can tell them apart.
    assert not all(torch.equal(model.state_dict()[k], last[k]) for k in last)
    rewind = method.rewind_state(ctx, {}, model, train_dir)  # type: ignore[attr-defined]
    assert set(rewind) == set(last) and all(torch.equal(rewind[k], last[k]) for k in last)


def test_alth_init_from_refuses_a_rewind_point_it_does_not_have(dense: Path, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture) -> None:
    for rewind in ("init", "early"):
        out = tmp_path / rewind
        assert main(["run", "--method", "alth", "--sparsity", "0.3", "--rewind", rewind, "--init-from", str(dense),
                     "--out", str(out), *TINY]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and f"rewind {rewind} with --init-from" in err, err
        assert not out.exists()


def test_a_finished_run_loads_without_its_init_from_file(dense: Path, tmp_path: Path) -> None:
    """The file is checked before a search, not when a finished run is read: once pruned, the run evaluates (and
    reruns) after the file moved away (its spec was refused as "not a file" before)."""
    given = tmp_path / "dense.pt"
    given.write_bytes(dense.read_bytes())
    out = tmp_path / "out"
    assert main(["run", "--method", "hydra", "--sparsity", "0.5", "--init-from", str(given), "--out", str(out), *TINY]) == 0
    given.unlink()
    run = run_dir_of(out)
    assert main(["eval", str(run), "--attacks", "pgd20", "--n-eval", "20", "--no-progress"]) == 0
    assert main(["run", "--method", "hydra", "--sparsity", "0.5", "--init-from", str(given), "--out", str(out), *TINY]) == 0
