"""What a ticket costs (issue 31 item 3): parameters and multiply-accumulates counted by hand on a tiny network."""
from __future__ import annotations

import torch
import torch.nn as nn

from bench.nn.cost import model_cost
from bench.nn.masking import MaskedConv2d, MaskedLinear


class Tiny(nn.Module):
    """conv 1->2 (3x3, padding 1) on 4x4, 2x2 max-pool, linear 8->3."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = MaskedConv2d(1, 2, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(2)
        self.fc = MaskedLinear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(nn.functional.max_pool2d(self.bn(self.conv(x)), 2).flatten(1))


def test_macs_and_parameters_counted_by_hand() -> None:
    model = Tiny()
    # Half of the conv weights (9 of 18) and 20 of the 24 linear weights are pruned.
    model.conv.mask.view(-1)[:9] = 0
    model.fc.mask.view(-1)[:20] = 0
    cost = model_cost(model, (1, 4, 4))
    # conv: 16 output positions x 18 weights = 288 dense, 16 x 9 = 144 ticket; linear: 1 position x 24 = 24, x 4.
    assert cost["macs_dense"] == 16 * 18 + 24 and cost["macs_ticket"] == 16 * 9 + 4
    # Parameters: conv 18 (9 non-zero), BN 2 + 2, linear 24 (4 non-zero) + bias 3; scores are not parameters.
    assert cost["params"] == 18 + 4 + 24 + 3
    nonzero_bn_and_bias = int((model.bn.weight != 0).sum() + (model.bn.bias != 0).sum() + (model.fc.bias != 0).sum())
    assert cost["params_nonzero"] == 9 + 4 + nonzero_bn_and_bias
    # The model's mode is left as it was.
    assert model.training


def test_a_plain_network_costs_the_same_dense_and_as_a_ticket() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5)).eval()
    cost = model_cost(model, (3, 8, 8))
    assert cost["macs_dense"] == cost["macs_ticket"] == 36 * 4 * 27 + 144 * 5


def test_a_run_records_its_cost_in_meta_and_rows(tmp_path, tiny_spec_kwargs) -> None:  # type: ignore[no-untyped-def]
    """An MLP ticket: every layer is linear (one output position), so its ticket MACs are its non-zero weights,
    counted here from the saved ticket; the rows carry the figures."""
    import json

    import pandas as pd

    from bench.harness import run_spec
    from bench.spec import RunSpec

    spec = RunSpec(**{**tiny_spec_kwargs, "sparsity": 0.8})
    run_spec(spec, tmp_path, show=False)
    run = next((tmp_path / "runs").iterdir())
    cost = json.loads((run / "meta.json").read_text())["cost"]
    state = torch.load(run / "ticket.pt", weights_only=True)
    weights = [k[: -len(".weight")] for k in state if k.endswith(".weight") and state[k].dim() == 2]
    nonzero = sum(int((state[f"{k}.weight"] * state.get(f"{k}.mask", 1) != 0).sum()) for k in weights)
    total = sum(state[f"{k}.weight"].numel() for k in weights)
    assert cost["macs_ticket"] == nonzero and cost["macs_dense"] == total
    rows = pd.read_csv(tmp_path / "runs.csv")
    assert set(rows["macs_ticket"]) == {nonzero} and set(rows["macs_dense"]) == {total}


def test_counting_leaves_the_random_number_generator_as_it_was() -> None:
    """A random switch draws per forward call: counting its cost must not shift the draws evaluation makes."""

    class Coin(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x) * torch.rand(1)

    coin = Coin()
    torch.manual_seed(3)
    expected = torch.rand(5)
    torch.manual_seed(3)
    model_cost(coin, (4,))
    assert torch.equal(torch.rand(5), expected)
