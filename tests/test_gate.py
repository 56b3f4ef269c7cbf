"""The exact evaluation gate has teeth: each silent change below must make `bench check` fail."""
from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Tuple

import numpy as np
import pytest
import yaml

from bench.attacks import ATTACKS, PGD
from bench.check import run_check
from bench.exact_gate import FLAGS, allowed_flips

# Two tiny reference runs (RST over seeded weights: a seed + mask ticket; LWM: trained values).
PRESET = {
    "name": "gate-test",
    "fixed": {"arch": "mlp", "width": 0.25, "epochs": 2, "train_steps": 1, "n_train": 1000, "batch_size": 100,
              "n_eval": 200, "eval_attacks": ["pgd20", "cw20"], "device": "cpu"},
    "grid": [{"method": ["rst"], "sparsity": [0.9]}, {"method": ["lwm"], "sparsity": [0.9]}],
}


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Tuple[Path, Path]:
    """A preset, its reference CSV and committed tickets made by `bench check --update`."""
    root = tmp_path_factory.mktemp("gate")
    preset = root / "preset.yaml"
    preset.write_text(yaml.safe_dump(PRESET))
    code, report = run_check(preset, root / "ref" / "reference.csv", root / "out", None, update=True, progress=False)
    assert code == 0, report
    return preset, root


def check(reference: Tuple[Path, Path]) -> Tuple[int, str]:
    """`bench check` against the module's reference (its tickets are re-evaluated in a fresh folder)."""
    preset, root = reference
    return run_check(preset, root / "ref" / "reference.csv", root / "out", None, progress=False)


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
    code, report = run_check(preset, root / "ref" / "reference.csv", root / "out", None, progress=False, tickets=tickets)
    assert code == 1 and "FAIL" in report


def test_allowed_flips_is_max_of_two_and_half_a_percent() -> None:
    """max(2 examples, 0.5 %): 2 up to 599 examples, 5 at 1 000."""
    assert [allowed_flips(n) for n in (1, 100, 500, 599, 600, 1000, 10000)] == [2, 2, 2, 2, 3, 5, 50]
