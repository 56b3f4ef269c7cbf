"""Methods as their reference code does them (issue 15): each test fails on the pre-protocol-2 code."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Tuple

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from conftest import TINY  # noqa: E402 - the shared budget (tests/ is on sys.path)

from bench.core import paths
from bench.core.config import load_yaml
from bench.core.io import atomic_save
from bench.data import load_data
from bench.harness import find_or_load_ticket
from bench.methods import Network, RunContext, get_method
from bench.methods.stages import DENSE_STAGE, dense_key
from bench.methods.ticket import read_spec
from bench.nn.masking import prunable_layers, topk_mask
from bench.nn.models import ModelConfig, build_model, init_signed_kaiming_constant
from bench.spec import METHODS, RunSpec
from bench.train import Compute, TrainConfig, train_step, training_attack
from bench.trainers import TRAINERS
from tickets.alth import level_schedule, load_masks

PRESETS = sorted((Path(__file__).resolve().parent.parent / "configs" / "presets").glob("*.yaml"))
# Methods whose references build every layer without a bias (RST's network and its controls).
NO_BIAS = ("rst", "r2s", "random", "dense-at-matched")


def run(out: Path, **fields: Any) -> Tuple[nn.Module, Dict[str, Any], Path]:
    """Find (or load) the ticket of a tiny spec; returns model, meta and run folder."""
    ticket = find_or_load_ticket(RunSpec(**{**TINY, **fields}), out)
    return ticket.model, ticket.meta, ticket.run_dir


def context(out: Path, **fields: Any) -> RunContext:
    """A RunContext for a tiny spec (data loaded, nothing trained)."""
    spec = RunSpec(**{**TINY, **fields}).resolve()
    data = load_data(spec.dataset, spec.data_source, None, spec.val_fraction, spec.seed, spec.n_train)
    return RunContext(spec, data, torch.device("cpu"), out / "run", out / "stages", Compute())


def linear_biases(model: nn.Module) -> list:
    """The bias of every linear layer (``None`` where it has none)."""
    return [m.bias for m in model.modules() if isinstance(m, nn.Linear)]


@pytest.mark.parametrize("method", METHODS.names())
def test_network_kind_is_what_the_reference_builds(method: str) -> None:
    """RST's network and its controls have no linear biases (and non-affine BatchNorm); the others keep both."""
    sparsity = 0.0 if method.startswith("dense-at") else 0.9
    spec = RunSpec(**{**TINY, "method": method, "sparsity": sparsity})
    model = get_method(method).build_empty(spec)
    biases = linear_biases(model)
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if method in NO_BIAS:
        assert biases and all(b is None for b in biases)
        assert bns and not any(m.affine for m in bns)
    else:
        assert all(b is not None for b in biases) and all(m.affine for m in bns)


def test_rst_ticket_has_no_frozen_random_bias(tmp_path: Path) -> None:
    """A searched RST ticket's state holds no bias tensor at all (the old classifier kept a random one)."""
    model, _, run_dir = run(tmp_path, method="rst", sparsity=0.7)
    state = torch.load(paths.ticket(run_dir), weights_only=True)
    assert not [k for k in state if k.endswith(".bias")]
    assert all(b is None for b in linear_biases(model))
    # The pre-protocol-2 network is still there on request.
    old, _, _ = run(tmp_path, method="rst", sparsity=0.7, hparams={"linear_bias": True})
    assert all(b is not None for b in linear_biases(old))


@pytest.mark.parametrize("craft_bn, extra_batches", [("eval", 0), ("train", 3)])
def test_craft_bn_mode_decides_whether_attack_steps_update_batchnorm(craft_bn: str, extra_batches: int) -> None:
    """Train-mode crafting (RST's code) feeds every PGD step through BatchNorm's statistics; eval mode none."""
    info = context(Path("/nonexistent"), craft_bn=craft_bn).data.info
    model = build_model("mlp", ModelConfig(info.in_channels, info.num_classes, info.image_size, info.mean, info.std, 0.1))
    bn = next(m for m in model.modules() if isinstance(m, nn.BatchNorm1d))
    cfg = TrainConfig(epochs=1, lr=0.01, train_steps=3, train_step_size=0.025, craft_bn=craft_bn)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,))
    before = int(bn.num_batches_tracked)
    train_step(model, x, y, opt, cfg, training_attack(cfg, 0), torch.Generator().manual_seed(0))
    # One batch for the loss's forward pass, plus one per attack step in train mode.
    assert int(bn.num_batches_tracked) - before == 1 + extra_batches


def test_craft_bn_is_a_recorded_spec_field() -> None:
    """The craft mode is part of the run's identity and of the stage settings."""
    assert RunSpec(craft_bn="train").run_id != RunSpec().run_id
    assert TrainConfig.from_spec(RunSpec(craft_bn="train"), augment=False, epochs=1).craft_bn == "train"
    with pytest.raises(ValueError, match="unknown craft_bn 'batch'"):
        RunSpec(craft_bn="batch")


def test_rst_finetunes_at_the_search_learning_rate(tmp_path: Path) -> None:
    """The reference fine-tunes at its config's lr (the old default was 0.1 x --lr)."""
    _model, _meta, run_dir = run(tmp_path, method="rst", sparsity=0.7, lr=0.05,
                                 hparams={"finetune": "inherit", "finetune_epochs": 1})
    ck = torch.load(paths.checkpoint(run_dir / "finetune"), weights_only=True)
    assert [g["initial_lr"] for g in ck["opt"]["param_groups"]] == [0.05]


def test_level_schedule_prunes_the_output_layer_at_its_own_rate() -> None:
    """Hidden layers lose 20 %, the output 10 % of their remaining weights per level; the last level meets the target."""
    sizes, fractions = [1000, 500, 100], [0.2, 0.2, 0.1]
    plan = level_schedule(0.9, sizes, fractions)
    for level, (overall, per_layer) in enumerate(plan[:-1], start=1):
        assert per_layer == pytest.approx([1 - 0.8**level, 1 - 0.8**level, 1 - 0.9**level])
        assert overall == pytest.approx(sum(n * s for n, s in zip(sizes, per_layer)) / sum(sizes))
        assert overall < 0.9
    overall, per_layer = plan[-1]
    assert overall == 0.9 and sum(n * s for n, s in zip(sizes, per_layer)) / sum(sizes) == pytest.approx(0.9)
    assert per_layer[2] < per_layer[0]
    # One fraction everywhere is the old closed form: 1 - 0.8^l, 11 levels to 0.9.
    same = level_schedule(0.9, sizes, [0.2] * 3)
    assert len(same) == 11 and same[-2][0] == pytest.approx(1 - 0.8**10)


def test_alth_output_layer_keeps_more_weights(tmp_path: Path) -> None:
    """A real ALTH run: each layer's zeros follow its own fraction and the overall sparsity meets the target."""
    model, meta, _ = run(tmp_path, method="alth", sparsity=0.5)
    layers = prunable_layers(model)
    sizes = [layer.weight.numel() for _, layer in layers]
    _overall, per_layer = level_schedule(0.5, sizes, [0.2] * (len(layers) - 1) + [0.1])[-1]
    for (name, layer), s in zip(layers, per_layer):
        zeros = int(((layer.weight * layer.mask) == 0).sum())
        assert abs(zeros - round(s * layer.weight.numel())) <= 1, name
    assert per_layer[-1] < per_layer[0]
    assert abs(meta["measured_sparsity"] - 0.5) <= len(layers) / sum(sizes)


def test_alth_prunes_from_the_last_epoch_weights(tmp_path: Path) -> None:
    """The first level's mask is the magnitude mask of the dense stage's *last* epoch, not its best one."""
    ctx = context(tmp_path, method="alth", sparsity=0.2)
    # Train the dense stage, then make its last-epoch weights differ from the best-validation ones.
    run(tmp_path, method="dense-at", sparsity=0.0)
    train_dir = ctx.stage_path(DENSE_STAGE, dense_key(ctx.spec, ctx.spec.epochs)) / "train"
    ck = torch.load(paths.checkpoint(train_dir), weights_only=True)
    gen = torch.Generator().manual_seed(5)
    ck["model"] = {k: (torch.randn(v.shape, generator=gen) if k.endswith("weight") and v.dim() > 1 else v)
                   for k, v in ck["model"].items()}
    atomic_save(paths.checkpoint(train_dir), ck)
    _model, meta, _ = run(tmp_path, method="alth", sparsity=0.2, hparams={"output_prune_fraction": 0.2})
    masks = load_masks(tmp_path / "stages" / meta["levels"][0]["stage"])
    for name, mask in masks.items():
        last = ck["model"][f"{name}.weight"]
        assert torch.equal(mask, topk_mask(last.abs(), 0.2)), name


def test_hydra_trains_batchnorm_with_the_scores(tmp_path: Path) -> None:
    """HYDRA's score stage trains BatchNorm's affine tensors (its default); weights stay the dense stage's."""
    dense, _, _ = run(tmp_path, method="dense-at", sparsity=0.0)
    hydra, _, _ = run(tmp_path, method="hydra", sparsity=0.7, hparams={"finetune_epochs": 0})
    d, h = dense.state_dict(), hydra.state_dict()
    bn_affine = [k for k in d if "running" not in k and "num_batches" not in k and k.endswith(("weight", "bias"))
                 and d[k].dim() == 1]
    assert bn_affine and any(not torch.equal(d[k], h[k]) for k in bn_affine)
    for name, layer in prunable_layers(dense):
        assert torch.equal(h[f"{name}.weight"], layer.weight)


def test_cosentino_loss_is_half_clean_half_adversarial_with_label_smoothing() -> None:
    """The loss equals 0.5 CE_ls(clean) + 0.5 CE_ls(adversarial), computed independently."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    x, x_adv, y = torch.rand(5, 1, 2, 2), torch.rand(5, 1, 2, 2), torch.tensor([0, 1, 2, 0, 1])
    cfg = TrainConfig(epochs=1, lr=0.1, trainer="cosentino")
    loss, passes = TRAINERS.get("cosentino").loss(model, x, x_adv, y, cfg)

    # Label smoothing 0.1 over 3 classes: target 0.9 + 0.1/3 on the label, 0.1/3 elsewhere.
    def smoothed_ce(logits: torch.Tensor) -> torch.Tensor:
        target = torch.full(logits.shape, 0.1 / 3)
        target[torch.arange(len(y)), y] += 0.9
        return -(target * F.log_softmax(logits, 1)).sum(1).mean()

    expected = 0.5 * smoothed_ce(model(x)) + 0.5 * smoothed_ce(model(x_adv))
    assert torch.allclose(loss, expected) and passes == 10


def test_cosentino_attack_uses_the_predicted_labels() -> None:
    """cleverhans without y attacks the model's own prediction: crafting equals PGD on argmax labels."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3)).eval()
    x, y = torch.rand(6, 1, 2, 2), torch.tensor([0, 1, 2, 0, 1, 2])
    cfg = TrainConfig(epochs=1, lr=0.1, train_steps=4, eps=0.3, train_step_size=0.05, trainer="cosentino")
    attack = training_attack(cfg, 3)
    crafted, _ = TRAINERS.get("cosentino").craft(model, x, y, cfg, attack, torch.Generator().manual_seed(0))
    predicted = model(x).argmax(1)
    assert not torch.equal(predicted, y)
    assert torch.equal(crafted, attack(model, x, predicted))


def test_matched_dense_control_starts_from_rst_weights(tmp_path: Path) -> None:
    """dense-at-matched: RST's signed-constant weights as its start, non-affine BN, no biases, all weights train."""
    start, _, _ = run(tmp_path, method="dense-at-matched", sparsity=0.0, epochs=0)
    ref = context(tmp_path, method="rst").build_network(Network(bn_affine=False, linear_bias=False))
    init_signed_kaiming_constant(ref, torch.Generator().manual_seed(0))
    for (name, a), (_, b) in zip(prunable_layers(start), prunable_layers(ref)):
        assert torch.equal(a.weight, b.weight), name
        assert bool((a.mask == 1).all())
    trained, _, _ = run(tmp_path, method="dense-at-matched", sparsity=0.0)
    assert all(not torch.equal(a.weight, b.weight) for (_, a), (_, b) in zip(prunable_layers(trained), prunable_layers(ref)))


def test_trained_random_control_is_matched_to_rst(tmp_path: Path) -> None:
    """The trained random control starts from RST's weights in RST's network; 'standard' is the old control."""
    start, _, _ = run(tmp_path, method="random", sparsity=0.7, epochs=0, hparams={"weights": "trained"})
    ref = context(tmp_path, method="rst").build_network(Network(bn_affine=False, linear_bias=False))
    init_signed_kaiming_constant(ref, torch.Generator().manual_seed(0))
    for (name, a), (_, b) in zip(prunable_layers(start), prunable_layers(ref)):
        assert torch.equal(a.weight, b.weight), name
    standard, _, _ = run(tmp_path, method="random", sparsity=0.7, epochs=0,
                         hparams={"weights": "trained", "network": "standard"})
    assert all(b is not None for b in linear_biases(standard))


@pytest.mark.parametrize("preset", PRESETS, ids=[p.stem for p in PRESETS])
def test_reference_presets_are_valid_specs(preset: Path) -> None:
    """Every preset under configs/presets builds a valid spec with the settings its comment claims."""
    spec = RunSpec.from_dict(load_yaml(str(preset)))
    if preset.stem == "cosentino":
        assert (spec.method, spec.arch, spec.optimizer, spec.lr, spec.trainer, spec.eps) == \
            ("alth", "lenet-300-100", "adam", 0.0012, "cosentino", 0.3)
        assert (spec.hparams.prune_fraction, spec.hparams.output_prune_fraction) == (0.2, 0.1)
    if preset.stem == "hydra-reference":
        assert (spec.trainer, spec.train_steps, spec.weight_decay) == ("trades", 10, 1e-4)
        assert (spec.hparams.score_epochs, spec.hparams.start_from) == (20, "last")
    assert len(PRESETS) >= 2


def test_lenet_300_100_has_no_batchnorm_and_no_bias() -> None:
    """Cosentino's net: 784-300-100-10, ReLU, nothing else."""
    model = build_model("lenet-300-100", ModelConfig(1, 10, 28, (0.5,), (0.5,)))
    shapes = [tuple(layer.weight.shape) for _, layer in prunable_layers(model)]
    assert shapes == [(300, 784), (100, 300), (10, 100)]
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    assert all(b is None for b in linear_biases(model))


def test_run_folder_of_an_older_protocol_is_refused(tmp_path: Path) -> None:
    """A spec.json written before protocols names the version gap instead of loading the wrong network."""
    folder = tmp_path / "runs" / "abc"
    folder.mkdir(parents=True)
    data = RunSpec(**TINY).to_dict()
    del data["protocol"]
    (folder / "spec.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="before method protocols"):
        read_spec(folder)
    (folder / "spec.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_spec(folder)

