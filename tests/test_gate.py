"""The regression gate has teeth: each silent change below must make `bench check` fail, and unchanged code passes."""
from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Tuple

import numpy as np
import pandas as pd
import pytest
import yaml

import bench.train
from bench.attacks import ATTACKS, PGD
from bench.gate.check import GATE_ATTACKS, read_reference, run_check
from bench.gate.exact import FLAGS, allowed_flips
from bench.gate.training import seed_stats, training_gate
from bench.methods.compact import read_compact
from bench.methods.ticket import read_spec
from bench.spec import RunSpec

# Two tiny reference runs (RST over seeded weights: a seed + mask ticket; LWM: trained values).
PRESET = {
    "name": "gate-test",
    "fixed": {"arch": "mlp", "width": 0.25, "epochs": 2, "train_steps": 1, "n_train": 1000, "batch_size": 100,
              "n_eval": 200, "n_eval_aa": 20, "eval_attacks": ["pgd20", "cw20"], "device": "cpu"},
    "grid": [{"method": ["rst"], "sparsity": [0.9], "seed": [0, 1, 2]}, {"method": ["lwm"], "sparsity": [0.9], "seed": [0, 1, 2]}],
}


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Tuple[Path, Path]:
    """A preset, its reference CSV and committed tickets made by `bench check --update`."""
    root = tmp_path_factory.mktemp("gate")
    preset = root / "preset.yaml"
    preset.write_text(yaml.safe_dump(PRESET))
    code, report = run_check(preset, root / "ref" / "reference.csv", root / "out", update=True, progress=False)
    assert code == 0, report
    return preset, root


def check(reference: Tuple[Path, Path], out: str = "out") -> Tuple[int, str]:
    """`bench check` against the module's reference (tickets re-evaluated afresh; runs retrained in a new ``out``)."""
    preset, root = reference
    return run_check(preset, root / "ref" / "reference.csv", root / out, progress=False)


def test_unchanged_code_passes(reference: Tuple[Path, Path]) -> None:
    """The same code re-evaluates the committed tickets to the same flags, example by example."""
    code, report = check(reference)
    assert code == 0, report
    assert "flips 0" in report and "FAIL" not in report


def test_pgd_running_5_steps_instead_of_20_fails(reference: Tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """The case an aggregate tolerance missed: pgd20 silently running 5 steps."""
    monkeypatch.setitem(ATTACKS.get("pgd20").defaults, "steps", 5)
    code, report = check(reference)
    assert code == 1
    assert any("pgd20" in line and line.endswith("FAIL") for line in report.splitlines()), report


def test_eps_halved_inside_the_attack_fails(reference: Tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """An attack that reports eps but projects onto eps/2 passes the budget check and fails the gate."""
    original = PGD.perturb

    def half_budget(self: PGD, model, x, y):  # type: ignore[no-untyped-def]
        return original(dataclasses.replace(self, eps=self.eps / 2), model, x, y)

    monkeypatch.setattr(PGD, "perturb", half_budget)
    code, report = check(reference)
    assert code == 1 and "FAIL" in report


def test_tampered_reference_flags_fail(reference: Tuple[Path, Path], tmp_path: Path) -> None:
    """Editing a committed flag file (more robust examples than the ticket has) is caught."""
    preset, root = reference
    tickets = tmp_path / "tickets"
    shutil.copytree(root / "ref" / "tickets", tickets)
    folder = sorted(tickets.iterdir())[0]
    with np.load(folder / FLAGS) as data:
        flags = {k: data[k].copy() for k in data.files}
    flags["pgd20"][: allowed_flips(len(flags["pgd20"])) + 1] ^= 1
    np.savez(folder / FLAGS, **flags)
    code, report = run_check(preset, root / "ref" / "reference.csv", root / "out", progress=False, tickets=tickets)
    assert code == 1 and "FAIL" in report


def test_allowed_flips_is_max_of_two_and_half_a_percent() -> None:
    """max(2 examples, 0.5 %): 2 up to 599 examples, 5 at 1 000."""
    assert [allowed_flips(n) for n in (1, 100, 500, 599, 600, 1000, 10000)] == [2, 2, 2, 2, 3, 5, 50]


def test_unchanged_code_retrains_to_the_same_means(reference: Tuple[Path, Path]) -> None:
    """Retraining every seed from scratch (a fresh folder, as CI does) reproduces the reference."""
    code, report = check(reference, "fresh")
    assert code == 0, report
    assert "autoattack" in report and "pooled over 2 base(s)" in report


def test_training_change_costing_points_fails(reference: Tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """A training loop that silently uses 0.1 x the learning rate is caught by the training gate."""
    original = bench.train._optimizer
    monkeypatch.setattr(bench.train, "_optimizer", lambda params, cfg: original(params, dataclasses.replace(cfg, lr=cfg.lr * 0.1)))
    code, report = check(reference, "slow-lr")
    assert code == 1
    train_fails = [line for line in report.splitlines() if line.startswith("train") and line.endswith("FAIL")]
    assert train_fails, report
    # The evaluation of the committed tickets is untouched by a training change.
    assert not [line for line in report.splitlines() if line.startswith("eval") and line.endswith("FAIL")]


def synthetic(shift: float, std: float = 0.015, bases: int = 4) -> Tuple[pd.DataFrame, pd.DataFrame]:
    """A reference of ``bases`` bases (3 seeds, n_eval 1000) and a current table shifted by ``shift``."""
    rows = [{"base": f"b{i}", "method": "rst", "dataset": "fashion-mnist", "arch": "convnet", "width": 1.0,
             "target_sparsity": 0.9, "attack": "pgd20", "n_eval": 1000, "metric": "robust_acc", "mean": 0.5,
             "std": std, "seeds": "0+1+2"} for i in range(bases)]
    ref = pd.DataFrame(rows)
    return ref, ref.assign(mean=ref["mean"] + shift)


@pytest.mark.parametrize("shift, verdict", [(0.0, "pass"), (-0.01, "pass"), (-0.03, "FAIL"), (0.03, "FAIL")])
def test_pooled_training_gate_catches_a_3_point_systematic_shift(shift: float, verdict: str) -> None:
    """With seed std 1.5 points on 4 bases, 3 seeds each: a 3-point move of every base fails, 1 point passes."""
    ref, now = synthetic(shift)
    pooled = [line for line in training_gate(ref, now) if line.label.startswith("pooled")]
    assert len(pooled) == 1 and pooled[0].verdict == verdict
    # Each base alone moving 3 points is within its own noise (4 se); only the pooled line sees it.
    assert all(line.verdict == "pass" for line in training_gate(ref, now) if not line.label.startswith("pooled"))


def test_reference_needs_three_seeds(tmp_path: Path) -> None:
    """A training reference with fewer than 3 seeds per base is refused (exit 2 at the CLI)."""
    ref, _ = synthetic(0.0)
    ref["seeds"] = "0+1"
    ref.to_csv(tmp_path / "ref.csv", index=False)
    with pytest.raises(ValueError, match="at least 3"):
        read_reference(tmp_path / "ref.csv")


def test_committed_reference_tickets_are_small_and_complete() -> None:
    """The committed tickets: RST as seed + mask, all together under 10 MB, each with spec, meta and flags."""
    folder = Path(__file__).resolve().parent.parent / "results" / "reference" / "tickets"
    tickets = sorted(p for p in folder.iterdir() if p.is_dir())
    assert len(tickets) >= 3
    total = sum(f.stat().st_size for t in tickets for f in t.iterdir())
    assert total < 10 * 2**20
    for t in tickets:
        assert {"spec.json", "meta.json", "ticket.compact.pt", FLAGS} <= {f.name for f in t.iterdir()}
        compact = read_compact(t / "ticket.compact.pt")
        spec = read_spec(t)
        assert compact["weights"] == ("seed" if spec.method == "rst" else "values")
        assert set(spec.eval_attacks) == set(GATE_ATTACKS)


def test_committed_reference_catches_a_3_point_drop() -> None:
    """Against the committed reference's own seed spread, every base 3 points lower fails the pooled robust lines."""
    ref = read_reference(Path(__file__).resolve().parent.parent / "results" / "reference" / "reference.csv")
    lines = training_gate(ref, ref.assign(mean=ref["mean"] - 0.03))
    pooled = {(line.attack, line.metric): line for line in lines if line.label.startswith("pooled")}
    assert pooled and all(line.verdict == "FAIL" for (_a, metric), line in pooled.items() if metric == "robust_acc")
    # The unchanged means pass everywhere.
    assert all(line.verdict == "pass" for line in training_gate(ref, ref))


def test_seed_stats_use_the_rows_on_the_specs_n_eval() -> None:
    """Rows of an older, smaller evaluation of the same runs are not mixed into the seed statistics."""
    specs = [RunSpec(method="rst", sparsity=0.9, seed=s, n_eval=1000) for s in (0, 1, 2)]
    rows = pd.DataFrame([{"run_id": s.run_id, "attack": "pgd20", "n_eval": n, "clean_acc": 0.7, "robust_acc": acc}
                         for s in specs for n, acc in ((500, 0.1), (1000, 0.5))])
    stats = seed_stats(rows, specs, ["pgd20"])
    robust = stats[stats["metric"] == "robust_acc"].iloc[0]
    assert robust["seeds"] == "0+1+2" and robust["mean"] == pytest.approx(0.5) and robust["n_eval"] == 1000


def test_flags_of_a_grown_evaluation_match_a_fresh_one(tmp_path: Path) -> None:
    """An update after raising n_eval (its run's evaluation cache grown in steps) still commits the flags a fresh
    evaluation gives, so the next check sees no flips."""
    preset = tmp_path / "preset.yaml"
    spec = {**PRESET, "grid": [{"method": ["lwm"], "sparsity": [0.9], "seed": [0, 1, 2]}]}
    for n_eval in (100, 400):
        preset.write_text(yaml.safe_dump({**spec, "fixed": {**PRESET["fixed"], "n_eval": n_eval}}))
        code, report = run_check(preset, tmp_path / "ref" / "reference.csv", tmp_path / "out", update=True, progress=False)
        assert code == 0, report
    code, report = run_check(preset, tmp_path / "ref" / "reference.csv", tmp_path / "out", progress=False)
    eval_lines = [line for line in report.splitlines() if line.startswith("eval")]
    assert code == 0 and eval_lines and all("flips 0 " in line for line in eval_lines), report
