"""Invariants of every method family on a tiny MLP and a few hundred embedded examples."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest
import torch
import torch.nn as nn
from conftest import TINY  # noqa: E402 - the shared budget (tests/ is on sys.path)

from bench.harness import find_or_load_ticket
from bench.methods import Network, RunContext
from bench.nn.masking import n_zeros_for, prunable_layers
from bench.nn.models import init_signed_kaiming_constant
from bench.spec import METHODS, RunSpec
from bench.train import Compute
from tickets.alth import level_sparsities, load_masks, prune_and_rewind

SPARSITY = {"dense-at": 0.0, "dense-at-matched": 0.0, "alth": 0.36}
# Per-method hyperparameters of the registry-wide tests: one pruning fraction in every ALTH layer.
HPARAMS: Dict[str, Dict[str, Any]] = {"alth": {"output_prune_fraction": 0.2}}


def run(out: Path, **fields: Any) -> Tuple[nn.Module, Dict[str, Any], Path]:
    """Find (or load) the ticket of a tiny spec; returns model, meta and run folder."""
    spec = RunSpec(**{**TINY, **fields})
    ticket = find_or_load_ticket(spec, out)
    return ticket.model, ticket.meta, ticket.run_dir


def weights(model: nn.Module) -> Dict[str, torch.Tensor]:
    """Prunable weights by layer name (detached copies)."""
    return {name: layer.weight.detach().clone() for name, layer in prunable_layers(model)}


def stage_dirs(out: Path, name: str) -> List[Path]:
    """Folders of the shared stages called ``name`` under ``out``."""
    return sorted(p for p in (out / "stages").iterdir() if p.is_dir() and p.name.startswith(f"{name}-"))


def context(out: Path, **fields: Any) -> RunContext:
    """A RunContext for a tiny spec (data loaded, nothing trained)."""
    from bench.data import load_data

    spec = RunSpec(**{**TINY, **fields}).resolve()
    data = load_data(spec.dataset, spec.data_source, None, spec.val_fraction, spec.seed, spec.n_train)
    return RunContext(spec, data, torch.device("cpu"), out / "run", out / "stages", Compute())


@pytest.fixture(scope="module")
def shared_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One output folder for the module, so the dense stage is trained once."""
    return tmp_path_factory.mktemp("methods")


def test_issue_methods_registered() -> None:
    """Every method family of the comparison is in the registry."""
    assert {"dense-at", "alth", "hydra", "lwm", "rst", "random"} <= set(METHODS.names())


@pytest.mark.parametrize("method", METHODS.names())
def test_measured_sparsity_meets_target(method: str, shared_out: Path) -> None:
    """Each layer's zeros equal round(target * numel) within one weight."""
    target = SPARSITY.get(method, 0.7)
    model, meta, _ = run(shared_out, method=method, sparsity=target, hparams=HPARAMS.get(method))
    for name, layer in prunable_layers(model):
        zeros = int(((layer.weight * layer.mask) == 0).sum())
        assert abs(zeros - n_zeros_for(layer.weight.numel(), target)) <= 1, name
    assert meta["target_sparsity"] == target
    assert abs(meta["measured_sparsity"] - target) < 0.01


@pytest.mark.parametrize("method", METHODS.names())
def test_compute_recorded(method: str, shared_out: Path) -> None:
    """Every run records positive training passes and seconds (shared stages included)."""
    _model, meta, _ = run(shared_out, method=method, sparsity=SPARSITY.get(method, 0.7), hparams=HPARAMS.get(method))
    assert meta["train_passes"] > 0 and meta["train_seconds"] > 0


def test_invalid_hparams_are_value_errors() -> None:
    """Bad user input fails at spec construction with a clear ValueError."""
    bad = [dict(method="dense-at", sparsity=0.5), dict(method="dense-at", sparsity=0.0, trainer="clean"),
           dict(method="alth", hparams={"prune_fraction": 1.0}), dict(method="alth", hparams={"rewind": "late"}),
           dict(method="lwm", hparams={"scope": "row"}), dict(method="hydra", hparams={"score_epochs": -1}),
           dict(method="rst", hparams={"finetune": "yes"}), dict(method="random", hparams={"weights": "half"}),
           dict(method="lwm", hparams={"finetune_lr_scale": 0.0})]
    for fields in bad:
        with pytest.raises(ValueError):
            RunSpec(**{**TINY, **fields})


def test_rst_weights_frozen_and_shared_with_random_control(shared_out: Path) -> None:
    """RST never changes its signed-constant weights; the frozen random control uses the same ones."""
    rst, _, _ = run(shared_out, method="rst", sparsity=0.7)
    ctrl, _, _ = run(shared_out, method="random", sparsity=0.7)
    ref = context(shared_out, method="rst").build_network(Network(bn_affine=False, linear_bias=False))
    init_signed_kaiming_constant(ref, torch.Generator().manual_seed(0))
    for name, w in weights(ref).items():
        assert torch.equal(weights(rst)[name], w)
        assert torch.equal(weights(ctrl)[name], w)
    # The control is built like RST's network: non-affine BatchNorm.
    for m in ctrl.modules():
        if isinstance(m, nn.BatchNorm1d):
            assert not m.affine
    # The masks differ: learned versus random.
    assert any(not torch.equal(a.mask, b.mask) for (_, a), (_, b) in zip(prunable_layers(rst), prunable_layers(ctrl)))


def test_hydra_and_lwm_leave_dense_weights_frozen_before_finetuning(shared_out: Path) -> None:
    """With no fine-tuning, HYDRA's and LWM's weights are the dense stage's, bitwise."""
    dense, _, _ = run(shared_out, method="dense-at", sparsity=0.0)
    hydra, hmeta, _ = run(shared_out, method="hydra", sparsity=0.7, hparams={"finetune_epochs": 0, "score_bn": "frozen"})
    lwm, _, _ = run(shared_out, method="lwm", sparsity=0.7, hparams={"finetune_epochs": 0})
    dense_state = dense.state_dict()
    for model in (hydra, lwm):
        state = model.state_dict()
        for k, v in dense_state.items():
            if not (k.endswith("mask") or k.endswith("scores") or "running" in k or "num_batches" in k):
                assert torch.equal(state[k], v), k
    # LWM's mask is the magnitude mask; HYDRA learned a different one from |w|-proportional scores.
    assert any(not torch.equal(a.mask, b.mask) for (_, a), (_, b) in zip(prunable_layers(hydra), prunable_layers(lwm)))
    assert [s["stage"] for s in hmeta["stages"]] == ["hydra scores", "hydra finetune"]


def test_finetuning_changes_only_surviving_weights(shared_out: Path) -> None:
    """Fine-tuning moves weights, and the effective weights keep the mask's zeros."""
    dense, _, _ = run(shared_out, method="dense-at", sparsity=0.0)
    lwm, _, _ = run(shared_out, method="lwm", sparsity=0.7)
    moved = [not torch.equal(a, b) for a, b in zip(weights(dense).values(), weights(lwm).values())]
    assert any(moved)
    for _name, layer in prunable_layers(lwm):
        assert torch.all((layer.weight * layer.mask)[layer.mask == 0] == 0)


def test_level_sparsities_meet_target_exactly() -> None:
    """Target 0.9 at 20% per level needs 11 levels, the last one partial."""
    levels = level_sparsities(0.9, 0.2)
    assert len(levels) == 11 and levels[-1] == 0.9
    assert all(a < b for a, b in zip(levels, levels[1:]))
    assert abs(levels[-2] - (1 - 0.8**10)) < 1e-12
    assert level_sparsities(0.0, 0.2) == []
    assert level_sparsities(0.36, 0.2) == pytest.approx([0.2, 0.36])


def test_prune_and_rewind_restores_survivors_and_shrinks_masks(tmp_path: Path) -> None:
    """Rewinding puts survivors back at their initial values; masks only shrink."""
    model = context(tmp_path, method="alth").build_model(bn_affine=True)
    init = {k: v.clone() for k, v in model.state_dict().items()}
    previous = {name: layer.mask.clone() for name, layer in prunable_layers(model)}
    for sparsity in (0.3, 0.5, 0.8):
        # Pretend training moved every weight, then prune and rewind.
        with torch.no_grad():
            for _name, layer in prunable_layers(model):
                layer.weight.add_(torch.randn_like(layer.weight))
        prune_and_rewind(model, sparsity, "layer", init)
        for name, layer in prunable_layers(model):
            keep = layer.mask == 1
            assert torch.equal(layer.weight[keep], init[f"{name}.weight"][keep])
            assert torch.all(layer.mask <= previous[name])
            previous[name] = layer.mask.clone()


def test_alth_levels_monotone_and_rewound(tmp_path: Path) -> None:
    """A real ALTH run: masks shrink level by level; without retraining the survivors are the init."""
    _model, meta, _ = run(tmp_path, method="alth", sparsity=0.5, hparams={"output_prune_fraction": 0.2})
    masks = [load_masks(tmp_path / "stages" / level["stage"]) for level in meta["levels"]]
    assert [round(level["target_sparsity"], 6) for level in meta["levels"]] == [0.2, 0.36, 0.488, 0.5]
    for before, after in zip(masks, masks[1:]):
        for name in before:
            assert torch.all(after[name] <= before[name])
    model, _, _ = run(tmp_path, method="alth", sparsity=0.5, hparams={"level_epochs": 0, "output_prune_fraction": 0.2})
    init = weights(context(tmp_path, method="alth").build_model(bn_affine=True))
    for name, layer in prunable_layers(model):
        keep = layer.mask == 1
        assert torch.equal(layer.weight[keep], init[name][keep])


def test_alth_global_scope_and_early_rewind(tmp_path: Path) -> None:
    """Global ranking meets the overall target; the early rewind point is its own shared stage."""
    model, meta, _ = run(tmp_path, method="alth", sparsity=0.5, hparams={"scope": "global", "rewind": "early"})
    total = sum(layer.weight.numel() for _n, layer in prunable_layers(model))
    zeros = sum(int(((layer.weight * layer.mask) == 0).sum()) for _n, layer in prunable_layers(model))
    assert abs(zeros - n_zeros_for(total, 0.5)) <= len(prunable_layers(model))
    assert len(stage_dirs(tmp_path, "alth-rewind")) == 1
    assert meta["levels"][-1]["target_sparsity"] == 0.5


def test_shared_dense_stage_trained_once_and_counted(tmp_path: Path) -> None:
    """LWM and HYDRA with one base train the dense network once; both count its compute."""
    _m, lwm, _ = run(tmp_path, method="lwm", sparsity=0.7)
    _m, hydra, _ = run(tmp_path, method="hydra", sparsity=0.7)
    _m, dense, _ = run(tmp_path, method="dense-at", sparsity=0.0)
    stages = stage_dirs(tmp_path, "dense-at")
    assert len(stages) == 1
    stage = json.loads((stages[0] / "stage.json").read_text())["compute"]
    # Trained inside the first run only; loaded by the others.
    assert [s["stage"] for s in lwm["stages"]] == ["dense AT", "lwm finetune"]
    assert "reused_stages" not in lwm
    assert hydra["reused_stages"] == [stages[0].name] and dense["reused_stages"] == [stages[0].name]
    # Equal epochs and data: every stage costs the same passes; nothing counted twice.
    assert dense["train_passes"] == stage["passes"]
    assert lwm["train_passes"] == 2 * stage["passes"]
    assert hydra["train_passes"] == 3 * stage["passes"]
    assert lwm["dense_stage"]["stage"] == hydra["dense_stage"]["stage"] == stages[0].name


def test_different_base_gets_its_own_dense_stage(tmp_path: Path) -> None:
    """A different seed (or width, eps, epochs...) is a different dense network."""
    run(tmp_path, method="lwm", sparsity=0.7)
    run(tmp_path, method="lwm", sparsity=0.7, seed=1)
    run(tmp_path, method="lwm", sparsity=0.7, hparams={"pretrain_epochs": 2})
    assert len(stage_dirs(tmp_path, "dense-at")) == 3


def test_rst_finetune_reinit_starts_from_fresh_weights(tmp_path: Path) -> None:
    """reinit replaces the frozen random weights by Kaiming-normal (fan_in, relu) ones; inherit keeps them."""
    ctx = context(tmp_path, method="rst")
    net = Network(bn_affine=False, linear_bias=False)
    signed = ctx.build_network(net)
    init_signed_kaiming_constant(signed, torch.Generator().manual_seed(0))
    # The reference's re-initialisation, drawn in layer order after building the seed+1 network.
    fresh = ctx.build_network(net, seed_offset=1)
    for _name, layer in prunable_layers(fresh):
        nn.init.kaiming_normal_(layer.weight, mode="fan_in", nonlinearity="relu")
    reinit, _, _ = run(tmp_path, method="rst", sparsity=0.7, hparams={"finetune": "reinit", "finetune_epochs": 0})
    inherit, _, _ = run(tmp_path, method="rst", sparsity=0.7, hparams={"finetune": "inherit", "finetune_epochs": 0})
    for name, w in weights(reinit).items():
        assert torch.equal(w, weights(fresh)[name])
    for name, w in weights(inherit).items():
        assert torch.equal(w, weights(signed)[name])
    # The pre-protocol-2 choice: PyTorch's default initialisation of the seed+1 network.
    old, _, _ = run(tmp_path, method="rst", sparsity=0.7,
                    hparams={"finetune": "reinit", "finetune_epochs": 0, "reinit_init": "pytorch-default"})
    default = weights(ctx.build_network(net, seed_offset=1))
    for name, w in weights(old).items():
        assert torch.equal(w, default[name])
