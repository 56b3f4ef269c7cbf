"""Masked-layer invariants: exact per-layer sparsity, straight-through scores, frozen weights."""
from __future__ import annotations

from typing import Any, List

import pytest
import torch
import torch.nn.functional as F

from bench.nn import masking
from bench.nn.masking import (
    apply_masks,
    kth_smallest,
    layer_sparsity,
    magnitude_scores,
    measured_sparsity,
    n_zeros_for,
    prunable_layers,
    score_mask_refresher,
    set_trainable,
    topk_mask,
)


@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.9, 0.99])
def test_layerwise_sparsity_is_exact(tiny_model: torch.nn.Module, sparsity: float) -> None:
    apply_masks(tiny_model, lambda _n, layer: torch.rand_like(layer.weight), sparsity, scope="layer")
    for name, layer in prunable_layers(tiny_model):
        zeros = int((layer.mask == 0).sum())
        assert zeros == n_zeros_for(layer.mask.numel(), sparsity), name
        assert abs(zeros / layer.mask.numel() - sparsity) <= 1 / layer.mask.numel()


def test_global_sparsity_is_exact(tiny_model: torch.nn.Module) -> None:
    apply_masks(tiny_model, magnitude_scores, 0.8, scope="global")
    total = sum(layer.mask.numel() for _, layer in prunable_layers(tiny_model))
    assert abs(measured_sparsity(tiny_model) - 0.8) <= 1 / total


def test_topk_keeps_highest_scores() -> None:
    scores = torch.tensor([[0.1, 0.9], [0.5, 0.3]])
    assert topk_mask(scores, 0.5).tolist() == [[0.0, 1.0], [1.0, 0.0]]


@pytest.mark.parametrize("sparsity", [0.0, 0.1, 0.5, 0.9, 0.97])
def test_topk_equals_a_stable_sort_with_ties(sparsity: float) -> None:
    # Few distinct values force many ties at the threshold; -inf (already pruned) always loses.
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        scores = torch.randint(0, 4, (300,), generator=gen).float()
        scores[:7] = float("-inf")
        n_zero = round(sparsity * scores.numel())
        expected = torch.ones(300)
        expected[torch.sort(scores, stable=True).indices[:n_zero]] = 0.0
        assert torch.equal(topk_mask(scores, sparsity), expected)


def test_magnitude_masks_only_shrink(tiny_model: torch.nn.Module) -> None:
    previous = None
    for s in (0.2, 0.5, 0.8, 0.95):
        apply_masks(tiny_model, magnitude_scores, s, scope="global")
        current = [layer.mask.clone() for _, layer in prunable_layers(tiny_model)]
        if previous is not None:
            for p, c in zip(previous, current):
                assert torch.all(c <= p)
        previous = current


def test_unknown_scope_is_value_error(tiny_model: torch.nn.Module) -> None:
    with pytest.raises(ValueError, match="unknown pruning scope"):
        apply_masks(tiny_model, magnitude_scores, 0.5, scope="row")


def test_only_scores_get_gradients_and_forward_equals_masked_weight(tiny_model: torch.nn.Module) -> None:
    for _, layer in prunable_layers(tiny_model):
        torch.nn.init.normal_(layer.scores)
    set_trainable(tiny_model, weights=False, scores=True)
    score_mask_refresher(tiny_model, 0.7)()
    x = torch.rand(16, 1, 8, 8)
    tiny_model.train()
    loss = F.cross_entropy(tiny_model(x), torch.randint(0, 4, (16,)))
    loss.backward()
    for name, p in tiny_model.named_parameters():
        if name.endswith("scores"):
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None, name
    # The straight-through forward value is exactly weight * mask.
    layer = prunable_layers(tiny_model)[0][1]
    assert torch.equal(layer.masked_weight().detach(), layer.weight * layer.mask)
    assert all(abs(v - 0.7) < 0.01 for v in layer_sparsity(tiny_model).values())


def _reference_mask(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Zero the ``round(sparsity * n)`` lowest scores, ties in index order: a stable full sort."""
    flat = scores.flatten()
    expected = torch.ones_like(flat)
    expected[torch.sort(flat, stable=True).indices[: n_zeros_for(flat.numel(), sparsity)]] = 0.0
    return expected.view_as(scores)


@pytest.mark.parametrize("layout", ["random", "ascending", "descending", "few values", "sample positions extreme"])
@pytest.mark.parametrize("sparsity", [0.5, 0.9, 0.99])
def test_large_layers_select_exactly_what_a_sort_would(layout: str, sparsity: float, monkeypatch: pytest.MonkeyPatch) -> None:
    """Above BRACKET_MIN_NUMEL the threshold is bracketed from a sample; the mask is still the stable sort's, and
    the full-size selection runs only where the sample's bracket misses."""
    n = masking.BRACKET_MIN_NUMEL * 3 + 17
    gen = torch.Generator().manual_seed(1)
    scores = torch.rand(n, generator=gen)
    if layout == "ascending":
        scores = scores.sort().values
    elif layout == "descending":
        scores = scores.sort(descending=True).values
    elif layout == "few values":
        scores = torch.randint(0, 5, (n,), generator=gen).float()
    elif layout == "sample positions extreme":
        scores[:: n // masking.BRACKET_SAMPLE] = -1.0
    sizes: List[int] = []
    kthvalue = torch.kthvalue

    def recording_kthvalue(t: torch.Tensor, k: int) -> Any:
        sizes.append(t.numel())
        return kthvalue(t, k)

    monkeypatch.setattr(masking.torch, "kthvalue", recording_kthvalue)
    assert torch.equal(topk_mask(scores.view(1, -1), sparsity), _reference_mask(scores.view(1, -1), sparsity))
    value, n_less, n_equal = kth_smallest(scores, n_zeros_for(n, sparsity))
    expected = kthvalue(scores, n_zeros_for(n, sparsity)).values
    assert (value, n_less, n_equal) == (expected, int((scores < expected).sum()), int((scores == expected).sum()))
    full_size_selections = sizes.count(n)
    assert full_size_selections == (2 if layout == "sample positions extreme" else 0)


def test_bracketed_threshold_with_pruned_weights() -> None:
    """-inf scores (weights already pruned) always among the zeros, on the bracketed path too."""
    gen = torch.Generator().manual_seed(2)
    scores = torch.randn(200_000, generator=gen).abs()
    scores[torch.randperm(200_000, generator=gen)[:150_000]] = float("-inf")
    for sparsity in (0.75, 0.8, 0.95):
        assert torch.equal(topk_mask(scores, sparsity), _reference_mask(scores, sparsity))


def _full_selection_mask(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """The selection before the bracketed threshold: one kthvalue over every score, ties zeroed in index order."""
    flat = scores.flatten()
    n_zero = n_zeros_for(flat.numel(), sparsity)
    threshold = torch.kthvalue(flat, n_zero).values
    mask = (flat > threshold).to(flat.dtype)
    tied = (flat == threshold).nonzero().flatten()
    mask[tied[n_zero - int((flat < threshold).sum()):]] = 1.0
    return mask.view_as(scores)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("special", ["nan", "+inf", "-inf", "signed zeros"])
def test_large_layers_match_the_full_selection_with_special_values(dtype: torch.dtype, special: str) -> None:
    """NaN, infinities and signed zeros: the bracketed path gives the full selection's mask at every sparsity."""
    gen = torch.Generator().manual_seed(3)
    n = 3 * masking.BRACKET_MIN_NUMEL + 5
    scores = torch.randn(n, generator=gen, dtype=dtype)
    where = torch.randperm(n, generator=gen)[: n // 4]
    scores[where] = {"nan": float("nan"), "+inf": float("inf"), "-inf": float("-inf"), "signed zeros": -0.0}[special]
    if special == "signed zeros":
        scores[where[::2]] = 0.0
    for sparsity in (0.1, 0.5, 0.8, 0.9, 0.99):
        assert torch.equal(topk_mask(scores, sparsity), _full_selection_mask(scores, sparsity)), sparsity
