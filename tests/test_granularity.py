"""Structured sparsity (``--granularity channel``): whole output channels pruned, sparsity keeping its meaning, every
method that declares it, and the R2S hyperparameter that had the name before."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn as nn
from conftest import TINY  # noqa: E402 - the shared budget (tests/ is on sys.path)

from bench.cli import main
from bench.harness import find_or_load_ticket, run_spec
from bench.nn.masking import apply_masks, channel_mask, measured_sparsity, prunable_layers, removed_channels
from bench.nn.models import ModelConfig, build_model
from bench.spec import METHODS, RunSpec

CHANNEL_METHODS = sorted(n for n in METHODS.names() if "channel" in METHODS.get(n).granularities)


def convnet(width: float = 0.25) -> nn.Module:
    """A masked conv net for 28x28 grey images."""
    torch.manual_seed(0)
    return build_model("convnet", ModelConfig(1, 10, 28, (0.5,), (0.25,), width))


def zero_rows(weight: torch.Tensor) -> torch.Tensor:
    """Which output channels of ``weight`` are all zero."""
    return weight.flatten(1).eq(0).all(dim=1)


def test_channel_mask_removes_the_lowest_channels() -> None:
    """The channels of lowest mean score go, whole, and exactly round(sparsity * channels) of them."""
    scores = torch.arange(24, dtype=torch.float32).view(6, 4).flip(0)  # channel 5 lowest, then 4, ...
    mask = channel_mask(scores, 0.5)
    assert mask.shape == scores.shape
    assert torch.equal(zero_rows(mask), torch.tensor([False, False, False, True, True, True]))
    assert bool(((mask == 0) | (mask == 1)).all())
    # At least one channel is always kept.
    assert int((~zero_rows(channel_mask(scores, 0.99))).sum()) == 1


@pytest.mark.parametrize("sparsity", [0.5, 0.8, 0.9])
def test_channel_masks_keep_sparsity_and_classes(sparsity: float) -> None:
    """Every layer but the output layer loses whole channels at the target; the output layer (its channels are the
    classes) loses single weights at the target and keeps every class; so the network's fraction of zero weights is
    the target up to one channel per layer."""
    model = convnet()
    apply_masks(model, lambda _n, layer: torch.rand(layer.weight.shape), sparsity, granularity="channel")
    layers = prunable_layers(model)
    slack = 0.0
    for name, layer in layers[:-1]:
        rows = layer.mask.flatten(1)
        # A channel's mask is all ones or all zeros.
        assert bool((rows.eq(0).all(1) | rows.eq(1).all(1)).all()), name
        assert abs(float(rows.eq(0).all(1).float().mean()) - sparsity) <= 1 / rows.shape[0], name
        slack += layer.weight[0].numel()
    _out_name, output = layers[-1]
    assert not bool(zero_rows(output.mask).any())
    assert float((output.mask == 0).float().mean()) == pytest.approx(sparsity, abs=1 / output.mask.numel())
    total = sum(layer.weight.numel() for _n, layer in layers)
    assert abs(measured_sparsity(model) - sparsity) <= slack / total
    assert 0 < removed_channels(model) < 1


def test_channel_targets_are_the_sparsity() -> None:
    """Every layer prunes the target fraction (no layer is spared and none made to compensate)."""
    model = convnet()
    apply_masks(model, lambda _n, layer: torch.rand(layer.weight.shape), 0.7, granularity="channel")
    layers = prunable_layers(model)
    fractions = {name: float((layer.mask == 0).float().mean()) for name, layer in layers}
    assert all(abs(f - 0.7) <= 1 / layers[i][1].weight.shape[0] for i, f in enumerate(fractions.values()))


def test_a_partial_per_layer_mapping_is_a_clear_error_for_channels() -> None:
    """A per-layer mapping that leaves out a layer is a ValueError naming the rule (a bare KeyError before)."""
    model = convnet()
    first = prunable_layers(model)[0][0]
    with pytest.raises(ValueError, match="every prunable layer"):
        apply_masks(model, lambda _n, layer: layer.weight.abs(), {first: 0.5}, granularity="channel")


def test_channel_scope_global_is_refused() -> None:
    """Channels are ranked within each layer; a global ranking is a clear error."""
    with pytest.raises(ValueError, match="scope 'layer'"):
        apply_masks(convnet(), lambda _n, layer: layer.weight.abs(), 0.5, scope="global", granularity="channel")
    with pytest.raises(ValueError, match="scope 'layer'"):
        RunSpec(method="lwm", granularity="channel", hparams={"scope": "global"})


def test_methods_without_channels_refuse() -> None:
    """A method that does not declare channel granularity refuses it, naming what it can do."""
    for name in sorted(set(METHODS.names()) - set(CHANNEL_METHODS)):
        with pytest.raises(ValueError, match="granularity"):
            RunSpec(method=name, granularity="channel")
    with pytest.raises(ValueError, match="granularity"):
        RunSpec(granularity="filter")


def test_channel_methods_include_the_issue_four() -> None:
    """rst, hydra, lwm and random prune channels."""
    assert {"rst", "hydra", "lwm", "random"} <= set(CHANNEL_METHODS)


def test_granularity_default_keeps_run_ids() -> None:
    """The default granularity is left out of the run id (runs made before the field keep theirs)."""
    assert RunSpec().run_id == RunSpec(granularity="weight").run_id
    assert RunSpec(granularity="channel").run_id != RunSpec().run_id


@pytest.mark.parametrize("method", CHANNEL_METHODS)
def test_channel_ticket_of_every_method(method: str, tmp_path: Path, single_thread: None) -> None:
    """Each method's channel ticket has whole zero output channels in every prunable layer but the output layer,
    and its rows say granularity channel with the removed fraction and the compacted copy's latency."""
    spec = RunSpec(**{**TINY, "arch": "convnet", "width": 0.25, "n_train": 200, "n_eval": 40}, method=method,
                   sparsity=0.5, granularity="channel")
    ticket = find_or_load_ticket(spec, tmp_path)
    layers = prunable_layers(ticket.model)
    for _name, layer in layers[:-1]:
        rows = (layer.weight * layer.mask).flatten(1)
        assert int(rows.eq(0).all(1).sum()) >= layer.weight.shape[0] // 2 - 1
        assert bool((rows.eq(0).all(1) | layer.mask.flatten(1).eq(1).all(1)).all())
    assert not bool(zero_rows(layers[-1][1].mask).any())
    assert ticket.meta["removed_channels"] > 0.3
    rows = run_spec(spec, tmp_path, show=False)
    assert set(rows["granularity"]) == {"channel"}
    assert (rows["removed_channels"] > 0.3).all()
    figures = json.loads((ticket.run_dir / "latency.json").read_text())
    assert figures["compaction"] == "channels"
    assert figures["compacted_macs"] < ticket.meta["cost"]["macs_ticket"]


def test_cli_granularity_flag(tmp_path: Path, single_thread: None) -> None:
    """``bench run --granularity channel`` is the spec field (its rows say so)."""
    main(["run", "--method", "random", "--arch", "mlp", "--width", "0.1", "--epochs", "0", "--n-train", "200",
          "--n-eval", "40", "--eval-attacks", "pgd20", "--device", "cpu", "--sparsity", "0.5", "--granularity",
          "channel", "--out", str(tmp_path), "--no-progress"])
    rows = pd.read_csv(tmp_path / "runs.csv")
    assert list(rows["granularity"]) == ["channel"]


def test_r2s_draw_per_reads_the_old_name() -> None:
    """R2S's 'granularity' hyperparameter is now draw_per: stored specs and rows with the old name give the same
    spec and run id; naming both is an error."""
    new = RunSpec(method="r2s", hparams={"draw_per": "example"})
    old = RunSpec.from_dict({"method": "r2s", "hparams": {"granularity": "example"}})
    assert old == new and old.run_id == new.run_id
    # The ids the code before the rename (61e8c2d) gave these specs.
    assert new.run_id == "1af36f15523b" and RunSpec(method="r2s").run_id == "7420cb3dfb43"
    assert RunSpec(method="r2s", hparams={"draw_per": "example", "draws": 3}).run_id == "cee30ef989b9"
    assert RunSpec.from_dict({"method": "r2s", "hparams": {"granularity": "call"}}).run_id == RunSpec(method="r2s").run_id
    with pytest.raises(ValueError, match="same hyperparameter"):
        RunSpec.from_dict({"method": "r2s", "hparams": {"granularity": "call", "draw_per": "example"}})
