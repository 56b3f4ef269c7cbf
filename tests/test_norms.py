"""Threat models (issue 31 item 1): L2 and L1 projections, L2 PGD against an exact computation on a linear model
and against an independent L2 PGD, AutoAttack in L1, and rows that keep threat models apart."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn as nn
from conftest import TINY, train_mlp

from bench.attacks import make_attack
from bench.attacks.base import check_budget
from bench.attacks.norms import ascent, perturbation_norm, project, random_start
from bench.cli import main
from bench.data import load_data, to_float


@pytest.mark.parametrize("norm, eps", [("Linf", 0.1), ("L2", 1.5), ("L1", 10.0)])
def test_projection_lands_in_the_ball_and_the_box_and_keeps_inside_points(norm: str, eps: float) -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(16, 1, 8, 8, generator=gen)
    far = x + 3 * torch.randn(16, 1, 8, 8, generator=gen)
    p = project(far, x, eps, norm)
    assert bool((perturbation_norm(p - x, norm) <= eps * (1 + 1e-5)).all()) and p.min() >= 0 and p.max() <= 1
    # A point already inside the ball and the box is left where it is.
    inside = random_start(x, eps, norm, gen)
    assert bool((perturbation_norm(inside - x, norm) <= eps * (1 + 1e-5)).all())
    assert torch.allclose(project(inside, x, eps, norm), inside, atol=1e-6)


def test_the_l1_projection_is_the_euclidean_projection() -> None:
    """Against an independent computation: the threshold theta with sum(max(|v| - theta, 0)) = eps, by bisection."""
    gen = torch.Generator().manual_seed(1)
    x = torch.full((6, 50), 0.5)
    v = 0.2 * torch.randn(6, 50, generator=gen)
    eps = 1.0
    ours = project(x + v, x, eps, "L1") - x
    for i in range(6):
        lo, hi = 0.0, float(v[i].abs().max())
        for _ in range(200):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if float((v[i].abs() - mid).clamp(min=0).sum()) > eps else (lo, mid)
        exact = v[i].sign() * (v[i].abs() - hi).clamp(min=0)
        assert torch.allclose(ours[i], exact, atol=1e-5)


def test_ascent_steps_have_the_norms_length() -> None:
    g = torch.randn(4, 3, 5, 5)
    assert torch.allclose(perturbation_norm(ascent(g, 0.3, "L2"), "L2"), torch.full((4,), 0.3))
    assert torch.allclose(perturbation_norm(ascent(g, 0.3, "L1"), "L1"), torch.full((4,), 0.3))
    assert torch.equal(ascent(g, 0.3, "Linf"), 0.3 * g.sign())


def test_l2_pgd_matches_the_exact_robustness_of_a_linear_model() -> None:
    """For logits W x + b the smallest L2 perturbation that makes class j win is (z_y - z_j) / ||w_y - w_j||; an
    example is robust at eps exactly when every such distance exceeds eps (the box does not bind: pixels in
    [0.3, 0.7], eps under 0.3). L2 PGD (CW loss, 20 steps) agrees on every example not within 10 % of the boundary."""
    torch.manual_seed(0)
    d, k, n = 64, 5, 400
    model = nn.Sequential(nn.Flatten(), nn.Linear(d, k)).eval()
    x = 0.3 + 0.4 * torch.rand(n, 1, 8, 8)
    with torch.no_grad():
        z = model(x)
    y = z.argmax(1)
    w = model[1].weight.detach()
    gaps = (z.gather(1, y[:, None]) - z) / (w[y][:, None, :] - w[None]).norm(dim=2).clamp(min=1e-12)
    gaps[torch.arange(n), y] = float("inf")
    distance = gaps.min(1).values
    # The budget: the median distance, so about half the examples are robust.
    eps = float(distance.median())
    clear = (distance - eps).abs() > 0.1 * eps
    assert eps < 0.3 and clear.sum() > 200 and (distance[clear] <= eps).sum() > 50 and (distance[clear] > eps).sum() > 50
    attack = make_attack("cw20", eps, norm="L2")
    x_adv = attack(model, x, y)
    assert bool((perturbation_norm(x_adv - x, "L2") <= eps * (1 + 1e-5)).all())
    with torch.no_grad():
        robust = model(x_adv).argmax(1) == y
    assert torch.equal(robust[clear], (distance > eps)[clear])


def test_l2_pgd20_is_no_weaker_than_an_independent_l2_pgd() -> None:
    """torchattacks' PGDL2 (20 steps of eps/4, random start) on the same images of a trained MLP."""
    torchattacks = pytest.importorskip("torchattacks")
    model, test = train_mlp(64, 3000, 2, 100, 3e-3, lambda m, x, y: nn.functional.cross_entropy(m(x), y))
    x, y = to_float(test.x[:300], torch.device("cpu")), test.y[:300]
    eps = 1.0
    torch.manual_seed(0)
    theirs_adv = torchattacks.PGDL2(model, eps=eps, alpha=eps / 4, steps=20)(x, y)
    ours_adv = make_attack("pgd20", eps, norm="L2")(model, x, y)
    with torch.no_grad():
        theirs = float((model(theirs_adv).argmax(1) == y).float().mean())
        ours = float((model(ours_adv).argmax(1) == y).float().mean())
    assert ours <= theirs + 0.02, (ours, theirs)


def test_an_attack_refuses_a_norm_it_does_not_implement_and_the_budget_check_knows_norms() -> None:
    with pytest.raises(ValueError, match="PGD attacks in Linf, L2 only, not L1"):
        make_attack("pgd20", 10.0, norm="L1")
    with pytest.raises(ValueError, match="unknown norm 'L3'"):
        make_attack("pgd20", 1.0, norm="L3")
    with pytest.raises(ValueError, match="norm comes from the run spec"):
        make_attack("pgd:norm=L2", 1.0)
    x = torch.full((2, 4), 0.5)
    check_budget(x, x + 0.1, 0.2, "L2")
    with pytest.raises(RuntimeError, match="outside the L2 eps-ball"):
        check_budget(x, x + 0.2, 0.2, "L2")


def test_bench_eval_in_l2_and_l1_writes_rows_of_that_norm_kept_apart(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    flags = [f"--{k.replace('_', '-')}={','.join(v) if isinstance(v, tuple) else v}" for k, v in TINY.items()]
    assert main(["run", "--out", str(out), *flags, "--no-progress"]) == 0
    run = next((out / "runs").iterdir())
    assert main(["eval", str(run), "--norm", "L2", "--eps", "1.5", "--attacks", "pgd20,cw20", "--no-progress"]) == 0
    assert main(["eval", str(run), "--norm", "L1", "--eps", "10", "--attacks", "autoattack", "--n-eval-aa", "10",
                 "--no-progress"]) == 0
    rows = pd.read_csv(out / "runs.csv")
    by_norm = {norm: sorted(g["attack"]) for norm, g in rows.groupby("norm")}
    assert by_norm["L2"] == ["cw20", "pgd20", "worst_case"] and "autoattack" in by_norm["L1"]
    assert set(rows[rows["norm"] == "L2"]["eps"]) == {1.5} and set(rows[rows["norm"] == "L1"]["eps"]) == {10.0}
    # A table never mixes threat models; filtered to one, it says which.
    capsys.readouterr()
    assert main(["table", str(out / "runs.csv"), "--attack", "pgd20"]) == 2
    assert "table cells would mix runs that differ in eps, norm" in capsys.readouterr().err
    assert main(["table", str(out / "runs.csv"), "--attack", "pgd20", "--where", "norm=L2"]) == 0
    assert "L2 eps 1.5" in capsys.readouterr().out
    # No standard L2 budget for Fashion-MNIST: --eps is asked for, nothing runs.
    assert main(["eval", str(run), "--norm", "L2"]) == 2
    assert "no standard L2 budget for fashion-mnist: give --eps" in capsys.readouterr().err


def test_l2_rows_of_the_embedded_data_are_sane() -> None:
    """A trained MLP: L2 PGD at a larger eps breaks more (robust accuracy falls as eps grows)."""
    model, test = train_mlp(64, 3000, 2, 100, 3e-3, lambda m, x, y: nn.functional.cross_entropy(m(x), y))
    x, y = to_float(test.x[:200], torch.device("cpu")), test.y[:200]
    accs = []
    for eps in (0.5, 1.0, 2.0):
        adv = make_attack("pgd20", eps, norm="L2")(model, x, y)
        with torch.no_grad():
            accs.append(float((model(adv).argmax(1) == y).float().mean()))
    assert accs[0] >= accs[1] >= accs[2] and accs[0] > accs[2]
    assert load_data("fashion-mnist", "embedded").info.name == "fashion-mnist"


def test_a_budget_beyond_the_box_is_refused_before_anything_runs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """An L2 budget above the box's diameter (sqrt of the pixel count) would overflow the steps; it is one line."""
    out = tmp_path / "out"
    flags = [f"--{k.replace('_', '-')}={','.join(v) if isinstance(v, tuple) else v}" for k, v in TINY.items()]
    assert main(["run", "--out", str(out), *flags, "--no-progress"]) == 0
    run = next((out / "runs").iterdir())
    before = (out / "runs.csv").read_text()
    capsys.readouterr()
    assert main(["eval", str(run), "--norm", "L2", "--eps", "1e300", "--attacks", "fgsm"]) == 2
    assert capsys.readouterr().err.strip() == ("bench: error: --eps must be in (0, 28] for L2 on images of 784 pixel "
                                               "values (the box's diameter), got 1e+300")
    assert (out / "runs.csv").read_text() == before


def test_a_run_trains_and_evaluates_in_its_norm(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """--norm L2 on bench run: the training PGD and every evaluation attack are L2; the run id differs from the
    L-inf run's (an L-inf spec's id is what it always was: the default is left out)."""
    from bench.spec import RunSpec
    from bench.train import TrainConfig, training_attack

    spec = RunSpec(**{**TINY, "norm": "L2", "eps": 1.0})
    cfg = TrainConfig.from_spec(spec, augment=False)
    assert cfg.norm == "L2" and training_attack(cfg, 0).norm == "L2" and cfg.eps == 1.0
    assert spec.run_id != RunSpec(**{**TINY, "eps": 1.0}).run_id
    assert "norm" not in RunSpec(**TINY).canonical()
    out = tmp_path / "out"
    flags = [f"--{k.replace('_', '-')}={','.join(v) if isinstance(v, tuple) else v}" for k, v in TINY.items()]
    assert main(["run", "--out", str(out), *flags, "--norm", "L2", "--eps", "1.0", "--no-progress"]) == 0
    rows = pd.read_csv(out / "runs.csv")
    assert set(rows["norm"]) == {"L2"} and set(rows["eps"]) == {1.0}
    # Fashion-MNIST has no standard L2 budget; L1 training has no PGD step: one line each, nothing run.
    capsys.readouterr()
    assert main(["run", "--out", str(tmp_path / "o2"), *flags, "--norm", "L2"]) == 2
    assert "no standard L2 budget for fashion-mnist: give --eps" in capsys.readouterr().err
    assert main(["run", "--out", str(tmp_path / "o3"), *flags, "--norm", "L1", "--eps", "10"]) == 2
    assert "adversarial training in L1 is not supported" in capsys.readouterr().err
    assert not (tmp_path / "o2").exists() and not (tmp_path / "o3").exists()


def test_a_run_in_two_threat_models_is_two_leaderboard_entries(tmp_path: Path) -> None:
    """Its L-inf and L2 rows are never merged into one entry (a worst case across norms would be a wrong number):
    one entry per threat model and budget, each with its own figures; L1 is a threat model entries may state."""
    from bench.reporting.leaderboard import build_leaderboard

    out = tmp_path / "out"
    flags = [f"--{k.replace('_', '-')}={','.join(v) if isinstance(v, tuple) else v}" for k, v in TINY.items()]
    assert main(["run", "--out", str(out), *flags, "--eval-attacks", "pgd20,cw20", "--no-progress"]) == 0
    run = next((out / "runs").iterdir())
    assert main(["eval", str(run), "--norm", "L2", "--eps", "1.5", "--attacks", "pgd20,cw20", "--no-progress"]) == 0
    assert main(["eval", str(run), "--norm", "L2", "--eps", "3", "--attacks", "pgd20,cw20", "--no-progress"]) == 0
    rows = pd.read_csv(out / "runs.csv")
    board = build_leaderboard(rows, tmp_path / "lb")["board"]
    assert sorted(zip(board["threat_model"], board["eps"])) == [("L2", "1.5"), ("L2", "3"), ("Linf", "0.1")]
    for _, entry in board.iterrows():
        worst = rows[(rows["norm"] == entry["threat_model"]) & (rows["eps"] == float(entry["eps"]))
                     & (rows["attack"] == "worst_case")]
        assert entry["robust_acc"] == pytest.approx(100 * worst["robust_acc"].min(), abs=0.01)
