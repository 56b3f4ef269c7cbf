"""RobustBench interoperability: the import shim, a zoo model from a local checkpoint, model-info export.

No weights can be downloaded here, so the zoo test saves a randomly initialised
network of a real zoo entry's architecture where ``robustbench.utils.load_model``
looks for it, and evaluates it on a few random CIFAR-shaped images labelled by
the model itself (clean accuracy 1 by construction; robust accuracies are
whatever the attacks find).
"""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from typing import Dict, Tuple

import pandas as pd
import pytest
import torch
import torch.nn as nn

from bench.cli import main
from bench.core.results import read_rows
from bench.data import Split
from bench.harness import run_spec
from bench.nn.zoo_models import RobustBenchMissing, checkpoint_paths, import_robustbench, load_zoo_model, zoo_entries, zoo_models
from bench.reporting.export import EXTRA_FIELDS, ROBUSTBENCH_FIELDS, export_robustbench_json
from bench.spec import RunSpec
from bench.zoo import ZooSpec, run_zoo, weight_sparsity

ZOO_MODEL = "Ding2020MMA"  # the smallest CIFAR-10 Linf zoo entry (WideResNet-28-4, 5.8M parameters)
N_EVAL = 1
# A large budget so PGD breaks the random network within a few steps on a CPU (at 8/255 it survives all 20);
# the tests check structure and invariants, not robustness.
EPS = 0.25


def test_adapter_imports_robustbench_without_autoattack() -> None:
    """With no `autoattack` module, plain `import robustbench` fails and the adapter's import works, leaving no alias."""
    script = (
        "import sys\n"
        "sys.modules['autoattack'] = None\n"  # blocks any installed `autoattack`
        "try:\n"
        "    import robustbench\n"
        "    raise SystemExit('plain import unexpectedly worked')\n"
        "except ModuleNotFoundError as exc:\n"
        "    assert 'autoattack' in str(exc), exc\n"
        "for name in [m for m in sys.modules if m.split('.')[0] == 'robustbench']:\n"
        "    del sys.modules[name]\n"
        "from bench.nn.zoo_models import import_robustbench\n"
        "rb = import_robustbench()\n"
        "import pyautoattack, robustbench.eval, robustbench.utils\n"
        "assert robustbench.eval.AutoAttack is pyautoattack.AutoAttack\n"
        "assert sys.modules['autoattack'] is None, 'alias leaked out of the adapter'\n"
        "assert callable(robustbench.utils.load_model)\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("ok")


def test_missing_robustbench_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    """Without robustbench the adapter raises an ImportError that is also a ValueError, naming the extra."""
    monkeypatch.setitem(sys.modules, "robustbench", None)
    with pytest.raises(RobustBenchMissing, match=r"pip install -e '\.\[robustbench\]'") as info:
        import_robustbench()
    assert isinstance(info.value, ImportError) and isinstance(info.value, ValueError)
    assert main(["zoo", "list"]) == 2
    assert "robustbench is not usable" in capsys.readouterr().err


def test_zoo_listing_and_checkpoint_layout(tmp_path: Path) -> None:
    """Names come from RobustBench's zoo; weights live at model_dir/dataset/threat/name.pt; bad names suggest close ones."""
    names = zoo_models("cifar10", "Linf")
    assert ZOO_MODEL in names and "Sehwag2020Hydra" in names
    assert checkpoint_paths(ZOO_MODEL, tmp_path) == [tmp_path / "cifar10" / "Linf" / f"{ZOO_MODEL}.pt"]
    with pytest.raises(ValueError, match="did you mean Ding2020MMA"):
        checkpoint_paths("Ding2020MM", tmp_path)
    with pytest.raises(ValueError, match="unknown RobustBench threat model"):
        zoo_models("cifar10", "L3")
    with pytest.raises(ValueError, match="not found"):
        load_zoo_model(ZOO_MODEL, tmp_path)


def _half_zero(model: nn.Module) -> float:
    """Zero the first half of every conv/linear weight tensor; returns the resulting fraction of zeros."""
    zeros, total = 0, 0
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                n = module.weight.numel()
                module.weight.view(-1)[: n // 2] = 0
                zeros += n // 2
                total += n
    return zeros / total


@pytest.fixture(scope="module")
def zoo_run(tmp_path_factory: pytest.TempPathFactory) -> Tuple[Path, Dict[str, torch.Tensor], float, pd.DataFrame, Split]:
    """A random Ding2020MMA checkpoint in RobustBench's layout, evaluated once with pgd20 and cw20."""
    root = tmp_path_factory.mktemp("zoo")
    torch.manual_seed(0)
    net = zoo_entries("cifar10", "Linf")[ZOO_MODEL]["model"]()
    sparsity = _half_zero(net)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    path = root / "models" / "cifar10" / "Linf" / f"{ZOO_MODEL}.pt"
    path.parent.mkdir(parents=True)
    # The released checkpoints wrap a DataParallel state dict: {"state_dict": {"module.<key>": tensor}}.
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    x = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = net.eval()(x.float() / 255).argmax(1)
    test = Split(x, y)
    spec = ZooSpec(model=ZOO_MODEL, attacks=("pgd20", "cw20"), eps=EPS, n_eval=N_EVAL, device="cpu")
    rows = run_zoo(spec, root / "out", root / "models", test=test, show=False)
    return root, state, sparsity, rows, test


def test_zoo_model_loads_from_local_checkpoint(zoo_run: Tuple) -> None:
    """load_model (through the adapter) returns the zoo architecture with exactly the saved tensors, in eval mode."""
    root, state, sparsity, _rows, _test = zoo_run
    model = load_zoo_model(ZOO_MODEL, root / "models")
    assert type(model).__name__ == "Ding2020MMANet" and not model.training
    loaded = model.state_dict()
    assert set(loaded) == set(state)
    assert all(torch.equal(loaded[k], state[k]) for k in state)
    measured, per_layer, n_weights = weight_sparsity(model)
    assert measured == pytest.approx(sparsity, abs=1e-12)
    assert n_weights == sum(m.weight.numel() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    assert all(0.49 < s <= 0.5 for s in per_layer.values())


def test_zoo_evaluation_rows(zoo_run: Tuple) -> None:
    """Ordinary rows: method zoo, the model name, measured sparsity, no target, accuracies consistent."""
    root, _state, sparsity, rows, _test = zoo_run
    assert list(rows["attack"]) == ["pgd20", "cw20", "worst_case"]
    assert (rows["method"] == "zoo").all() and (rows["model"] == ZOO_MODEL).all()
    assert (rows["arch"] == "Ding2020MMANet").all() and (rows["target_sparsity"] == "").all()
    assert rows["measured_sparsity"].tolist() == [round(sparsity, 6)] * 3
    assert (rows["n_eval"] == N_EVAL).all() and (rows["clean_acc"] == 1.0).all()
    assert ((rows["robust_acc"] >= 0) & (rows["robust_acc"] <= rows["clean_acc"])).all()
    wc = rows.set_index("attack")["robust_acc"]
    assert wc["worst_case"] <= min(wc["pgd20"], wc["cw20"])
    on_disk = read_rows(root / "out" / "runs.csv")
    assert len(on_disk) == 3 and set(on_disk["run_id"]) == {rows["run_id"].iloc[0]}
    assert (root / "out" / "zoo" / rows["run_id"].iloc[0] / "meta.json").exists()


def test_zoo_rerun_adds_no_rows(zoo_run: Tuple) -> None:
    """A repeated evaluation reuses the cache and leaves runs.csv unchanged."""
    root, _state, _sparsity, rows, test = zoo_run
    spec = ZooSpec(model=ZOO_MODEL, attacks=("pgd20", "cw20"), eps=EPS, n_eval=N_EVAL, device="cpu")
    again = run_zoo(spec, root / "out", root / "models", test=test, show=False)
    assert again["robust_acc"].tolist() == rows["robust_acc"].tolist()
    assert len(read_rows(root / "out" / "runs.csv")) == 3


def test_zoo_spec_rejects_bad_input() -> None:
    """Datasets the harness cannot load, non-Linf threats and unknown attacks are ValueErrors."""
    with pytest.raises(ValueError, match="dataset must be one of"):
        ZooSpec(dataset="imagenet")
    with pytest.raises(ValueError, match="threat must be 'Linf'"):
        ZooSpec(threat="L2")
    with pytest.raises(ValueError):
        ZooSpec(attacks=("nope",))
    assert ZooSpec(eps=8 / 255).run_id != ZooSpec(eps=4 / 255).run_id
    assert ZooSpec(n_eval=5).run_id == ZooSpec(n_eval=10).run_id


def test_export_round_trips_through_robustbench_model_info(tmp_path: Path) -> None:
    """A real tiny ticket's rows export to JSON that RobustBench's ModelInfo reads back unchanged."""
    import_robustbench()
    from robustbench.utils import ModelInfo

    spec = RunSpec(method="rst", arch="mlp", width=0.1, n_train=200, epochs=1, train_steps=1, batch_size=100,
                   eval_attacks=("pgd20", "cw20"), n_eval=20, device="cpu")
    run_spec(spec, tmp_path / "out", show=False)
    rows = read_rows(tmp_path / "out" / "runs.csv")
    paths = export_robustbench_json(rows, tmp_path / "json")
    assert len(paths) == 1 and paths[0].parent == tmp_path / "json" / "fashion-mnist" / "Linf"
    data = json.loads(paths[0].read_text())
    assert tuple(data) == ROBUSTBENCH_FIELDS + EXTRA_FIELDS
    # Round trip: every ModelInfo field present in the file comes back unchanged.
    names = {f.name for f in dataclasses.fields(ModelInfo)}
    info = ModelInfo(**{k: v for k, v in data.items() if k in names})
    assert {k: v for k, v in dataclasses.asdict(info).items() if k in data} == {k: data[k] for k in names & set(data)}
    # The fields outside ModelInfo are RobustBench's own `external`/`unreliable` and ours.
    assert set(data) - names == {"external", "unreliable"} | set(EXTRA_FIELDS)
    # Types as in RobustBench's published files; numbers are the CSV's.
    by_attack = rows.set_index("attack")
    assert data["eps"] == "0.1" and isinstance(data["additional_data"], bool) and data["number_forward_passes"] == 1
    assert data["reported"] == f"{100 * by_attack.loc['pgd20', 'robust_acc']:.2f}"
    assert data["external"] == f"{100 * by_attack.loc['worst_case', 'robust_acc']:.2f}"
    assert data["autoattack_acc"] is None
    assert data["sparsity"] == pytest.approx(by_attack["measured_sparsity"].iloc[0])
    assert data["density"] == pytest.approx(1 - data["sparsity"])
    assert data["method"] == "rst" and data["width"] == 0.1 and data["target_sparsity"] == 0.9
    assert data["run_id"] == spec.resolve().run_id and data["eot_iter"] == 1 and data["randomized"] is False


def test_export_cli_and_zoo_rows_left_out(zoo_run: Tuple, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """`bench export-robustbench` skips zoo rows unless asked; with them, the name is the zoo model's."""
    root = zoo_run[0]
    csv = root / "out" / "runs.csv"
    assert main(["export-robustbench", str(csv), str(tmp_path / "a")]) == 0
    assert "0 model-info file(s)" in capsys.readouterr().out
    assert main(["export-robustbench", str(csv), str(tmp_path / "b"), "--include-zoo"]) == 0
    files = list((tmp_path / "b" / "cifar10" / "Linf").glob("*.json"))
    assert len(files) == 1
    data = json.loads(files[0].read_text())
    assert data["name"].startswith(ZOO_MODEL) and data["eps"] == "0.25" and data["method"] == "zoo"
    assert main(["export-robustbench", str(tmp_path / "missing.csv"), str(tmp_path / "c")]) == 2


def test_export_unreliable_follows_flags(zoo_run: Tuple) -> None:
    """Robustness flags and non-adaptive evaluation mark an entry unreliable; a sparsity flag alone does not."""
    from bench.reporting.export import model_info

    rows = read_rows(zoo_run[0] / "out" / "runs.csv")
    assert model_info(rows)["unreliable"] is False
    assert model_info(rows.assign(flags="sparsity_off_target"))["unreliable"] is False
    flagged = model_info(rows.assign(flags="vanishing_gradients;sparsity_off_target"))
    assert flagged["unreliable"] is True and flagged["flags"] == "sparsity_off_target;vanishing_gradients"
    assert model_info(rows.assign(non_adaptive="True"))["non_adaptive"] is True
    assert model_info(rows.assign(non_adaptive="True"))["unreliable"] is True


def test_eps_text_follows_robustbench() -> None:
    """Whole 1/255 steps are written as RobustBench does ('8/255'); other budgets as decimals."""
    from bench.core.results import format_eps as eps_text

    assert eps_text(8 / 255) == "8/255" and eps_text(0.5 / 255 * 2) == "1/255"
    assert eps_text(0.031) == "0.031" and eps_text(0.1) == "0.1" and eps_text(0.3) == "0.3"


def test_zoo_cli(zoo_run: Tuple, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """`bench zoo list` marks local weights; `bench eval --zoo` input errors exit 2 with one line."""
    root = zoo_run[0]
    assert main(["zoo", "list", "--model-dir", str(root / "models")]) == 0
    listed = {line.split()[0]: line.split()[1:] for line in capsys.readouterr().out.splitlines()[:-1]}
    assert listed[ZOO_MODEL] == ["local"] and listed["Sehwag2020Hydra"] == []
    assert main(["eval"]) == 2
    assert "RUN_DIR" in capsys.readouterr().err
    assert main(["eval", str(tmp_path), "--zoo", ZOO_MODEL]) == 2
    assert main(["eval", "--zoo", ZOO_MODEL, "--model-dir", str(tmp_path)]) == 2
    assert "weights of Ding2020MMA not found" in capsys.readouterr().err
    assert main(["eval", "--zoo", ZOO_MODEL, "--model-dir", str(root / "models"), "--zoo-threat", "L2"]) == 2
    assert "threat must be 'Linf'" in capsys.readouterr().err


class _NotATensor:
    """A pickled object that torch's weights-only loader must refuse."""


def test_bad_checkpoints_are_value_errors(tmp_path: Path) -> None:
    """A checkpoint with arbitrary objects is refused; one of the wrong shape names the architecture."""
    path = tmp_path / "cifar10" / "Linf" / f"{ZOO_MODEL}.pt"
    path.parent.mkdir(parents=True)
    torch.save({"state_dict": {"x": _NotATensor()}}, path)
    with pytest.raises(ValueError, match="not a plain tensor checkpoint"):
        load_zoo_model(ZOO_MODEL, tmp_path)
    torch.save({"state_dict": {"conv1.weight": torch.zeros(3)}}, path)
    with pytest.raises(ValueError, match="does not match Ding2020MMA's architecture"):
        load_zoo_model(ZOO_MODEL, tmp_path)
