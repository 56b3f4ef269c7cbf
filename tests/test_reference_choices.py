"""Issue 29 part 1: each method's reference choices are available and its reference presets use them.

The final-ticket selection (best validation epoch or last epoch), the dense network's initialisation
(PyTorch's, OpenLTH's, HYDRA's, glorot) and LWM's source network; every test fails on the code before them.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
from pathlib import Path
from typing import Any, Dict, Tuple

import pytest
import torch
import torch.nn as nn
from conftest import TINY

import bench.train as train_module
from bench.core import paths
from bench.core.config import load_yaml
from bench.core.io import atomic_save
from bench.data import load_data
from bench.harness import find_or_load_ticket
from bench.methods import RunContext, get_method
from bench.methods.stages import DENSE_INITS, DENSE_STAGE, dense_initial, dense_key, init_dense
from bench.nn.masking import prunable_layers, topk_mask
from bench.spec import METHODS, RunSpec
from bench.sweep.grid import load_sweep
from bench.train import Compute

PRESETS = Path(__file__).resolve().parent.parent / "configs" / "presets"
# The presets that reproduce a method's reference code (the APB presets are a benchmark's settings, not a method's).
REFERENCE_PRESETS = ("cosentino", "openlth-alth", "hydra-reference", "hydra-wrn-28-4-cifar10", "rst-resnet18-cifar10",
                     "rst-wrn-34-10-cifar10")
# Each method's final training stage: where its resume checkpoint lies (run folder or shared stage).
FINAL_STAGE = {"rst": "search", "dense-at-matched": "train", "random": "train", "hydra": "finetune", "lwm": "finetune"}


def run(out: Path, **fields: Any) -> Tuple[nn.Module, Dict[str, Any], Path]:
    """Find (or load) the ticket of a tiny spec; returns model, meta and run folder."""
    ticket = find_or_load_ticket(RunSpec(**{**TINY, **fields}), out)
    return ticket.model, ticket.meta, ticket.run_dir


def context(out: Path, **fields: Any) -> RunContext:
    """A RunContext for a tiny spec (data loaded, nothing trained)."""
    spec = RunSpec(**{**TINY, **fields}).resolve()
    data = load_data(spec.dataset, spec.data_source, None, spec.val_fraction, spec.seed, spec.n_train)
    return RunContext(spec, data, torch.device("cpu"), out / "run", out / "stages", Compute())


def final_checkpoint(out: Path, method: str, meta: Dict[str, Any], run_dir: Path) -> Dict[str, Any]:
    """The resume checkpoint of the method's final training stage."""
    if method == "alth":
        train_dir = out / "stages" / meta["levels"][-1]["stage"] / "train"
    elif method == "dense-at":
        train_dir = out / "stages" / meta["dense_stage"]["stage"] / "train"
    else:
        train_dir = run_dir / FINAL_STAGE[method]
    checkpoint: Dict[str, Any] = torch.load(paths.checkpoint(train_dir), weights_only=True)
    return checkpoint


def same_state(model: nn.Module, state: Dict[str, torch.Tensor]) -> bool:
    """Whether every tensor of ``model``'s state equals ``state``'s."""
    mine = model.state_dict()
    return set(mine) == set(state) and all(torch.equal(mine[k], state[k]) for k in mine)


SELECT_CASES = [("rst", 0.8, {}), ("dense-at", 0.0, {}), ("dense-at-matched", 0.0, {}), ("lwm", 0.5, {}),
                ("hydra", 0.5, {}), ("random", 0.5, {"weights": "trained"}), ("alth", 0.36, {})]


@pytest.mark.parametrize("method, sparsity, hparams", SELECT_CASES, ids=[c[0] for c in SELECT_CASES])
def test_select_keeps_the_final_stages_best_or_last_epoch(method: str, sparsity: float, hparams: Dict[str, Any],
                                                           tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--select last`` makes the final stage's last epoch the ticket; the default its best-validation epoch."""
    # A validation score that falls with every call makes each stage's first epoch its best, so the two differ.
    calls = itertools.count(1)
    monkeypatch.setattr(train_module, "robust_accuracy", lambda *args, **kwargs: 1.0 / next(calls))
    fields = {"method": method, "sparsity": sparsity, "epochs": 3, "hparams": hparams}
    best, best_meta, best_dir = run(tmp_path / "best", **fields)
    last, last_meta, last_dir = run(tmp_path / "last", **fields, select="last")
    ck_best = final_checkpoint(tmp_path / "best", method, best_meta, best_dir)
    ck_last = final_checkpoint(tmp_path / "last", method, last_meta, last_dir)
    assert int(ck_best["best"]["epoch"]) == 0 and int(ck_last["epoch"]) == 2
    assert same_state(best, ck_best["best_state"]) and best_meta["select"] == "best"
    assert same_state(last, ck_last["model"]) and last_meta["select"] == "last"
    assert not same_state(best, ck_best["model"])


def test_select_is_a_spec_field_outside_the_dense_stage_key() -> None:
    """Only a non-default choice enters the run id; the dense stage (which stores both epochs) is shared."""
    spec = RunSpec(method="lwm", sparsity=0.9)
    last = RunSpec(method="lwm", sparsity=0.9, select="last")
    assert spec.run_id == RunSpec(method="lwm", sparsity=0.9, select="best").run_id != last.run_id
    assert dense_key(spec, 8) == dense_key(last, 8)
    # Weight and channel tickets prune the same dense network (channel runs trained their own before).
    assert dense_key(spec, 8) == dense_key(RunSpec(method="hydra", sparsity=0.5, granularity="channel"), 8)
    with pytest.raises(ValueError, match="select"):
        RunSpec(select="first")


def fans(weight: torch.Tensor) -> Tuple[int, int]:
    """(fan_in, fan_out) of a conv or linear weight."""
    receptive = weight[0, 0].numel()
    return weight.shape[1] * receptive, weight.shape[0] * receptive


def test_dense_inits_follow_the_reference_code() -> None:
    """Each init's statistics, checked against its definition (std within 15 % on layers of >= 1 000 weights)."""
    spec = RunSpec(method="dense-at", sparsity=0.0, width=1.0)
    for init in DENSE_INITS:
        model = get_method("dense-at").build_empty(spec)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        init_dense(model, init, seed=0)
        bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if init == "pytorch":
            assert same_state(model, before)
            continue
        for _name, layer in prunable_layers(model):
            w = layer.weight.detach()
            fan_in, fan_out = fans(w)
            conv = w.dim() == 4
            expected = {"openlth": math.sqrt(2 / fan_in),
                        "hydra": math.sqrt(2 / fan_out) if conv else 0.01,
                        "glorot": math.sqrt(2 / (fan_in + fan_out))}[init]
            if w.numel() >= 1000:
                assert abs(float(w.std()) / expected - 1) < 0.15, (init, _name)
            if init in ("hydra", "glorot") and layer.bias is not None:
                assert torch.equal(layer.bias, torch.zeros_like(layer.bias))
        for bn in bns:
            if init == "openlth":
                weight = bn.weight.detach()
                assert 0 <= float(weight.min()) and float(weight.max()) < 1 and float(weight.std()) > 0.1
            else:
                assert torch.equal(bn.weight, torch.ones_like(bn.weight))
            assert torch.equal(bn.bias, torch.zeros_like(bn.bias))


def test_alth_rewinds_to_the_chosen_initialisation(tmp_path: Path) -> None:
    """The rewind point of ``--rewind init`` is the dense network's initialisation, OpenLTH's when asked."""
    ctx = context(tmp_path, method="alth", sparsity=0.5, hparams={"dense_init": "openlth"})
    method = get_method("alth")
    base = dense_key(ctx.spec, ctx.spec.epochs, "openlth")
    rewind = method.rewind_state(ctx, base, dense_initial(ctx, "openlth"), None)  # type: ignore[attr-defined]
    openlth = dense_initial(ctx, "openlth").state_dict()
    pytorch = dense_initial(ctx, "pytorch").state_dict()
    assert set(rewind) == set(openlth)
    assert all(torch.equal(rewind[k], openlth[k]) for k in rewind)
    assert any(not torch.equal(rewind[k], pytorch[k]) for k in rewind)
    # The dense stage trained from it is its own artifact, and the default's key is what it always was.
    assert base["init"] == "openlth" and "init" not in dense_key(ctx.spec, ctx.spec.epochs)


def test_a_dense_stage_trains_from_its_init(tmp_path: Path) -> None:
    """hydra with ``dense_init hydra`` trains its own dense stage (not the default-init one) from HYDRA's init."""
    _model, meta, _ = run(tmp_path, method="hydra", sparsity=0.5, hparams={"dense_init": "hydra"})
    assert meta["dense_stage"]["init"] == "hydra"
    ctx = context(tmp_path, method="hydra", sparsity=0.5)
    default_stage = ctx.stage_path(DENSE_STAGE, dense_key(ctx.spec, ctx.spec.epochs))
    hydra_stage = ctx.stage_path(DENSE_STAGE, dense_key(ctx.spec, ctx.spec.epochs, "hydra"))
    assert meta["dense_stage"]["stage"] == hydra_stage.name != default_stage.name
    assert not default_stage.exists()


def test_lwm_prunes_the_last_epoch_when_asked(tmp_path: Path) -> None:
    """``lwm --start-from last`` prunes the dense stage's last epoch (HYDRA's hand-over), as its preset does."""
    ctx = context(tmp_path, method="lwm", sparsity=0.5)
    run(tmp_path, method="dense-at", sparsity=0.0)
    train_dir = ctx.stage_path(DENSE_STAGE, dense_key(ctx.spec, ctx.spec.epochs)) / "train"
    ck = torch.load(paths.checkpoint(train_dir), weights_only=True)
    gen = torch.Generator().manual_seed(5)
    ck["model"] = {k: (torch.randn(v.shape, generator=gen) if k.endswith("weight") and v.dim() > 1 else v)
                   for k, v in ck["model"].items()}
    atomic_save(paths.checkpoint(train_dir), ck)
    model, meta, _ = run(tmp_path, method="lwm", sparsity=0.5, hparams={"start_from": "last", "finetune_epochs": 0})
    assert meta["dense_stage"]["start_from"] == "last"
    for name, layer in prunable_layers(model):
        assert torch.equal(layer.mask, topk_mask(ck["model"][f"{name}.weight"].abs(), 0.5)), name


@pytest.mark.parametrize("name", REFERENCE_PRESETS)
def test_reference_presets_select_as_their_code_does(name: str) -> None:
    """A method's reference preset keeps the epoch its reference code keeps (never a test-set choice)."""
    spec = RunSpec.from_dict(load_yaml(str(PRESETS / f"{name}.yaml")))
    assert spec.select == METHODS.get(spec.method).reference_select
    if spec.method == "hydra":
        assert spec.hparams.dense_init == "hydra" and spec.hparams.start_from == "last"
    if spec.method == "rst":
        assert spec.craft_bn == "train"
    if name == "openlth-alth":
        assert (spec.hparams.dense_init, spec.hparams.scope, spec.hparams.start_from) == ("openlth", "global", "last")
    if name == "cosentino":
        assert spec.hparams.dense_init == "glorot"


def test_every_method_declares_its_reference_selection() -> None:
    """Methods with reference code say which epoch it keeps; the controls have none."""
    declared = {name: METHODS.get(name).reference_select for name in METHODS.names()}
    assert declared["alth"] == "last" and declared["rst"] == declared["hydra"] == declared["lwm"] == "best"
    assert declared["random"] is None and declared["dense-at"] is None


def test_the_rst_paper_sweep_trains_as_the_rst_preset() -> None:
    """configs/sweeps/rst-paper-sparsity.yaml says "the paper's training settings": its rst runs train exactly as
    the RST preset (craft_bn train included; the sweep crafted in eval mode before)."""
    preset = RunSpec.from_dict(load_yaml(str(PRESETS / "rst-resnet18-cifar10.yaml"))).resolve()
    sweep = load_sweep(PRESETS.parent / "sweeps" / "rst-paper-sparsity.yaml")
    rst = [s for s in sweep.specs if s.method == "rst"]
    assert rst
    for spec in rst:
        # The sweep states the step (2/255) that the preset leaves at its default eps/4: the same step.
        assert spec.step_size == preset.step_size
        assert dataclasses.replace(spec.resolve(), sparsity=preset.sparsity, seed=preset.seed, n_eval=preset.n_eval,
                                   eval_attacks=preset.eval_attacks, train_step_size=None) == preset
