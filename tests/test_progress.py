"""Progress bars (issue 32): ``--no-progress`` silences every bar of a command, inner ones included (training,
the attack cascade, AutoAttack's sub-attacks), and bars are off by themselves when stderr is not a terminal."""
from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import List

import pytest

from bench.cli import main
from bench.core.progress import bar, progress, progress_enabled

FLAGS = ["--method", "dense-at", "--arch", "mlp", "--width", "0.25", "--epochs", "2", "--train-steps", "1", "--n-train", "1000", "--n-eval",
         "20", "--n-eval-aa", "4", "--eval-attacks", "pgd20,apgd-ce", "--device", "cpu", "--batch-size", "100"]


class Terminal(io.StringIO):
    """A stderr that says it is a terminal (where tqdm draws its bars)."""

    def isatty(self) -> bool:
        return True


def stderr_of(monkeypatch: pytest.MonkeyPatch, argv: List[str], terminal: bool = True) -> str:
    """What ``bench`` wrote to a (terminal-like) stderr while running ``argv``."""
    err = Terminal() if terminal else io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    assert main(argv) == 0
    monkeypatch.undo()
    return err.getvalue()


def test_run_draws_bars_on_a_terminal_and_none_with_no_progress(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a terminal the training, cascade and AutoAttack bars show; --no-progress removes every one of them
    (the training and AutoAttack bars printed whatever the flag, tqdm reading its switch at import)."""
    shown = stderr_of(monkeypatch, ["run", "--out", str(tmp_path / "a"), *FLAGS])
    assert "epoch/s" in shown and "attack/s" in shown and "sub-attack" in shown
    assert stderr_of(monkeypatch, ["run", "--out", str(tmp_path / "b"), *FLAGS, "--no-progress"]) == ""
    assert stderr_of(monkeypatch, ["run", "--out", str(tmp_path / "c"), *FLAGS], terminal=False) == ""


@pytest.mark.parametrize("command", ["run", "eval", "sweep", "check", "security"])
def test_every_command_with_bars_takes_no_progress(command: str, capsys: pytest.CaptureFixture) -> None:
    """The flag exists wherever a bar can show."""
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0 and "--no-progress" in capsys.readouterr().out


def test_the_switch_is_scoped() -> None:
    """progress(False) holds inside its block only; a bar inside is disabled whatever its stream."""
    assert progress_enabled()
    with progress(False):
        assert not progress_enabled()
        assert bar(range(3), file=Terminal()).disable
    assert progress_enabled()
    assert not bar(range(3), file=Terminal()).disable
