"""Your own model under the full protocol (issue 30): ``bench eval --model SPEC [--weights FILE] --name NAME``.

A CNN written and trained here as a user would outside the project (plain torch, pruned to 90 % with
``torch.nn.utils.prune``'s global magnitude pruning) is evaluated from ``file.py:factory`` + its state dict, from
TorchScript and from a ``torch.export`` program: the measured sparsity against the masks' truth, PGD-20 against an
independent PGD (torchattacks) on the same images, and the rows. Bad inputs are one line, exit 2, nothing written.
"""
from __future__ import annotations

import pickle
import textwrap
from pathlib import Path
from typing import Any, Dict, Tuple

import pandas as pd
import pytest
import torch
import torch.nn as nn
import torch.nn.utils.prune as prune
from conftest import Exploit

from bench.cli import main
from bench.data import load_data, to_float
from bench.external import ExternalSpec
from bench.nn.external import load_external_model, measure_sparsity

EPS = 0.03
N_EVAL = 200
NET_SOURCE = textwrap.dedent('''
    import torch.nn as nn

    class Net(nn.Module):
        """A small CNN for 28x28 grey images, [0,1] inputs, normalisation inside."""

        def __init__(self, classes: int = 10) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
            self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
            self.fc = nn.Linear(16 * 7 * 7, classes)

        def forward(self, x):
            x = (x - 0.286) / 0.353
            x = nn.functional.max_pool2d(nn.functional.relu(self.conv1(x)), 2)
            x = nn.functional.max_pool2d(nn.functional.relu(self.conv2(x)), 2)
            return self.fc(x.flatten(1))

    def make():
        return Net()

    def make_eleven():
        return Net(11)

    def make_broken():
        raise RuntimeError("no GPU here")

    def make_not_a_model():
        return 42
''')




@pytest.fixture(scope="module")
def user_model(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Any]:
    """The user's files: net.py, a pruned state dict (weight_orig/weight_mask pairs), TorchScript and .pt2 copies."""
    folder = tmp_path_factory.mktemp("user")
    (folder / "net.py").write_text(NET_SOURCE)
    namespace: Dict[str, Any] = {}
    exec(compile(NET_SOURCE, str(folder / "net.py"), "exec"), namespace)  # noqa: S102 - the test's own source
    torch.manual_seed(0)
    model = namespace["make"]()
    # A short clean training run on the embedded Fashion-MNIST, then global magnitude pruning to 90 %.
    data = load_data("fashion-mnist", "embedded")
    x, y = to_float(data.train.x[:3000], torch.device("cpu")), data.train.y[:3000]
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    for _epoch in range(2):
        for i in range(0, len(x), 100):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[i:i + 100]), y[i:i + 100]).backward()
            opt.step()
    layers = [(model.conv1, "weight"), (model.conv2, "weight"), (model.fc, "weight")]
    prune.global_unstructured(layers, pruning_method=prune.L1Unstructured, amount=0.9)
    torch.save(model.state_dict(), folder / "pruned.pt")
    truth = sum(int((m.weight_mask == 0).sum()) for m, _ in layers) / sum(m.weight_mask.numel() for m, _ in layers)
    # The deployed forms: pruning made permanent, then TorchScript and torch.export (batch size dynamic).
    for m, name in layers:
        prune.remove(m, name)
    model.eval()
    torch.jit.save(torch.jit.script(model), folder / "scripted.pt")
    program = torch.export.export(model, (x[:4],), dynamic_shapes={"x": {0: torch.export.Dim("batch")}})
    torch.export.save(program, folder / "exported.pt2")
    return {"folder": folder, "truth": truth, "model": model}


def independent_pgd20(model: nn.Module) -> float:
    """torchattacks' PGD-20 (eps/4 steps, random start) on the first N_EVAL test images."""
    torchattacks = pytest.importorskip("torchattacks")
    test = load_data("fashion-mnist", "embedded").test
    x, y = to_float(test.x[:N_EVAL], torch.device("cpu")), test.y[:N_EVAL]
    torch.manual_seed(0)
    adv = torchattacks.PGD(model.eval(), eps=EPS, alpha=EPS / 4, steps=20, random_start=True)(x, y)
    with torch.no_grad():
        return float((model(adv).argmax(1) == y).float().mean())


@pytest.mark.parametrize("form", ["factory", "torchscript", "export"])
def test_a_model_made_elsewhere_is_measured_and_evaluated(form: str, user_model: Dict[str, Any], tmp_path: Path) -> None:
    folder = user_model["folder"]
    model_flags = {"factory": ["--model", f"{folder}/net.py:make", "--weights", str(folder / "pruned.pt")],
                   "torchscript": ["--model", str(folder / "scripted.pt")],
                   "export": ["--model", str(folder / "exported.pt2")]}[form]
    out = tmp_path / "out"
    assert main(["eval", *model_flags, "--name", "my-cnn", "--eps", str(EPS), "--attacks", "pgd20,fgsm",
                 "--n-eval", str(N_EVAL), "--sparsity", "0.9", "--out", str(out), "--device", "cpu", "--no-progress"]) == 0
    rows = pd.read_csv(out / "runs.csv", keep_default_na=False)
    assert set(rows["attack"]) == {"pgd20", "fgsm", "worst_case"} and set(rows["method"]) == {"external"}
    assert set(rows["model"]) == {"my-cnn"} and rows["flags"].eq("").all()
    # Sparsity from the weights, within 0.005 of the masks' truth.
    assert abs(rows["measured_sparsity"].iloc[0] - user_model["truth"]) <= 0.005
    # PGD-20 within 0.03 of an independent PGD on the same images.
    pgd = rows.set_index("attack").loc["pgd20"]
    assert pgd["n_eval"] == N_EVAL and abs(pgd["robust_acc"] - independent_pgd20(user_model["model"])) <= 0.03
    assert rows.set_index("attack").loc["worst_case", "robust_acc"] <= pgd["robust_acc"]
    # Per-layer sparsity in meta.json; the run id holds the weights' digest.
    run_dir = out / "external" / rows["run_id"].iloc[0]
    meta = pd.read_json(run_dir / "meta.json", typ="series")
    assert len(meta["layer_sparsity"]) == 3
    # What it costs: its CPU latency in every form (measured once, in latency.json); MACs where its layers are
    # Python modules (forward hooks do not see inside TorchScript or an exported program).
    assert (rows["latency_b1_ms"] > 0).all() and (rows["latency_b128_ms"] > 0).all()
    assert (run_dir / "latency.json").exists()
    if form == "factory":
        # By hand: conv1 72 weights at 28x28 positions, conv2 1 152 at 14x14, fc 7 840 once.
        assert rows["macs_dense"].iloc[0] == 72 * 28 * 28 + 1152 * 14 * 14 + 7840
        assert rows["macs_ticket"].iloc[0] < rows["macs_dense"].iloc[0]
        assert rows["params_nonzero"].iloc[0] < meta["n_params"]
    else:
        assert "macs_dense" not in rows


def test_the_three_forms_of_one_model_measure_one_sparsity(user_model: Dict[str, Any]) -> None:
    """The same weights as a factory + state dict, TorchScript and an exported program: one measured sparsity."""
    folder = user_model["folder"]
    loaded = [load_external_model(f"{folder}/net.py:make", folder / "pruned.pt"),
              load_external_model(str(folder / "scripted.pt")), load_external_model(str(folder / "exported.pt2"))]
    sparsities = {round(measure_sparsity(m)[0], 9) for m in loaded}
    assert len(sparsities) == 1 and abs(sparsities.pop() - user_model["truth"]) < 1e-9


def test_a_contradicted_sparsity_claim_is_flagged(user_model: Dict[str, Any], tmp_path: Path) -> None:
    folder = user_model["folder"]
    assert main(["eval", "--model", str(folder / "scripted.pt"), "--name", "claims-too-much", "--eps", str(EPS),
                 "--attacks", "fgsm", "--n-eval", "50", "--sparsity", "0.99", "--out", str(tmp_path), "--device", "cpu"]) == 0
    rows = pd.read_csv(tmp_path / "runs.csv", keep_default_na=False)
    assert rows["flags"].str.contains("sparsity_claim").all() and (rows["target_sparsity"] == 0.99).all()


def bad(tmp_path: Path, folder: Path) -> Dict[str, Tuple[list, str]]:
    """Bad --model inputs and the words their one-line error must hold."""
    (tmp_path / "noise.pt").write_bytes(b"\x00garbage" * 50)
    with open(tmp_path / "payload.pt", "wb") as fh:
        pickle.dump({"w": Exploit(str(tmp_path / "pwned"))}, fh)
    nan_src = NET_SOURCE + "\n\ndef make_nan():\n    n = Net()\n    n.fc.bias.data.fill_(float('nan'))\n    return n\n"
    (tmp_path / "nan_net.py").write_text(nan_src)
    (tmp_path / "colour.py").write_text(NET_SOURCE.replace("nn.Conv2d(1, 8", "nn.Conv2d(3, 8"))
    net = f"{folder}/net.py"
    return {
        "file that is no model": (["--model", str(tmp_path / "noise.pt")], "not a model"),
        "pickle payload as weights": (["--model", f"{net}:make", "--weights", str(tmp_path / "payload.pt")], "refused"),
        "factory that does not exist": (["--model", f"{net}:nope"], "has no callable 'nope'"),
        "factory that raises": (["--model", f"{net}:make_broken"], "the factory raised RuntimeError: no GPU here"),
        "factory that returns no model": (["--model", f"{net}:make_not_a_model"], "not a torch.nn.Module"),
        "module that does not exist": (["--model", "no_such_module_here:make"], "importing module 'no_such_module_here' failed"),
        "wrong number of classes": (["--model", f"{net}:make_eleven"], "returns 11 logits; the dataset has 10 classes"),
        "wrong channel count": (["--model", f"{tmp_path}/colour.py:make"], "fails on test images of shape (2, 1, 28, 28)"),
        "NaN outputs": (["--model", f"{tmp_path}/nan_net.py:make_nan"], "not finite"),
        "weights that do not fit": (["--model", f"{tmp_path}/colour.py:make", "--weights", str(folder / "pruned.pt")],
                                    "does not fit"),
        "a state dict given as the model": (["--model", str(folder / "pruned.pt")], "a state dict, not a model"),
        "a .pt2 program that does not exist": (["--model", str(tmp_path / "missing.pt2")], "missing.pt2: not a file"),
        "no name": (["--model", f"{net}:make", "--name", ""], "--name"),
    }


@pytest.mark.parametrize("case", ["file that is no model", "pickle payload as weights", "factory that does not exist",
                                  "factory that raises", "factory that returns no model", "module that does not exist",
                                  "wrong number of classes", "wrong channel count", "NaN outputs",
                                  "weights that do not fit", "a state dict given as the model",
                                  "a .pt2 program that does not exist", "no name"])
def test_a_bad_model_is_one_line_exit_2_and_nothing_written(case: str, user_model: Dict[str, Any], tmp_path: Path,
                                                            capsys: pytest.CaptureFixture) -> None:
    flags, words = bad(tmp_path, user_model["folder"])[case]
    if "--name" not in flags:
        flags = [*flags, "--name", "x"]
    out = tmp_path / "out"
    assert main(["eval", *flags, "--attacks", "fgsm", "--n-eval", "20", "--out", str(out), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and words in err, err
    assert not out.exists() and not (tmp_path / "pwned").exists()


def test_a_model_left_in_train_mode_is_evaluated_in_eval_mode(user_model: Dict[str, Any], tmp_path: Path,
                                                              capsys: pytest.CaptureFixture) -> None:
    folder = user_model["folder"]
    src = NET_SOURCE + "\n\ndef make_training():\n    n = Net()\n    n.train()\n    return n\n"
    (tmp_path / "t.py").write_text(src)
    assert main(["eval", "--model", f"{tmp_path}/t.py:make_training", "--weights", str(folder / "pruned.pt"), "--name", "t",
                 "--attacks", "fgsm", "--n-eval", "20", "--out", str(tmp_path / "o"), "--device", "cpu"]) == 0
    assert "evaluated in eval mode" in capsys.readouterr().err


def test_model_flags_belong_to_model(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["eval", str(tmp_path), "--dataset", "mnist"]) == 2
    assert "--dataset goes with --model SPEC" in capsys.readouterr().err


def test_the_spec_checks_its_fields() -> None:
    with pytest.raises(ValueError, match=r"--eps must be in \(0, 1\] for Linf"):
        ExternalSpec(name="a", model="m:f", eps=float("inf"))
    with pytest.raises(ValueError, match="--sparsity must be"):
        ExternalSpec(name="a", model="m:f", claimed_sparsity=1.0)
    with pytest.raises(ValueError, match="unknown dataset"):
        ExternalSpec(name="a", model="m:f", dataset="imagenet-1k")


def test_external_rows_reach_tables_and_the_leaderboard(user_model: Dict[str, Any], tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    """Rows of two models made elsewhere: a table never averages them as seeds of one cell (the model name is a
    configuration column), one filtered by --where model=... is a table, and the leaderboard ranks both."""
    folder = user_model["folder"]
    common = ["--eps", str(EPS), "--attacks", "fgsm,pgd20", "--n-eval", "50", "--sparsity", "0.9", "--out", str(tmp_path),
              "--device", "cpu"]
    assert main(["eval", "--model", str(folder / "scripted.pt"), "--name", "cnn-a", *common]) == 0
    assert main(["eval", "--model", f"{folder}/net.py:make", "--weights", str(folder / "pruned.pt"), "--name", "cnn-b",
                 "--seed", "1", *common]) == 0
    capsys.readouterr()
    csv = str(tmp_path / "runs.csv")
    assert main(["table", csv, "--attack", "pgd20"]) == 2
    assert "differ in model" in capsys.readouterr().err
    assert main(["table", csv, "--attack", "pgd20", "--where", "model=cnn-a"]) == 0
    assert "| 0.9 |" in capsys.readouterr().out
    assert main(["leaderboard", csv, "--out", str(tmp_path / "lb")]) == 0
    board = pd.read_csv(tmp_path / "lb" / "leaderboard.csv")
    assert sorted(board["method"]) == ["external", "external"] and set(board["width"]) == {1.0}
    assert {n.split(" (")[0] for n in board["name"]} == {"cnn-a", "cnn-b"}


def external_submission(folder: Path, **fields: Any) -> Dict[str, Any]:
    """A leaderboard entry for a model made elsewhere (the fields --verify reads), with claims."""
    entry = {"link": "", "name": "their-cnn", "authors": "A. Author", "additional_data": False, "number_forward_passes": 1,
             "dataset": "fashion-mnist", "venue": "N/A", "architecture": "Net", "eps": str(EPS), "clean_acc": "10.00",
             "reported": "5.00", "autoattack_acc": None, "unreliable": False, "footnote": None, "sparsity": 0.9,
             "density": 0.1, "width": 1.0, "method": "their-pruning", "randomized": False, "eot_iter": 1,
             "non_adaptive": False, "flags": "", "n_eval": 50, "model": "net.py:make", "weights": "pruned.pt",
             "evaluations": [{"attack": "fgsm"}, {"attack": "pgd20"}]}
    entry.update(fields)
    return entry


@pytest.mark.parametrize("claims, error", [
    ({}, None),
    ({"model": "scripted.pt", "weights": None}, None),
    ({"clean_acc": "99.50", "reported": "99.00"}, r"claim rejected: clean accuracy 99.50% claimed"),
    ({"sparsity": 0.5, "density": 0.5}, r"claim rejected: sparsity 0.5000 claimed, 0.9000 measured"),
    ({"model": "../net.py:make"}, "points outside the submissions folder"),
    ({"model": "os:getcwd"}, "must be file.py:factory"),
])
def test_verify_re_evaluates_a_submitted_external_model(claims: Dict[str, Any], error: Any, user_model: Dict[str, Any],
                                                        tmp_path: Path) -> None:
    """A submission of a model made elsewhere is re-evaluated by --verify: an honest claim ranks as verified, an
    inflated accuracy or a false sparsity is rejected, and its files must lie inside the submissions folder."""
    import json
    import shutil

    from bench.reporting.leaderboard import build_leaderboard

    subs = tmp_path / "subs"
    subs.mkdir()
    for name in ("net.py", "pruned.pt", "scripted.pt"):
        shutil.copy(user_model["folder"] / name, subs / name)
    entry = {k: v for k, v in external_submission(subs, **claims).items() if v is not None or k not in ("weights",)}
    (subs / "entry.json").write_text(json.dumps(entry))
    if error is not None:
        with pytest.raises(ValueError, match=error):
            build_leaderboard(None, tmp_path / "lb", subs, verify=True)
        assert not (tmp_path / "lb").exists()
        return
    board = build_leaderboard(None, tmp_path / "lb", subs, verify=True)["board"]
    assert list(board["source"]) == ["submitted, verified here"] and board["robust_acc"].iloc[0] <= 5.0


def test_compare_and_security_take_external_evaluations(user_model: Dict[str, Any], tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    """An external model's evaluation folder goes to bench compare (against a second form of the same weights:
    the same flags, nothing differs) and bench security (a curve whose rows name the model)."""
    pytest.importorskip("adv_lib")
    folder = user_model["folder"]
    common = ["--eps", str(EPS), "--attacks", "pgd20", "--n-eval", "60", "--out", str(tmp_path), "--device", "cpu"]
    assert main(["eval", "--model", f"{folder}/net.py:make", "--weights", str(folder / "pruned.pt"), "--name", "a", *common]) == 0
    assert main(["eval", "--model", str(folder / "scripted.pt"), "--name", "b", *common]) == 0
    runs = sorted((tmp_path / "external").iterdir())
    capsys.readouterr()
    assert main(["compare", str(runs[0]), str(runs[1])]) == 0
    table = capsys.readouterr().out
    pgd = next(line for line in table.splitlines() if line.startswith("| pgd20"))
    assert "| 0 | 0 | 1 |" in pgd, table
    assert main(["security", str(runs[0]), "--steps", "20", "--grid-points", "4", "--no-progress"]) == 0
    rows = pd.read_csv(tmp_path / "runs.csv", keep_default_na=False)
    curve = rows[rows["attack"] == "fmn"]
    assert len(curve) >= 4 and set(curve["method"]) == {"external"} and set(curve["run_id"]) == {runs[0].name}
