"""The evaluation cascade, its resumable per-example stores, the sanity flags and `bench eval`."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, List, Tuple

import pandas as pd
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from conftest import train_mlp

from bench.attacks import PGD, AutoAttackRunner, make_attack
from bench.cli import main
from bench.core.results import AttackResult
from bench.core.store import Store
from bench.data import Split
from bench.evaluation.evaluate import attack_store, evaluate, robust_flags, worst_case
from bench.evaluation.flags import FLAG_DESCRIPTIONS
from bench.evaluation.flags import row_flags as _row_flags
from bench.harness import summary
from bench.nn.masking import frozen_fingerprint
from bench.nn.models import ModelConfig, build_model

EPS = 0.05
CPU = torch.device("cpu")
CASCADE = ["apgd-ce", "cw20", "pgd20"]


# Tiny models run fastest on one thread (conftest.py's fixture), and a shared CPU does not thrash.
pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def trained() -> Tuple[nn.Module, Split]:
    """A small MLP trained clean for one epoch (under a second): some points robust at EPS, some not."""
    return train_mlp(32, 2000, 1, 64, 2e-3, lambda model, x, y: F.cross_entropy(model(x), y))


def by_name(results: List[AttackResult]) -> dict:
    """Results keyed by attack name."""
    return {r.attack: r for r in results}


class CallCounter:
    """Counts (and optionally forbids) calls to an attack class's entry point."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, cls: type, method: str, fail_after: int = -1) -> None:
        self.calls = 0
        original = getattr(cls, method)

        def wrapped(attack: Any, *args: Any) -> Any:
            if self.calls == fail_after:
                raise KeyboardInterrupt("simulated interruption")
            self.calls += 1
            return original(attack, *args)

        monkeypatch.setattr(cls, method, wrapped)


def test_cascade_rows(trained: Tuple[nn.Module, Split], tmp_path: Path) -> None:
    """PGD-family rows are exact accuracy alone; AutoAttack runs only on what survived them."""
    model, test = trained
    results = evaluate(model, test, CASCADE, EPS, 200, 200, CPU, tmp_path)
    rows = by_name(results)
    assert [r.attack for r in results][-1] == "apgd-ce"
    for name in ("pgd20", "cw20"):
        assert rows[name].scope == "alone"
        alone = robust_flags(model, test.head(200), make_attack(name, EPS), CPU)
        assert torch.equal(rows[name].robust, alone)
    aa = rows["apgd-ce"]
    assert aa.scope.startswith("after:") and "pgd20" in aa.scope and "cw20" in aa.scope
    survivors = rows["pgd20"].robust & rows["cw20"].robust
    assert torch.equal(aa.robust, survivors & aa.robust)
    assert aa.stats["n_attacked"] == int(survivors.sum())
    worst = worst_case(results)
    assert worst is not None
    assert torch.equal(worst.robust, aa.robust)
    assert 0 < worst.robust_acc < worst.clean_acc


def test_no_cascade_reports_every_attack_alone(trained: Tuple[nn.Module, Split], tmp_path: Path) -> None:
    """With cascade=False AutoAttack sees every clean-correct example; the worst case is unchanged in kind."""
    model, test = trained
    results = evaluate(model, test, CASCADE, EPS, 100, 100, CPU, tmp_path, cascade=False)
    assert all(r.scope == "alone" for r in results)
    worst = worst_case(results)
    assert worst is not None and worst.robust_acc <= min(r.robust_acc for r in results)


def test_rerun_repeats_no_attack(trained: Tuple[nn.Module, Split], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A finished evaluation is read back from the run folder without attacking again."""
    model, test = trained
    first = evaluate(model, test, CASCADE, EPS, 100, 100, CPU, tmp_path)
    CallCounter(monkeypatch, PGD, "perturb", fail_after=0)
    CallCounter(monkeypatch, AutoAttackRunner, "perturb_detailed", fail_after=0)
    again = evaluate(model, test, CASCADE, EPS, 100, 100, CPU, tmp_path)
    for a, b in zip(first, again):
        assert (a.attack, a.robust_acc, a.scope) == (b.attack, b.robust_acc, b.scope)
        assert torch.equal(a.robust, b.robust)


def test_interrupted_evaluation_resumes_where_it_stopped(trained: Tuple[nn.Module, Split], tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Killed after two chunks, the rerun attacks only the remaining chunks and ends as an uninterrupted run."""
    model, test = trained
    reference = evaluate(model, test, ["pgd20"], EPS, 120, 120, CPU, tmp_path / "ref", batch_size=16, probes=False)
    chunks = -(-int(reference[0].stats["n_attacked"]) // 16)
    with monkeypatch.context() as m:
        CallCounter(m, PGD, "perturb", fail_after=2)
        with pytest.raises(KeyboardInterrupt):
            evaluate(model, test, ["pgd20"], EPS, 120, 120, CPU, tmp_path / "run", batch_size=16, probes=False)
    with monkeypatch.context() as m:
        counter = CallCounter(m, PGD, "perturb")
        resumed = evaluate(model, test, ["pgd20"], EPS, 120, 120, CPU, tmp_path / "run", batch_size=16, probes=False)
    assert counter.calls == chunks - 2
    assert torch.equal(resumed[0].robust, reference[0].robust)


def test_more_examples_attack_only_the_new_ones(trained: Tuple[nn.Module, Split], tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Growing n_eval reuses the stored examples and attacks the new clean-correct ones only."""
    model, test = trained
    small = evaluate(model, test, ["pgd20"], EPS, 50, 50, CPU, tmp_path)
    seen: List[int] = []
    original = PGD.perturb

    def spy(attack: PGD, m: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        seen.append(len(x))
        return original(attack, m, x, y)

    monkeypatch.setattr(PGD, "perturb", spy)
    big = evaluate(model, test, ["pgd20"], EPS, 80, 80, CPU, tmp_path)
    new_correct = int(big[0].stats["n_attacked"] - small[0].stats["n_attacked"])
    assert sum(seen) == new_correct
    assert torch.equal(big[0].robust[:50], small[0].robust)


def test_flags_never_change_numbers(trained: Tuple[nn.Module, Split], tmp_path: Path) -> None:
    """A run flagged for sparsity gives the same numbers as an unflagged one."""
    model, test = trained
    plain = evaluate(model, test, ["pgd20"], EPS, 60, 60, CPU, tmp_path / "a")
    flagged = evaluate(model, test, ["pgd20"], EPS, 60, 60, CPU, tmp_path / "b",
                       meta={"target_sparsity": 0.9, "measured_sparsity": 0.8})
    assert plain[0].flags == () and flagged[0].flags == ("sparsity_off_target",)
    assert plain[0].robust_acc == flagged[0].robust_acc


class Softmaxed(nn.Module):
    """Returns probabilities instead of logits."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x).softmax(1)


class Quantised(nn.Module):
    """Rounds its input: the input gradient is zero everywhere (shattered gradients)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner((x * 4).round() / 4)


class Noisy(nn.Module):
    """A randomised model: input noise at every forward pass."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x + 0.1 * torch.randn_like(x))


class StubbornBN(nn.BatchNorm1d):
    """BatchNorm that ignores ``eval()`` and keeps updating its statistics."""

    def train(self, mode: bool = True) -> "StubbornBN":
        return super().train(True)


class SelfEditing(nn.Module):
    """Moves its own weights at every forward pass."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            self.inner[1].weight.mul_(1.0 + 1e-6)
        return self.inner(x)


@pytest.mark.parametrize("case", ["probabilities", "vanishing_gradients", "nondeterministic", "train_mode", "frozen_moved"])
def test_model_flags(case: str, trained: Tuple[nn.Module, Split], tmp_path: Path) -> None:
    """Each broken model raises its own flag on every row."""
    inner, test = trained
    inner = nn.Sequential(*[m for m in inner])
    model: nn.Module = {
        "probabilities": lambda: Softmaxed(inner),
        "vanishing_gradients": lambda: Quantised(inner),
        "nondeterministic": lambda: Noisy(inner),
        "train_mode": lambda: nn.Sequential(nn.Flatten(), StubbornBN(784), inner),
        "frozen_moved": lambda: SelfEditing(inner),
    }[case]()
    results = evaluate(model, test, ["fgsm"], EPS, 40, 40, CPU, None)
    assert case in results[0].flags


def test_eot_attack_clears_the_nondeterminism_flag(trained: Tuple[nn.Module, Split]) -> None:
    """A randomised model attacked with EOT-PGD as well is not flagged."""
    inner, test = trained
    results = evaluate(Noisy(inner), test, ["fgsm", "eot-pgd:steps=2:eot_samples=2"], EPS, 20, 20, CPU, None)
    assert all("nondeterministic" not in r.flags for r in results)


def test_frozen_fingerprint_flags_moved_weights(trained: Tuple[nn.Module, Split]) -> None:
    """Weights that differ from the fingerprint stored at initialisation raise frozen_moved."""
    _inner, test = trained
    model = build_model("mlp", ModelConfig(1, 10, 28, (0.5,), (0.5,), width=0.1)).eval()
    meta = {"frozen_fingerprint": frozen_fingerprint(model)}
    assert evaluate(model, test, ["fgsm"], EPS, 20, 20, CPU, None, meta=meta)[0].flags == ()
    with torch.no_grad():
        next(iter(frozen_fingerprint_layers(model))).weight.add_(0.01)
    assert "frozen_moved" in evaluate(model, test, ["fgsm"], EPS, 20, 20, CPU, None, meta=meta)[0].flags


def frozen_fingerprint_layers(model: nn.Module) -> Iterator[nn.Module]:
    """The masked layers the fingerprint covers."""
    from bench.nn.masking import prunable_layers

    return (layer for _name, layer in prunable_layers(model))


def _store(tried: List[bool], robust: List[bool], broken_by: List[int]) -> Store:
    """An in-memory store with given per-example outcomes."""
    store = attack_store(None, "pgd20", make_attack("pgd20", EPS))
    store.grow(len(tried))
    store["tried"][:] = torch.tensor(tried)
    store["robust"][:] = torch.tensor(robust)
    store["broken_by"][:] = torch.tensor(broken_by)
    return store


def test_row_flags_aa_above_pgd_and_square() -> None:
    """AutoAttack weaker than PGD on shared examples, and Square alone breaking points, are flagged."""
    pgd, aa = make_attack("pgd20", EPS), make_attack("autoattack", EPS)
    order = [("pgd20", pgd, 4), ("autoattack", aa, 4)]
    correct = torch.ones(4, dtype=torch.bool)
    assert isinstance(aa, AutoAttackRunner)
    square = aa.components.index("square")
    healthy = {"pgd20": _store([True] * 4, [True, True, False, False], [-1] * 4),
               "autoattack": _store([True] * 4, [True, False, False, False], [-1, 0, 0, 0])}
    assert _row_flags(order, healthy, correct)["autoattack"] == set()
    weaker = {"pgd20": healthy["pgd20"], "autoattack": _store([True] * 4, [True, True, True, False], [-1, -1, -1, 0])}
    assert "aa_above_pgd" in _row_flags(order, weaker, correct)["autoattack"]
    squared = {"pgd20": healthy["pgd20"], "autoattack": _store([True] * 4, [True, False, False, False], [-1, square, 0, 0])}
    assert _row_flags(order, squared, correct)["autoattack"] == {"square_beats_whitebox"}


def test_every_flag_is_documented() -> None:
    """docs/flags.md has a section for every flag the code can raise."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "flags.md").read_text()
    for flag in FLAG_DESCRIPTIONS:
        assert f"## `{flag}`" in text


def test_summary_warns_about_flags() -> None:
    """Flags appear as WARNING lines in the printed summary."""
    from bench.spec import RunSpec

    spec = RunSpec(eps=EPS)
    df = pd.DataFrame([{"attack": "pgd20", "scope": "alone", "n_eval": 10, "clean_acc": 0.9, "robust_acc": 0.5,
                        "seconds": 1.0, "flags": "sparsity_off_target"}])
    text = summary(df, spec, {"measured_sparsity": 0.8, "train_seconds": 1.0}, 1, Path("runs.csv"))
    assert "WARNING sparsity_off_target" in text


def test_bench_eval_appends_without_duplicates(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """`bench eval RUN_DIR --attacks ... --n-eval N` adds rows once; repeating adds none."""
    out = tmp_path / "out"
    assert main(["run", "--method", "rst", "--arch", "mlp", "--width", "0.1", "--n-train", "200", "--epochs", "1",
                 "--train-steps", "1", "--batch-size", "100", "--eval-attacks", "pgd20", "--n-eval", "30",
                 "--device", "cpu", "--out", str(out)]) == 0
    [run_dir] = list((out / "runs").iterdir())

    def rows() -> pd.DataFrame:
        return pd.read_csv(out / "runs.csv", keep_default_na=False)

    before = len(rows())
    args = ["eval", str(run_dir), "--attacks", "fgsm,cw20", "--n-eval", "40"]
    assert main(args) == 0
    df = rows()
    assert len(df) == before + 3
    assert {"scope", "flags"} <= set(df.columns)
    assert set(df[df.n_eval == 40].attack) == {"fgsm", "cw20", "worst_case"}
    assert main(args) == 0
    assert len(rows()) == before + 3
    assert "0 new row(s)" in capsys.readouterr().out
