"""Random RST Switch: the switch varies, K=1 is the RST, EOT averages draws, the transfer diagonal is white-box."""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pandas as pd
import pytest
import torch
import torch.nn as nn
from conftest import TINY as BASE_TINY

from bench.attacks import PGD, ce_loss, make_attack
from bench.data import DataBundle, to_float
from bench.evaluation.evaluate import evaluate
from bench.evaluation.randomized import transfer_matrix
from bench.harness import evaluate_run, find_or_load_ticket, load_ticket, run_spec
from bench.nn.masking import apply_masks, prunable_layers
from bench.reporting.export import model_info
from bench.spec import RunSpec
from tickets.r2s import RandomSwitch, candidate_sparsities

# The shared budget with the spec's default attacks (a switch is evaluated with non-adaptive and adaptive ones).
TINY: Dict[str, Any] = {k: v for k, v in BASE_TINY.items() if k != "eval_attacks"}
SPARSITIES = (0.9, 0.7, 0.5)


def candidates(model: nn.Module, sparsities: Tuple[float, ...] = SPARSITIES) -> List[nn.Module]:
    """Copies of ``model`` with random masks and BatchNorm statistics (shared parameters)."""
    out = []
    for i, s in enumerate(sparsities):
        g = torch.Generator().manual_seed(i)
        c = copy.deepcopy(model)
        apply_masks(c, lambda _n, layer, g=g: torch.rand(layer.weight.shape, generator=g), s)
        for m in c.modules():
            if isinstance(m, nn.BatchNorm1d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
        out.append(c.eval())
    return out


def switch_of(models: List[nn.Module], draw_per: str = "call", seed: int = 0) -> RandomSwitch:
    """A switch whose base is the first model and whose candidates are ``models``."""
    switch = RandomSwitch(copy.deepcopy(models[0]), [0.0] * len(models), draw_per, seed)
    for k, m in enumerate(models):
        switch.set_candidate(k, m)
    return switch.eval()


def inputs(bundle: DataBundle, n: int = 64) -> torch.Tensor:
    """The first ``n`` test images as floats."""
    return to_float(bundle.test.x[:n], torch.device("cpu"))


@pytest.mark.parametrize("draw_per", ["call", "example"])
def test_switch_varies(tiny_model: nn.Module, tiny_bundle: DataBundle, draw_per: str) -> None:
    """Repeated forward passes of the switch differ on some input; each output is one candidate's."""
    models = candidates(tiny_model.eval())
    switch = switch_of(models, draw_per)
    x = inputs(tiny_bundle)
    with torch.no_grad():
        outs = [switch(x) for _ in range(8)]
        per_candidate = [m(x) for m in models]
    assert any(not torch.equal(outs[0], o) for o in outs[1:])
    # Every row of every output comes from one of the candidates.
    for o in outs:
        for i in range(len(x)):
            assert any(torch.allclose(o[i], c[i], atol=1e-6) for c in per_candidate)
    # The same seed gives the same draws.
    switch.reseed(3)
    a = switch(x)
    switch.reseed(3)
    assert torch.equal(a, switch(x))


def test_one_candidate_equals_the_rst_exactly(tiny_model: nn.Module, tiny_bundle: DataBundle) -> None:
    """With K=1 the switch is the single model, bit for bit, and its gradient too."""
    model = candidates(tiny_model.eval(), (0.7,))[0]
    switch = switch_of([model])
    x = inputs(tiny_bundle).requires_grad_(True)
    assert torch.equal(switch(x), model(x))
    y = tiny_bundle.test.y[: len(x)]
    g1 = torch.autograd.grad(ce_loss(switch(x), y).sum(), x)[0]
    g2 = torch.autograd.grad(ce_loss(model(x), y).sum(), x)[0]
    assert torch.equal(g1, g2)


def test_eot_gradient_averages_n_draws(tiny_model: nn.Module, tiny_bundle: DataBundle) -> None:
    """EOT-PGD's gradient with n samples is n times the mean of the gradients of the n drawn candidates."""
    models = candidates(tiny_model.eval())
    switch = switch_of(models)
    x, y = inputs(tiny_bundle, 32), tiny_bundle.test.y[:32]
    n = 6
    attack = PGD(0.1, eot_samples=n)
    switch.reseed(11)
    grad, _pred = attack._forward(switch, x, y, ce_loss)
    # Replay the same draws candidate by candidate.
    switch.reseed(11)
    drawn = [int(switch.draw(len(x))[0]) for _ in range(n)]
    assert len(set(drawn)) > 1
    manual = torch.zeros_like(x)
    for k in drawn:
        xg = x.clone().requires_grad_(True)
        manual += torch.autograd.grad(ce_loss(models[k](xg), y).sum(), xg)[0]
    assert torch.allclose(grad / n, manual / n, atol=1e-6)


def test_transfer_diagonal_is_whitebox_accuracy(tiny_model: nn.Module, tiny_bundle: DataBundle) -> None:
    """Diagonal of the transfer matrix = the harness's PGD-20 robust accuracy of each candidate, same examples."""
    models = candidates(tiny_model.eval())
    switch = switch_of(models)
    n, eps, device = 80, 0.1, torch.device("cpu")
    matrix = transfer_matrix(switch, tiny_bundle.test, n, eps, seed=0, device=device, batch_size=30)
    assert matrix.shape == (3, 3)
    for k in range(3):
        result = evaluate(switch.candidate(k), tiny_bundle.test, ["pgd20"], eps, n, n, device, seed=0, batch_size=30)[0]
        assert matrix[k, k].item() == pytest.approx(result.robust_acc, abs=1e-9)


def test_nonadaptive_attack_targets_one_candidate(tiny_model: nn.Module, tiny_bundle: DataBundle) -> None:
    """r2s-nonadaptive with a fixed candidate is PGD-20 on that candidate; ensemble-pgd on one model is PGD."""
    models = candidates(tiny_model.eval())
    switch = switch_of(models)
    x, y = inputs(tiny_bundle, 32), tiny_bundle.test.y[:32]
    on_switch = make_attack("r2s-nonadaptive:candidate=1", 0.1)(switch, x, y)
    direct = make_attack("pgd20", 0.1)(models[1], x, y)
    assert torch.equal(on_switch, direct)
    assert torch.equal(make_attack("ensemble-pgd", 0.1)(models[0], x, y), make_attack("pgd20", 0.1)(models[0], x, y))
    with pytest.raises(ValueError, match="out of range"):
        make_attack("r2s-nonadaptive:candidate=5", 0.1)(switch, x, y)


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One output folder: an rst run first, so R2S reuses it."""
    path = tmp_path_factory.mktemp("r2s")
    run_spec(RunSpec(**TINY, method="rst", sparsity=0.7, eval_attacks=("pgd20",)), path, show=False)
    return path


def test_k1_ticket_loads_and_equals_the_rst_run(out: Path, tiny_bundle: DataBundle) -> None:
    """An R2S run with one candidate reuses the rst run; the saved switch gives the RST's logits exactly."""
    spec = RunSpec(**TINY, method="r2s", sparsity=0.7, hparams={"candidates": (0.7,)})
    ticket = find_or_load_ticket(spec, out)
    data, run_dir, meta = ticket.data, ticket.run_dir, ticket.meta
    assert meta["candidate_sources"][0].startswith("run:")
    rst_dir = out / "runs" / meta["candidate_sources"][0].split(":")[1]
    switch, rst = load_ticket(run_dir), load_ticket(rst_dir)
    x = to_float(data.test.x[:50], torch.device("cpu"))
    with torch.no_grad():
        assert torch.equal(switch(x), rst(x))


def test_run_reuses_candidates_and_records_draws(out: Path) -> None:
    """Missing candidates become shared stages; a second run reuses them; rows carry draws, std and adaptivity."""
    hp = {"candidates": (0.9, 0.7), "draws": 3}
    attacks = ("r2s-nonadaptive", "eot-pgd:eot_samples=4", "ensemble-pgd")
    df = run_spec(RunSpec(**TINY, method="r2s", sparsity=0.7, eval_attacks=attacks, hparams=hp), out, show=False)
    stages = sorted(p.name for p in (out / "stages").iterdir())
    meta_dir = out / "runs" / df["run_id"].iloc[0]
    meta = json.loads((meta_dir / "meta.json").read_text())
    assert meta["candidates"] == [0.9, 0.7] and meta["candidate_sources"][1].startswith("run:")
    assert meta["mean_sparsity"] == pytest.approx(0.8, abs=0.01) and meta["measured_sparsity"] == pytest.approx(0.7, abs=0.01)
    rows = df.set_index("attack")
    assert list(rows.index) == [*attacks, "worst_case"]
    assert (rows["draws"] == 3).all() and (rows["randomized"]).all() and not rows["non_adaptive"].any()
    assert list(rows["adaptive"]) == [False, True, True, True]
    assert (rows.loc["worst_case", "robust_acc"] <= rows["robust_acc"].drop("worst_case") + 1e-9).all()
    assert (rows["robust_acc"] <= rows["clean_acc"] + 1e-9).all()
    frame = pd.read_csv(meta_dir / "transfer.csv", index_col=0)
    assert frame.shape == (2, 2) and "| pgd20 source" in (meta_dir / "transfer.md").read_text()
    # The full-step protocol beside RST's early-stopped one.
    full = pd.read_csv(meta_dir / "transfer-full-steps.csv", index_col=0)
    assert full.shape == (2, 2) and "| pgd20:early_stop=False source" in (meta_dir / "transfer-full-steps.md").read_text()
    # Another draw_per is another run, but it trains nothing new.
    run_spec(RunSpec(**TINY, method="r2s", sparsity=0.7, eval_attacks=("r2s-nonadaptive",),
                     hparams={**hp, "draw_per": "example"}), out, show=False)
    assert sorted(p.name for p in (out / "stages").iterdir()) == stages


def test_non_adaptive_marking_in_rows_and_export(out: Path) -> None:
    """Only non-adaptive attacks: every row flagged; export says non_adaptive until an adaptive row exists."""
    spec = RunSpec(**TINY, method="r2s", sparsity=0.7, eval_attacks=("r2s-nonadaptive", "pgd20"),
                   hparams={"candidates": (0.9, 0.7), "draws": 2})
    df = run_spec(spec, out, show=False)
    assert df["non_adaptive"].all() and all("non_adaptive" in f.split(";") for f in df["flags"])
    rows = df.astype(str)
    info = model_info(rows)
    assert info["non_adaptive"] and info["unreliable"] and info["randomized"]
    # The same ticket evaluated adaptively later: the entry is no longer non-adaptive.
    adaptive = run_spec(RunSpec(**{**spec.to_dict(), "eval_attacks": ("ensemble-pgd",)}), out, show=False)
    both = pd.concat([rows, adaptive.astype(str)], ignore_index=True)
    info = model_info(both)
    assert not info["non_adaptive"] and "non_adaptive" not in info["flags"].split(";")
    # With several worst-case rows the entry uses the lowest.
    lowest = min(float(v) for v in both.loc[both["attack"] == "worst_case", "robust_acc"])
    assert info["external"] == f"{100 * lowest:.2f}"


def test_hparams_are_checked_and_normalised() -> None:
    """Bad candidate lists are ValueErrors; string and float candidates give the same run id."""
    for hp in ({"candidates": (0.9, 1.0)}, {"candidates": (0.9, 0.9)}, {"candidates": ("x",)},
               {"draw_per": "batch"}, {"draws": 0}, {"candidates": ()}):
        with pytest.raises(ValueError):
            RunSpec(**TINY, method="r2s", hparams=hp)
    a = RunSpec(**TINY, method="r2s", hparams={"candidates": "0.95,0.9"})
    b = RunSpec(**TINY, method="r2s", hparams={"candidates": (0.95, 0.9)})
    assert a.run_id == b.run_id
    assert candidate_sparsities(RunSpec(**TINY, method="r2s", sparsity=0.7, hparams={"candidates": (0.9,)})) == (0.9, 0.7)
    assert len(candidate_sparsities(RunSpec(**TINY, method="r2s", sparsity=0.9))) == 8


def test_candidates_must_share_weights(tiny_model: nn.Module) -> None:
    """Candidates with different parameters are rejected."""
    from tickets.r2s import check_shared

    a, b = candidates(tiny_model.eval(), (0.9, 0.7))
    with torch.no_grad():
        prunable_layers(b)[0][1].weight.add_(1.0)
    with pytest.raises(ValueError, match="share one frozen random network"):
        check_shared([a, b], (0.9, 0.7))


def test_switch_evaluated_in_l2(out: Path) -> None:
    """A switch is evaluated in another threat model: rows keyed by L2 at the given budget (worst case included),
    the perturbations within it, and the L-inf transfer matrix left as it was."""
    spec = RunSpec(**TINY, method="r2s", sparsity=0.7, eval_attacks=("ensemble-pgd",),
                   hparams={"candidates": (0.9, 0.7), "draws": 2})
    run_spec(spec, out, show=False)
    ticket = find_or_load_ticket(spec, out)
    transfer = ticket.run_dir / "transfer.csv"
    stamp = transfer.stat().st_mtime_ns
    results = evaluate_run(ticket, ["ensemble-pgd", "eot-pgd:eot_samples=2"], norm="L2", eps=0.5)
    assert [r.attack for r in results] == ["ensemble-pgd", "eot-pgd:eot_samples=2", "worst_case"]
    assert all(r.settings["norm"] == "L2" and r.settings["eps"] == 0.5 for r in results)
    linf = run_spec(spec, out, show=False).set_index("attack")
    assert (linf["robust_acc"] >= 0).all() and transfer.stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="L1"):
        evaluate_run(ticket, ["ensemble-pgd"], norm="L1", eps=10.0)
