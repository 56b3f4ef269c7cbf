"""Adaptive evaluation of randomised tickets, checked against an exact computation written here.

The toy switch: 4 randomly masked copies (keep 0.9) of one small trained MLP.
The reference is PGD on the exact expectation (mean CE over all 4
candidates, all 20 steps), scored by the exact mean correctness over the 4
candidates. Before the fix, attacks froze a point the first time one draw
misclassified it (eot-pgd 0.62, ensemble-pgd 0.62, autoattack-rand 0.60
against the reference's 0.55 on this toy).
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, List, Tuple

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from bench.attacks import AutoAttackRunner, attack_for_run, make_attack
from bench.core.results import EVAL_VERSION, KEY_COLUMNS
from bench.data import Split, load_data, to_float
from bench.evaluation.evaluate import chunk_attack, evaluate
from bench.evaluation.flags import library_check_flags, row_flags
from bench.nn.masking import apply_masks
from bench.nn.models import ModelConfig, build_model
from tickets.r2s import RandomSwitch

EPS = 0.04
K = 4
CPU = torch.device("cpu")

# Tiny models run fastest on one thread (conftest.py's fixture).
pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def toy() -> Tuple[RandomSwitch, torch.Tensor, torch.Tensor, Split]:
    """The toy switch, 400 test images and labels, and the test split."""
    torch.manual_seed(0)
    data = load_data("fashion-mnist", "embedded")
    model = build_model("mlp", ModelConfig(1, 10, 28, (0.2860,), (0.3530,), width=0.2, bn_affine=True))
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], 2e-3)
    x, y = to_float(data.train.x[:3000], CPU), data.train.y[:3000]
    model.train()
    for _epoch in range(2):
        for i in range(0, len(x), 100):
            loss = F.cross_entropy(model(x[i : i + 100]), y[i : i + 100])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    candidates = []
    for k in range(K):
        g = torch.Generator().manual_seed(k)
        c = copy.deepcopy(model)
        apply_masks(c, lambda _n, layer, g=g: torch.rand(layer.weight.shape, generator=g), 0.1)
        candidates.append(c.eval())
    switch = RandomSwitch(copy.deepcopy(candidates[0]), [0.0] * K, "call", 0)
    for k, c in enumerate(candidates):
        switch.set_candidate(k, c)
    switch.eval()
    for p in switch.parameters():
        p.requires_grad_(False)
    return switch, to_float(data.test.x[:400], CPU), data.test.y[:400], data.test


@torch.no_grad()
def exact_accuracy(switch: RandomSwitch, x: torch.Tensor, y: torch.Tensor) -> float:
    """Accuracy as the exact mean over the K candidates (the expectation over the switch's draws)."""
    return float(torch.stack([(switch.candidate(k)(x).argmax(1) == y).float() for k in range(K)]).mean())


def exact_expectation_pgd(switch: RandomSwitch, x: torch.Tensor, y: torch.Tensor, steps: int = 20) -> torch.Tensor:
    """PGD on the exact expected loss: the mean CE over all candidates; all steps, last iterate."""
    g = torch.Generator().manual_seed(123)
    xa = (x + (torch.rand(x.shape, generator=g) * 2 - 1) * EPS).clamp(0, 1)
    for _ in range(steps):
        xa.requires_grad_(True)
        loss = sum(F.cross_entropy(switch.candidate(k)(xa), y, reduction="sum") for k in range(K)) / K
        grad = torch.autograd.grad(loss, xa)[0]
        xa = torch.min(torch.max(xa.detach() + EPS / 4 * grad.sign(), x - EPS), x + EPS).clamp(0, 1)
    return xa.detach()


@pytest.fixture(scope="module")
def reference(toy: Tuple[RandomSwitch, torch.Tensor, torch.Tensor, Split]) -> float:
    """The exact-expectation PGD's accuracy on the toy."""
    switch, x, y, _ = toy
    return exact_accuracy(switch, exact_expectation_pgd(switch, x, y), y)


@pytest.mark.parametrize("name", ["eot-pgd", "ensemble-pgd", "autoattack-rand", "pgd20"])
def test_adaptive_attacks_reach_the_exact_expectation_attack(name: str, toy: Any, reference: float) -> None:
    """Each attack's points are at most 0.02 above the exact-expectation PGD's accuracy (no single-draw early stop)."""
    switch, x, y, _ = toy
    clean = exact_accuracy(switch, x, y)
    assert reference < clean - 0.1  # the reference attack is a real one
    switch.reseed(7)
    x_adv = make_attack(name, EPS)(switch, x, y)
    assert (x_adv - x).abs().max() <= EPS + 1e-6
    assert exact_accuracy(switch, x_adv, y) <= reference + 0.02


def test_eot_on_one_candidate_is_not_adaptive() -> None:
    """EOT against one deterministic candidate does not account for the switch: not adaptive."""
    assert make_attack("r2s-nonadaptive:eot_samples=2", EPS).adaptive is False
    assert make_attack("eot-pgd", EPS).adaptive and make_attack("ensemble-pgd", EPS).adaptive
    assert make_attack("autoattack-rand", EPS).adaptive and not make_attack("pgd20", EPS).adaptive


def test_seed_in_the_name_is_honoured_and_attacks_and_chunks_get_their_own() -> None:
    """``pgd20:seed=5`` keeps seed 5 in a run; attacks of one run and chunks of one attack get distinct seeds."""
    assert attack_for_run("pgd20:seed=5", EPS, run_seed=0).seed == 5
    assert attack_for_run("pgd20:seed=5", EPS, run_seed=3).seed == 5
    seeds = {attack_for_run(name, EPS, run_seed=0).seed for name in ("pgd20", "cw20", "pgd50", "fgsm")}
    assert len(seeds) == 4
    assert attack_for_run("pgd20", EPS, run_seed=0).seed != attack_for_run("pgd20", EPS, run_seed=1).seed
    attack = attack_for_run("pgd20", EPS, run_seed=0)
    assert chunk_attack(attack, torch.tensor([0])).seed != chunk_attack(attack, torch.tensor([500])).seed


def test_named_seed_changes_the_random_start(toy: Any) -> None:
    """Two seeds in the name give two random starts (FGSM-like one step after the start)."""
    switch, x, y, _ = toy
    view = switch.candidate(0)
    a = make_attack("pgd:steps=1:seed=1:early_stop=False", EPS)(view, x[:50], y[:50])
    b = make_attack("pgd:steps=1:seed=2:early_stop=False", EPS)(view, x[:50], y[:50])
    assert not torch.equal(a, b)


class Counting(nn.Module):
    """A deterministic model that counts its forward calls."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        out: torch.Tensor = self.inner(x)
        return out


def test_a_stale_cache_is_not_reused(toy: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Results stored under another evaluation version are not read back: the attack runs again."""
    switch, _, _, test = toy
    model = Counting(switch.candidate(0)).eval()
    evaluate(model, test, ["pgd20"], EPS, 60, 60, CPU, tmp_path)
    model.calls = 0
    evaluate(model, test, ["pgd20"], EPS, 60, 60, CPU, tmp_path)
    reused = model.calls
    monkeypatch.setattr("bench.evaluation.evaluate.EVAL_VERSION", 99)
    model.calls = 0
    evaluate(model, test, ["pgd20"], EPS, 60, 60, CPU, tmp_path)
    assert model.calls > reused + 20  # PGD-20 ran again instead of reading the old store


def test_rows_carry_the_evaluation_version(toy: Any) -> None:
    """Every result row says which evaluation protocol produced it (part of the row key)."""
    switch, _, _, test = toy
    row = evaluate(switch.candidate(0), test, ["pgd20"], EPS, 30, 30, CPU)[0]
    assert row.eval_version == EVAL_VERSION >= 2
    assert "eval_version" in KEY_COLUMNS


class FarIsSafe(nn.Module):
    """Planted: correct on the clean images and beyond 1.05 eps from them, wrong in between (flat: no gradient)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, classes: int = 10) -> None:
        super().__init__()
        self.register_buffer("x_ref", x.flatten(1).clone())
        self.register_buffer("y_ref", y.clone())
        self.classes = classes
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(1)
        dist = (flat[:, None, :] - self.x_ref[None]).abs().amax(2)
        d, i = dist.min(1)
        y = self.y_ref[i]
        wrong = (d > 1e-6) & (d <= 1.05 * EPS)
        label = torch.where(wrong, (y + 1) % self.classes, y)
        return F.one_hot(label, self.classes).float() * 5 * self.scale + 0 * flat.sum(1, keepdim=True)


def test_eps_not_monotone_fires_on_a_planted_model(toy: Any) -> None:
    """Robust accuracy rising with eps (planted) is flagged; the flag is on every row."""
    _, _, _, test = toy
    x, y = to_float(test.x[:60], CPU), test.y[:60]
    model = FarIsSafe(x, y).eval()
    rows = evaluate(model, test.head(60), ["pgd20"], EPS, 60, 60, CPU)
    assert "eps_not_monotone" in rows[0].flags


def test_aa_above_pgd_fires_in_the_default_cascade(toy: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A broken AutoAttack (returns the clean images) is caught in the cascade by the APGD-CE probe."""
    switch, _, _, test = toy
    model = switch.candidate(0)
    healthy = {r.attack: r for r in evaluate(model, test, ["pgd20", "cw20", "apgd-ce"], EPS, 120, 120, CPU)}
    assert "aa_above_pgd" not in healthy["apgd-ce"].flags
    monkeypatch.setattr(AutoAttackRunner, "perturb_detailed", lambda self, m, x, y: (x.clone(), None))
    broken = {r.attack: r for r in evaluate(model, test, ["pgd20", "cw20", "apgd-ce"], EPS, 120, 120, CPU)}
    assert broken["apgd-ce"].scope.startswith("after:")
    assert "aa_above_pgd" in broken["apgd-ce"].flags


def test_library_checks_become_flags() -> None:
    """pyautoattack's checks (probabilities, randomness) are flags, not log lines."""
    torch.manual_seed(0)
    inner = nn.Sequential(nn.Flatten(), nn.Linear(16, 4))
    x, y = torch.rand(32, 1, 4, 4), torch.randint(0, 4, (32,))
    assert "probabilities" in library_check_flags(nn.Sequential(inner, nn.Softmax(1)), x, y, any_adaptive=False)
    noisy = NoisyModel(inner)
    assert "nondeterministic" in library_check_flags(noisy, x, y, any_adaptive=False)
    assert "nondeterministic" not in library_check_flags(noisy, x, y, any_adaptive=True)
    assert library_check_flags(inner, x, y, any_adaptive=False) == set()


class NoisyModel(nn.Module):
    """Random logits noise on every call."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.inner(x)
        return out + torch.randn_like(out)


def test_switch_rows_get_row_flags() -> None:
    """Row checks run on randomised tickets too, on the expected robustness over draws."""
    pgd, aa = make_attack("pgd20", EPS), make_attack("autoattack-rand", EPS)
    order = [("pgd20", pgd, 4), ("autoattack-rand", aa, 4)]
    tried = torch.ones(4, dtype=torch.bool)
    stores = {"pgd20": {"tried": tried, "robust": torch.tensor([1.0, 0.2, 0.0, 0.0]), "broken_by": -torch.ones(4)},
              "autoattack-rand": {"tried": tried, "robust": torch.tensor([1.0, 0.6, 0.4, 0.0]), "broken_by": -torch.ones(4)}}
    assert row_flags(order, stores, tried)["autoattack-rand"] == {"aa_above_pgd"}


def test_apgd_probe_allows_one_example_of_disagreement(monkeypatch: pytest.MonkeyPatch) -> None:
    """APGD-CE alone leaving one probe example more robust than PGD-20 is two attacks' variance, not a broken AA;
    two more is flagged."""
    import bench.evaluation.evaluate as ev

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3)).eval()
    test = Split(torch.rand(10, 1, 4, 4), torch.randint(0, 3, (10,)))
    order = ev.plan(["pgd20", "apgd-ce"], 0.05, 0, test, 10, 10)
    correct = torch.ones(10, dtype=torch.bool)
    pgd = ev.attack_store(None, "pgd20", order[0][1])
    pgd.grow(10)
    pgd["tried"][:] = True
    pgd["robust"][:] = torch.tensor([True] * 4 + [False] * 6)

    def fake_probe(extra: int) -> List[str]:
        def run(_m: Any, _t: Any, _a: Any, store: Any, need: torch.Tensor, *_args: Any, **_kw: Any) -> None:
            store.grow(len(need))
            store["tried"][:] = True
            store["robust"][:] = torch.arange(10) < 4 + extra
        monkeypatch.setattr(ev, "run_attack", run)
        return ev.apgd_probe_flags(model, test, order, {"pgd20": pgd}, correct, 0.05, 0, None, CPU, 500)

    assert fake_probe(1) == []
    assert fake_probe(2) == ["apgd-ce"]


EPS_L2 = 0.5


def exact_expectation_pgd_l2(switch: RandomSwitch, x: torch.Tensor, y: torch.Tensor, steps: int = 20) -> torch.Tensor:
    """L2 PGD on the exact expected loss, written here: steps of eps/4 along the normalised gradient, each followed
    by the projection onto the L2 ball (radial scaling) and the [0, 1] box; all steps, last iterate."""
    xa = x.clone()
    for _ in range(steps):
        xa.requires_grad_(True)
        loss = sum(F.cross_entropy(switch.candidate(k)(xa), y, reduction="sum") for k in range(K)) / K
        grad = torch.autograd.grad(loss, xa)[0].flatten(1)
        step = (grad / grad.norm(dim=1, keepdim=True).clamp_min(1e-12)).view_as(x)
        delta = (xa.detach() + EPS_L2 / 4 * step - x).flatten(1)
        delta = delta * (EPS_L2 / delta.norm(dim=1, keepdim=True).clamp_min(1e-12)).clamp(max=1.0)
        xa = (x + delta.view_as(x)).clamp(0, 1)
    return xa.detach()


@pytest.mark.parametrize("name", ["eot-pgd", "ensemble-pgd", "autoattack-rand"])
def test_adaptive_attacks_in_l2_reach_the_exact_expectation_attack(name: str, toy: Any) -> None:
    """In L2 too, each adaptive attack is at most 0.02 above the exact-expectation L2 PGD's accuracy, within budget."""
    switch, x, y, _ = toy
    reference = exact_accuracy(switch, exact_expectation_pgd_l2(switch, x, y), y)
    assert reference < exact_accuracy(switch, x, y) - 0.1  # the reference attack is a real one
    switch.reseed(7)
    x_adv = make_attack(name, EPS_L2, norm="L2")(switch, x, y)
    assert float((x_adv - x).flatten(1).norm(dim=1).max()) <= EPS_L2 * (1 + 1e-5)
    assert exact_accuracy(switch, x_adv, y) <= reference + 0.02
