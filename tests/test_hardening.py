"""File and input boundaries: paths built from CSV cells stay inside the output folder, the leaderboard
deletes only what it wrote, spreadsheet formulas are neutralised, a finished run's spec is never rewritten."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from bench.cli import main
from bench.reporting.export import export_robustbench_json
from bench.reporting.leaderboard import build_leaderboard, neutralise

RUN_ID = "0123456789ab"


def rows(**overrides: Any) -> pd.DataFrame:
    """Minimal runs.csv rows of one ticket (PGD-20 and the worst case)."""
    base = {"run_id": RUN_ID, "method": "rst", "dataset": "fashion-mnist", "arch": "convnet", "width": 1.0,
            "target_sparsity": 0.9, "measured_sparsity": 0.9, "seed": 0, "norm": "Linf", "eps": 0.1, "version": "",
            "eot_samples": 1, "n_eval": 100, "clean_acc": 0.8, "flags": "", "status": "ok"}
    base.update(overrides)
    return pd.DataFrame([{**base, "attack": "pgd20", "robust_acc": 0.5},
                         {**base, "attack": "worst_case", "robust_acc": 0.4, "version": "pgd20"}])


@pytest.mark.parametrize("field, value", [("dataset", "../../x"), ("dataset", "/tmp/outside"), ("norm", "../../../x"),
                                          ("run_id", "../../../../x"), ("run_id", "ABCDEF012345")])
def test_crafted_cells_never_write_outside_the_output_folder(field: str, value: str, tmp_path: Path) -> None:
    out = tmp_path / "a" / "b" / "out"
    with pytest.raises(ValueError, match=field if field != "norm" else "norm"):
        export_robustbench_json(rows(**{field: value}), out)
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert written == []


def test_leaderboard_deletes_only_what_it_wrote(tmp_path: Path) -> None:
    """Someone's JSON files in --out survive; entries the board wrote for dropped tickets go."""
    out = tmp_path / "board"
    theirs = out / "entries" / "fashion-mnist" / "Linf" / "their_notes.json"
    theirs.parent.mkdir(parents=True)
    theirs.write_text("{}")
    build_leaderboard(rows(), out)
    mine = out / "entries" / "fashion-mnist" / "Linf" / f"rst_convnet_{RUN_ID}.json"
    assert mine.exists() and theirs.exists()
    build_leaderboard(rows(run_id="fedcba987654"), out)
    assert not mine.exists() and theirs.exists()


@pytest.mark.parametrize("cell", ["=HYPERLINK(\"http://x\")", "+1+2", "-2+3", "@SUM(A1)", "\tx"])
def test_formula_cells_are_neutralised(cell: str, tmp_path: Path) -> None:
    assert neutralise(cell) == "'" + cell
    build_leaderboard(rows(method=cell), tmp_path / "board")
    written = pd.read_csv(tmp_path / "board" / "leaderboard.csv", dtype=str, keep_default_na=False)
    assert list(written["method"]) == ["'" + cell]
    assert all(not str(v).startswith(("=", "+", "-", "@", "\t")) for col in written for v in written[col])
    assert neutralise(0.5) == 0.5 and neutralise("rst") == "rst"


def test_eval_with_other_attacks_keeps_the_finished_spec(tmp_path: Path, tiny_spec_kwargs: Any) -> None:
    """`bench eval RUN --attacks fgsm` appends rows and leaves the run's spec.json as the run wrote it."""
    flags = ["--arch", "mlp", "--width", "0.1", "--epochs", "1", "--train-steps", "1", "--n-train", "300",
             "--n-eval", "40", "--eval-attacks", "pgd20", "--device", "cpu", "--batch-size", "100"]
    assert main(["run", "--out", str(tmp_path), *flags]) == 0
    run_dir = next((tmp_path / "runs").iterdir())
    before = (run_dir / "spec.json").read_text()
    assert main(["eval", str(run_dir), "--attacks", "fgsm"]) == 0
    assert (run_dir / "spec.json").read_text() == before
    assert json.loads(before)["eval_attacks"] == ["pgd20"]
    assert "fgsm" in set(pd.read_csv(tmp_path / "runs.csv")["attack"])


TINY_FLAGS = ["--arch", "mlp", "--width", "0.1", "--epochs", "1", "--train-steps", "1", "--n-train", "300",
              "--n-eval", "40", "--eval-attacks", "pgd20", "--device", "cpu", "--batch-size", "100"]


@pytest.mark.parametrize("name, content, message", [
    ("epochs-true.yaml", "epochs: true\n", "cannot read True as int"),
    ("empty.yaml", "", "is empty"),
    ("attacks-5.yaml", "eval_attacks: 5\n", "expected a comma-separated list"),
    ("hparams-3.yaml", "hparams: 3\n", "hparams for 'rst' must be a mapping"),
    ("binary.yaml", b"\xff\xfe\x00\x01binary", "not a text file"),
])
def test_bad_config_files_are_one_line_errors(name: str, content: Any, message: str, tmp_path: Path,
                                              capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    assert main(["run", "--out", str(tmp_path / "out"), "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "out" / "runs").exists()


def test_corrupt_rows_file_is_found_before_any_training(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A runs.csv that cannot take rows stops the run at once, naming the file (nothing is trained)."""
    (tmp_path / "runs.csv").write_text("this is,not\na rows file\n")
    assert main(["run", "--out", str(tmp_path), *TINY_FLAGS]) == 2
    err = capsys.readouterr().err.strip()
    assert str(tmp_path / "runs.csv") in err and len(err.splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def test_a_held_lock_times_out_with_a_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another process's lock on runs.csv: the writer waits, then says which lock to remove."""
    from filelock import FileLock

    import bench.core.results as results

    monkeypatch.setattr(results, "LOCK_TIMEOUT_S", 0.2)
    csv = tmp_path / "runs.csv"
    with FileLock(str(csv) + ".lock"), pytest.raises(ValueError, match="runs.csv.lock"):
        results.append_rows(csv, [{"run_id": RUN_ID, "attack": "pgd20"}])


def test_ctrl_c_is_one_line_and_exit_130(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    import bench.commands.run as run_command

    def interrupted(*_args: Any, **_kwargs: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(run_command, "run_spec", interrupted)
    assert main(["run", "--out", str(tmp_path), *TINY_FLAGS]) == 130
    err = capsys.readouterr().err.strip()
    assert err.startswith("bench: interrupted") and len(err.splitlines()) == 1


def test_version_flag(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith("bench (robust-tickets) ")


def test_negative_n_eval_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["run", "--out", str(tmp_path), *TINY_FLAGS]) == 0
    run_dir = next((tmp_path / "runs").iterdir())
    capsys.readouterr()
    assert main(["eval", str(run_dir), "--n-eval", "-5"]) == 2
    assert "n_eval and n_eval_aa must be >= 0" in capsys.readouterr().err


def test_corrupt_checkpoints_name_the_file_and_the_way_out(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A truncated ticket.pt is a one-line error saying to delete it; a garbage resume checkpoint restarts its stage."""
    assert main(["run", "--out", str(tmp_path), *TINY_FLAGS]) == 0
    run_dir = next((tmp_path / "runs").iterdir())
    ticket = run_dir / "ticket.pt"
    ticket.write_bytes(ticket.read_bytes()[:100])
    capsys.readouterr()
    assert main(["eval", str(run_dir), "--attacks", "fgsm"]) == 2
    err = capsys.readouterr().err
    assert str(ticket) in err and "delete it" in err
    # A fresh run whose search checkpoint is garbage: warned, restarted, finished.
    out = tmp_path / "second"
    assert main(["run", "--out", str(out), *TINY_FLAGS, "--seed", "1"]) == 0
    run2 = next((out / "runs").iterdir())
    (run2 / "search" / "last.pt").write_bytes(b"garbage")
    for name in ("ticket.pt", "meta.json"):
        (run2 / name).unlink()
    with pytest.warns(UserWarning, match="last.pt is corrupt"):
        assert main(["run", "--out", str(out), *TINY_FLAGS, "--seed", "1"]) == 0
    assert (run2 / "ticket.pt").exists()


def test_two_concurrent_runs_of_one_spec_train_once(tmp_path: Path) -> None:
    """Started together, the second run waits for the first's ticket: one search, no error, identical rows."""
    env_flags = ["--out", str(tmp_path), *TINY_FLAGS, "--epochs", "2"]
    cmd = [sys.executable, "-c", "import sys; from bench.cli import main; sys.exit(main(sys.argv[1:]))", "run", *env_flags]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-500:] for _, err in outs]
    run_dir = next((tmp_path / "runs").iterdir())
    log = (run_dir / "log.txt").read_text()
    assert log.count("finding ticket") == 1 and log.count("ticket exists, skipping search") == 1
    rows = pd.read_csv(tmp_path / "runs.csv")
    assert len(rows) == len(rows.drop_duplicates(subset=["run_id", "attack"]))


def test_help_text_as_a_person_meets_it(capsys: pytest.CaptureFixture) -> None:
    """Typed metavars (no HP__ names), the chosen method's own flags with its defaults, tuple defaults as typed,
    choices listed; another method's flags are not shown."""
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "HP__" not in text
    assert "rst hyperparameters" in text and "--weight-init STR frozen random weights" in text
    assert "--prune-fraction" not in text and "--candidates" not in text
    assert "choices: alth, dense-at, dense-at-matched, hydra, lwm, r2s, random, rst" in text
    assert "choices: clean, cosentino, pgd, trades" in text
    with pytest.raises(SystemExit):
        main(["run", "--method", "r2s", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "default: 0.97,0.95,0.93,0.9,0.85,0.8,0.6,0.4" in text and "(0.97" not in text
    assert "r2s hyperparameters" in text and "--finetune " not in text


def test_table_decimals_are_checked(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    csv = tmp_path / "runs.csv"
    rows().to_csv(csv, index=False)
    with pytest.raises(SystemExit) as exit_info:
        main(["table", str(csv), "--decimals", "-1"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "--decimals must be a whole number from 0 to 6" in err and len(err.splitlines()) == 1


def test_one_spec_in_two_output_folders_logs_into_each(tmp_path: Path) -> None:
    """The per-run logger is per folder: the same spec run in a second folder writes that folder's log.txt."""
    for out in (tmp_path / "a", tmp_path / "b"):
        assert main(["run", "--out", str(out), *TINY_FLAGS]) == 0
        log = next((out / "runs").iterdir()) / "log.txt"
        assert "finding ticket" in log.read_text()


def test_zero_training_steps_train_on_clean_inputs(tmp_path: Path) -> None:
    """``--train-steps 0`` trains on the clean inputs (it used to fail building a 0-step PGD)."""
    assert main(["run", "--out", str(tmp_path), *TINY_FLAGS, "--train-steps", "0"]) == 0


def test_random_control_calibrates_on_the_trainers_inputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The frozen random control estimates BatchNorm statistics on what the spec's trainer crafts (TRADES here)."""
    from bench.trainers.trades import Trades

    calls: list = []
    original = Trades.craft

    def spy(self: Trades, *args: Any) -> Any:
        calls.append(1)
        return original(self, *args)

    monkeypatch.setattr(Trades, "craft", spy)
    assert main(["run", "--out", str(tmp_path), *TINY_FLAGS, "--method", "random", "--trainer", "trades"]) == 0
    assert calls


def test_eps_formatter_writes_whole_steps_of_1_255() -> None:
    """One formatter for tables, plots and exports: 5/255 is '5/255' (the table formatter printed 0.0196078)."""
    from bench.core.results import format_eps, parse_eps

    assert format_eps(5 / 255) == "5/255" and format_eps(8 / 255) == "8/255" and format_eps(0.1) == "0.1"
    assert parse_eps(format_eps(5 / 255)) == pytest.approx(5 / 255)


@pytest.mark.parametrize("method", ["dense-at", "dense-at-matched"])
def test_dense_methods_default_to_sparsity_zero(method: str) -> None:
    """`bench run --method dense-at` works without --sparsity; a ticket method keeps the default 0.9."""
    from bench.spec import RunSpec

    assert RunSpec.from_dict({"method": method}).sparsity == 0.0
    assert RunSpec.from_dict({"method": "rst"}).sparsity == 0.9
    with pytest.raises(ValueError, match="--sparsity must be 0"):
        RunSpec.from_dict({"method": method, "sparsity": 0.9})


def test_legal_but_surprising_specs_warn() -> None:
    """Zero epochs, and a --data-root the embedded subset never reads, each get one warning line."""
    from bench.commands.run import spec_warnings
    from bench.spec import RunSpec

    assert spec_warnings(RunSpec(), None) == []
    assert any("trains nothing" in w for w in spec_warnings(RunSpec(epochs=0), None))
    assert any("is not read" in w for w in spec_warnings(RunSpec(), "/data"))
    assert spec_warnings(RunSpec(data_source="full"), "/data") == []


def test_memory_bound_counts_parameters_without_allocating() -> None:
    """The estimate is the model's parameter count times the copies a search holds; too large is refused."""
    import torch

    from bench.harness import SEARCH_PARAMETER_COPIES, check_memory
    from bench.methods.ticket import empty_model
    from bench.spec import RunSpec

    spec = RunSpec(arch="mlp", width=0.5).resolve()
    n_params = sum(p.numel() for p in empty_model(spec).parameters())
    assert check_memory(spec, torch.device("cpu")) == n_params * 4 * SEARCH_PARAMETER_COPIES
    with pytest.raises(ValueError, match="width 1000: convnet has .* lower --width"):
        check_memory(RunSpec(width=1000).resolve(), torch.device("cpu"))


def test_a_copied_run_folder_is_evaluated_into_out(tmp_path: Path) -> None:
    """A run folder kept outside <out>/runs/ is evaluated with --out saying which runs.csv gets the rows."""
    import shutil

    assert main(["run", "--out", str(tmp_path / "a"), *TINY_FLAGS]) == 0
    copy = tmp_path / "kept" / "my-ticket"
    shutil.copytree(next((tmp_path / "a" / "runs").iterdir()), copy)
    assert main(["eval", str(copy), "--out", str(tmp_path / "b"), "--attacks", "fgsm"]) == 0
    assert set(pd.read_csv(tmp_path / "b" / "runs.csv")["attack"]) == {"fgsm"}


def test_top_level_help_does_not_import_torch() -> None:
    """`bench --help` and `bench --version` answer from the sources (torch takes seconds to import)."""
    code = ("import sys\nfrom bench.cli import main\nfor argv in (['--help'], ['--version']):\n"
            "    try:\n        main(argv)\n    except SystemExit:\n        pass\nprint('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "False"


def test_command_summaries_agree_with_the_registry() -> None:
    """The names and help read from the sources are those of the imported subcommands."""
    import argparse

    from bench.cli import build_parser
    from bench.commands import command_summaries

    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    imported = {c.dest: c.help for c in action._choices_actions}
    assert command_summaries() == dict(sorted(imported.items()))


def test_autoattack_progress_names_the_sub_attack_and_its_points(monkeypatch: pytest.MonkeyPatch) -> None:
    """AutoAttack's bar (on a terminal) says which sub-attack runs on how many points (it used to sit at 0/1 for
    minutes)."""
    import io

    import torch

    from bench.attacks import ATTACKS

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3)).eval()
    x, y = torch.rand(6, 1, 4, 4), torch.randint(0, 3, (6,))
    attack = ATTACKS.get("autoattack-custom")(0.01, attacks=("apgd-ce",))
    # Bars draw only on a terminal: a stderr that says it is one.
    terminal = io.StringIO()
    monkeypatch.setattr(terminal, "isatty", lambda: True)
    monkeypatch.setattr(sys, "stderr", terminal)
    attack.perturb_detailed(model, x, y)
    monkeypatch.undo()
    err = terminal.getvalue()
    assert "AutoAttack custom" in err and "apgd-ce on 6 of 6 points" in err, err


def test_an_error_after_a_progress_bar_starts_on_a_clean_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A run that diverges mid-epoch: the bar is cleared before the one error line is printed."""
    assert main(["run", "--out", str(tmp_path), *TINY_FLAGS, "--lr", "1e12", "--method", "dense-at"]) == 1
    err = capsys.readouterr().err
    last = [line for line in err.split("\n") if line.strip()][-1]
    assert last.split("\r")[-1].startswith("bench: run failed:"), repr(last)
