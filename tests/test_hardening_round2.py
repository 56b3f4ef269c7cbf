"""Issue 33, hardening round two: each case failed on the code before it (the data-loss cases are in
test_tables.py and test_leaderboard.py)."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, List

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from test_leaderboard import submission

import bench.cli as cli_module
import bench.train as train_module
from bench.attacks import ATTACKS, check_budget
from bench.cli import main
from bench.core.config import coerce
from bench.data import batches
from bench.gate.exact import read_flags
from bench.spec import METHODS, RunSpec
from bench.sweep.grid import expand
from tickets.alth import MAX_LEVELS, level_schedule, levels_needed

TINY_FLAGS = ["--arch", "mlp", "--width", "0.1", "--epochs", "1", "--train-steps", "1", "--n-train", "300",
              "--n-eval", "40", "--eval-attacks", "pgd20", "--device", "cpu", "--batch-size", "100"]


def one_error_line(capsys: pytest.CaptureFixture, *words: str) -> str:
    """The single stderr line of a refused command, which names ``words``."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert all(w in lines[0] for w in words), lines[0]
    return lines[0]


@pytest.mark.parametrize("name, field", [("pgd:step_size=inf", "step_size"), ("pgd:rel_step=inf", "rel_step"),
                                         ("pgd:step_size=nan", "step_size"), ("cw20:step_size=-inf", "step_size")])
def test_non_finite_attack_settings_are_refused(name: str, field: str) -> None:
    """An infinite step size returned NaN points (11 of 200) and was accepted."""
    with pytest.raises(ValueError, match=f"{field}: must be a finite number"):
        ATTACKS.get(name)


def test_the_budget_check_fails_on_nan() -> None:
    """NaN compares false with everything: the old check let NaN points through."""
    x = torch.rand(4, 1, 8, 8)
    x_adv = x.clone()
    x_adv[1, 0, 2, 3] = float("nan")
    with pytest.raises(RuntimeError, match="not a finite input"):
        check_budget(x, x_adv, 0.1)
    check_budget(x, x.clone(), 0.1)


def run_folder(out: Path, method: str) -> Path:
    """The run folder of a tiny finished run of ``method``."""
    assert main(["run", "--method", method, "--sparsity", "0.5", "--out", str(out), *TINY_FLAGS]) == 0
    rows = pd.read_csv(out / "runs.csv")
    return out / "runs" / str(rows[rows["method"] == method]["run_id"].iloc[0])


def test_a_run_folder_holding_another_runs_files_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """lwm's files copied under an rst run id gave a row that said rst with lwm's numbers."""
    rst = run_folder(tmp_path / "a", "rst")
    lwm = run_folder(tmp_path / "b", "lwm")
    for name in ("spec.json", "meta.json", "ticket.pt", "ticket.compact.pt"):
        if (lwm / name).exists():
            shutil.copy(lwm / name, rst / name)
    before = (tmp_path / "a" / "runs.csv").read_bytes()
    capsys.readouterr()
    assert main(["run", "--method", "rst", "--sparsity", "0.5", "--out", str(tmp_path / "a"), *TINY_FLAGS,
                 "--eval-attacks", "fgsm"]) == 2
    one_error_line(capsys, "spec.json", lwm.name, rst.name)
    assert (tmp_path / "a" / "runs.csv").read_bytes() == before


@pytest.mark.parametrize("content, words", [("[]", ["meta.json", "not a ticket's record"]),
                                            ("{}", ["meta.json", "missing measured_sparsity"]),
                                            ("{not json", ["meta.json", "not valid JSON"])])
def test_a_broken_meta_json_names_the_file(content: str, words: List[str], tmp_path: Path,
                                           capsys: pytest.CaptureFixture) -> None:
    """meta.json `[]` or `{}` was a KeyError traceback; not JSON did not name the file."""
    run = run_folder(tmp_path, "rst")
    (run / "meta.json").write_text(content)
    capsys.readouterr()
    assert main(["eval", str(run), "--attacks", "fgsm"]) == 2
    one_error_line(capsys, *words)


def test_a_spec_json_that_is_not_utf8_names_the_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = run_folder(tmp_path, "rst")
    (run / "spec.json").write_bytes(b"\xff\xfe\x00garbage")
    capsys.readouterr()
    assert main(["eval", str(run), "--attacks", "fgsm"]) == 2
    one_error_line(capsys, "spec.json", "UTF-8")


def test_meta_json_is_read_as_a_record(tmp_path: Path) -> None:
    run = run_folder(tmp_path, "rst")
    meta = json.loads((run / "meta.json").read_text())
    assert {"measured_sparsity", "train_seconds", "train_passes"} <= set(meta)


@pytest.mark.parametrize("text, value", [("8/255", 8 / 255), ("0.1", 0.1), ("1/10", 0.1)])
def test_eps_is_read_as_the_help_writes_it(text: str, value: float) -> None:
    """The help shows 8/255; the parser refused it."""
    assert coerce(text, float, "--zoo-eps") == pytest.approx(value)
    assert RunSpec(dataset="fashion-mnist", eps=coerce(text, float, "--eps")).eps == pytest.approx(value)


@pytest.mark.parametrize("text", ["1/0", "8/", "x/255", "inf/1"])
def test_bad_fractions_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="--zoo-eps"):
        coerce(text, float, "--zoo-eps")


def test_alth_level_count_is_bounded_up_front(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    """--prune-fraction 1e-300 never ended (a level count of 4.6e300)."""
    assert main(["run", "--method", "alth", "--sparsity", "0.9", "--prune-fraction", "1e-300", "--out",
                 str(tmp_path), *TINY_FLAGS]) == 2
    one_error_line(capsys, "prune_fraction", "levels")
    assert not tmp_path.exists() or not any(tmp_path.iterdir())
    assert levels_needed(0.9, 0.2) == 11 and levels_needed(0.0, 0.2) == 0


def test_alth_level_count_is_exact_per_layer_sizes() -> None:
    """A slow output layer that holds few weights does not slow the schedule much (the up-front bound used the
    slowest fraction and refused such settings); one that holds many does, and the schedule itself refuses it."""
    plan = level_schedule(0.9, [10_000, 10], [0.2, 1e-4])
    assert len(plan) <= MAX_LEVELS and plan[-1][0] == pytest.approx(0.9)
    with pytest.raises(ValueError, match="more than 200 pruning levels"):
        level_schedule(0.99, [100, 10], [0.5, 1e-3])
    spec = RunSpec(method="alth", sparsity=0.9, hparams={"scope": "layer", "output_prune_fraction": 1e-4})
    METHODS.get("alth").validate(spec)


def test_an_absurd_grid_is_counted_and_refused_before_expanding(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """4 keys x 30 values with --dry-run printed nothing for 120 s: the count comes first."""
    grid = {"seed": list(range(30)), "epochs": list(range(1, 31)), "n_train": list(range(100, 130)),
            "batch_size": list(range(10, 40))}
    path = tmp_path / "big.yaml"
    path.write_text(yaml.safe_dump({"name": "big", "fixed": {"arch": "mlp"}, "grid": grid}))
    with pytest.raises(ValueError, match="810,000 points"):
        expand({"arch": "mlp"}, grid)
    assert main(["sweep", str(path), "--out", str(tmp_path / "out"), "--dry-run"]) == 2
    one_error_line(capsys, "810,000", "--max-runs")
    small = {"seed": [0, 1], "epochs": [1, 2]}
    assert len(expand({"arch": "mlp"}, small, max_runs=4)) == 4
    with pytest.raises(ValueError, match="4 points, more than the 3 allowed"):
        expand({"arch": "mlp"}, small, max_runs=3)


def test_a_fifo_is_not_read(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """`bench table fifo.csv` with no writer hung forever; YAML too."""
    fifo = tmp_path / "fifo.csv"
    os.mkfifo(fifo)
    assert main(["table", str(fifo)]) == 2
    one_error_line(capsys, "fifo.csv", "not a regular file")
    assert main(["sweep", str(fifo), "--dry-run", "--out", str(tmp_path / "out")]) == 2
    one_error_line(capsys, "fifo.csv", "not a regular file")


def test_a_last_batch_of_one_joins_the_one_before(tiny_bundle: Any) -> None:
    """--n-train 129 (a last batch of one) failed in BatchNorm; every example is still used once."""
    split = tiny_bundle.train.head(129)
    sizes = [len(y) for _x, y in batches(split, 128, torch.device("cpu"), min_last=2)]
    assert sizes == [129]
    assert [len(y) for _x, y in batches(split, 128, torch.device("cpu"))] == [128, 1]
    assert [len(y) for _x, y in batches(tiny_bundle.train.head(130), 128, torch.device("cpu"), min_last=2)] == [128, 2]


def test_n_train_129_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The conv net (BatchNorm1d before its classifier) trains on 129 examples in batches of 128, and the
    learning-rate schedule counts the one merged batch that runs (it counted two, ending at half its course)."""
    counted: List[int] = []
    original = train_module._scheduler

    def recording(opt: Any, cfg: Any, steps_per_epoch: int) -> Any:
        counted.append(steps_per_epoch)
        return original(opt, cfg, steps_per_epoch)

    monkeypatch.setattr(train_module, "_scheduler", recording)
    assert main(["run", "--arch", "convnet", "--width", "0.1", "--epochs", "1", "--train-steps", "1", "--n-train",
                 "129", "--n-eval", "20", "--eval-attacks", "fgsm", "--device", "cpu", "--out", str(tmp_path)]) == 0
    assert counted and set(counted) == {1}


@pytest.mark.parametrize("flags, words", [
    (["--batch-size", "1"], ["--batch-size 1", "BatchNorm1d"]),
    (["--val-fraction", "1e-9", "--n-train", "0"], ["--val-fraction", "no validation example"]),
    (["--val-fraction", "0.99999999", "--n-train", "0"], ["no training example", "--n-train"]),
])
def test_nothing_to_train_or_select_with_is_refused_before_writing(flags: List[str], words: List[str], tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture) -> None:
    """These ran to exit 0 without a word (no validation or training example), or left files behind (batch 1)."""
    assert main(["run", "--arch", "convnet", "--width", "0.1", "--epochs", "1", "--train-steps", "1", "--n-eval",
                 "20", "--eval-attacks", "fgsm", "--device", "cpu", "--out", str(tmp_path / "out"), *flags]) == 2
    one_error_line(capsys, *words)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("field", ["lr", "weight_decay"])
def test_settings_beyond_float32_are_refused(field: str) -> None:
    """--lr 1e300 and --weight-decay 1e300 overflowed inside the optimiser (a traceback)."""
    with pytest.raises(ValueError, match=f"{field} must be at most"):
        RunSpec(**{field: 1e300})
    RunSpec(**{field: 1e3})


def test_an_overflowing_step_is_a_divergence(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A float32-representable lr whose step still overflows stops with the divergence error, not a traceback."""
    assert main(["run", "--method", "lwm", "--sparsity", "0.5", "--lr", "1e38", "--finetune-lr-scale", "1e10",
                 "--out", str(tmp_path), *TINY_FLAGS]) != 0
    err = capsys.readouterr().err
    assert "Traceback" not in err and "lower --lr" in err


BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{n}: &{n} [{', '.join(['*' + p] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi"))


@pytest.mark.parametrize("command", [["sweep", "{path}", "--dry-run"], ["check", "--preset", "{path}"],
                                     ["run", "--config", "{path}"]])
@pytest.mark.parametrize("content, words", [(BOMB, ["YAML nodes", "aliases"]),
                                            ("1: 2\nnull: 3\n", ["key 1", "must be text"]),
                                            ("fixed: {1: 2}\n", ["key 1", "must be text"])])
def test_yaml_bombs_and_non_text_keys_are_one_line(command: List[str], content: str, words: List[str],
                                                   tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """An alias bomb ran out of memory after ~50 s; {1: 2, null: 3} was a TypeError traceback."""
    path = tmp_path / "c.yaml"
    path.write_text(content)
    assert main([c.replace("{path}", str(path)) for c in command]) == 2
    one_error_line(capsys, *words)


def rows_file(tmp_path: Path, **overrides: Any) -> Path:
    """A minimal runs.csv of one ticket (PGD-20 and the worst case), cells overridden."""
    base = {"run_id": "a1b2c3d4e5f6", "method": "rst", "dataset": "fashion-mnist", "arch": "convnet", "width": 1.0,
            "target_sparsity": 0.9, "measured_sparsity": 0.9, "seed": 0, "norm": "Linf", "eps": 0.1, "version": "",
            "eot_samples": 1, "n_eval": 100, "clean_acc": 0.8, "flags": "", "status": "ok", **overrides}
    path = tmp_path / "runs.csv"
    pd.DataFrame([{**base, "attack": "pgd20", "robust_acc": 0.5},
                  {**base, "attack": "worst_case", "robust_acc": 0.4, "version": "pgd20"}]).to_csv(path, index=False)
    return path


@pytest.mark.parametrize("overrides, words", [({"target_sparsity": "abc"}, ["runs.csv line 2", "target_sparsity"]),
                                              ({"eps": "abc"}, ["runs.csv line 2", "eps", "not a number"]),
                                              ({"flags": "x" * 200_000}, ["runs.csv line", "field larger"])])
@pytest.mark.parametrize("command", [["table", "{csv}"], ["plot", "{csv}", "--out-dir", "{tmp}/p"],
                                     ["leaderboard", "{csv}", "--out", "{tmp}/lb"]])
def test_bad_cells_name_the_file_and_line(overrides: Any, words: List[str], command: List[str], tmp_path: Path,
                                          capsys: pytest.CaptureFixture) -> None:
    """target_sparsity 'abc' gave an empty table (exit 0); a 200 000-character cell a traceback."""
    path = rows_file(tmp_path, **overrides)
    args = [c.replace("{csv}", str(path)).replace("{tmp}", str(tmp_path)) for c in command]
    assert main(args) == 2
    one_error_line(capsys, *words)
    assert not (tmp_path / "p").exists() and not (tmp_path / "lb").exists()


def test_duplicated_and_torn_headers_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """`note,note` was silently renamed note.1; a file cut inside its header gave a junk column."""
    path = rows_file(tmp_path)
    text = path.read_text()
    header, rest = text.split("\n", 1)
    path.write_text(header + ",note,note\n" + "".join(line + ",a,b\n" for line in rest.splitlines()))
    assert main(["table", str(path)]) == 2
    one_error_line(capsys, "'note' appears twice")
    path.write_text(header + ",median_dist")
    assert main(["table", str(path)]) == 2
    one_error_line(capsys, "ends inside its header")


def test_an_invalid_board_writes_no_entry(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Rows with measured_sparsity 1.5 (or robust above clean) exited 2 but left entries/*.json behind."""
    for overrides in ({"measured_sparsity": 1.5}, {"clean_acc": 0.3}):
        path = rows_file(tmp_path, **overrides)
        assert main(["leaderboard", str(path), "--out", str(tmp_path / "lb")]) == 2
        capsys.readouterr()
        assert not list((tmp_path / "lb").rglob("*.json")) if (tmp_path / "lb").exists() else True


def test_export_refuses_a_width_of_infinity(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """width inf was exported as `Infinity` (not JSON)."""
    path = rows_file(tmp_path, width="inf")
    assert main(["export-robustbench", str(path), str(tmp_path / "rb")]) == 2
    one_error_line(capsys, "width", "not a finite number")
    assert not list((tmp_path / "rb").rglob("*.json")) if (tmp_path / "rb").exists() else True


@pytest.mark.parametrize("text, words", [(json.dumps(submission(width=10**400)), ["width", "too large"]),
                                         ("[" * 100_000 + "]" * 100_000, ["nested too deeply"]),
                                         (json.dumps(submission()).replace('"width": 1.0', '"width": NaN'),
                                          ["NaN", "not a number"])])
def test_hostile_submissions_are_one_line(text: str, words: List[str], tmp_path: Path,
                                          capsys: pytest.CaptureFixture) -> None:
    subs = tmp_path / "subs"
    subs.mkdir()
    (subs / "entry.json").write_text(text)
    assert main(["leaderboard", "--submissions", str(subs), "--out", str(tmp_path / "lb")]) == 2
    one_error_line(capsys, "entry.json", *words)


def test_an_entry_that_is_a_folder_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    subs = tmp_path / "subs"
    (subs / "entry.json").mkdir(parents=True)
    assert main(["leaderboard", "--submissions", str(subs), "--out", str(tmp_path / "lb")]) == 2
    one_error_line(capsys, "entry.json", "not a regular file")


@pytest.mark.parametrize("target", ["file", "readonly"])
def test_an_unwritable_output_is_one_line(target: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """An output path under a file, or a read-only folder: a traceback for run, table, plot, leaderboard."""
    path = rows_file(tmp_path)
    blocker = tmp_path / "blocker"
    if target == "file":
        blocker.write_text("a file")
        out = blocker / "sub"
    else:
        blocker.mkdir()
        blocker.chmod(0o555)
        out = blocker / "sub"
        if os.access(blocker, os.W_OK):
            pytest.skip("running as a user who can write into a read-only folder (root)")
    for args in (["table", str(path), "-o", str(out / "t.md")], ["plot", str(path), "--out-dir", str(out)],
                 ["leaderboard", str(path), "--out", str(out)]):
        assert main(args) == 2
        one_error_line(capsys, str(blocker))


@pytest.mark.parametrize("damage", ["truncate", "empty", "side-car"])
def test_a_damaged_evaluation_cache_is_recomputed_to_the_same_numbers(damage: str, tmp_path: Path) -> None:
    """A truncated or empty cache .npz, or a side-car `[1,2]`, was a traceback (after the cache was written)."""
    run = run_folder(tmp_path / "a", "rst")
    assert main(["eval", str(run), "--attacks", "pgd20,fgsm", "--n-eval", "30"]) == 0
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    damaged = tmp_path / "b" / "runs" / run.name
    stores, side_cars = sorted(damaged.rglob("*.npz")), sorted(damaged.rglob("*.json"))
    assert stores
    for path in stores:
        if damage == "truncate":
            path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
        elif damage == "empty":
            path.write_bytes(b"")
    if damage == "side-car":
        for path in side_cars:
            if path.name not in ("spec.json", "meta.json"):
                path.write_text("[1,2]")
    # Both copies evaluate 40 examples: the damaged one recomputes its cache, to the same numbers.
    for folder in (run, damaged):
        assert main(["eval", str(folder), "--attacks", "pgd20,fgsm", "--n-eval", "40"]) == 0
    got = [pd.read_csv(tmp_path / out / "runs.csv").query("n_eval == 40")[["attack", "clean_acc", "robust_acc"]]
           .reset_index(drop=True) for out in ("a", "b")]
    assert len(got[0]) >= 2 and got[0].equals(got[1])


def test_eval_checks_its_rows_file_before_attacking(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A runs.csv that is not UTF-8: the attack ran and was cached, then exit 2."""
    run = run_folder(tmp_path, "rst")
    (tmp_path / "runs.csv").write_bytes(b"run_id,attack\n\xff\xfe not utf-8 \x00\n")
    before = {p for p in run.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert main(["eval", str(run), "--attacks", "fgsm"]) == 2
    one_error_line(capsys, "runs.csv")
    assert {p for p in run.rglob("*") if p.is_file()} == before


def test_check_reference_must_be_the_csv(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """`bench check --reference SOMEDIR` was a traceback."""
    assert main(["check", "--reference", str(tmp_path), "--no-progress"]) == 2
    one_error_line(capsys, str(tmp_path), "not a file")


@pytest.mark.parametrize("cut", [0.5, 0.0])
def test_truncated_reference_flags_name_the_file(cut: float, tmp_path: Path) -> None:
    """A truncated tickets/<id>/flags.npz was a traceback (BadZipFile, EOFError)."""
    path = tmp_path / "flags.npz"
    np.savez(path, clean=np.ones(5, dtype=bool))
    blob = path.read_bytes()
    path.write_bytes(blob[: int(len(blob) * cut)])
    with pytest.raises(ValueError, match="flags.npz"):
        read_flags(path)


def test_ctrl_c_while_the_commands_import_is_one_line(monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture) -> None:
    """SIGINT during the imports (`timeout -s INT 3 bench run ...`) was a KeyboardInterrupt traceback."""
    def interrupted() -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_module, "build_parser", interrupted)
    assert main(["run", *TINY_FLAGS]) == 130
    one_error_line(capsys, "interrupted")


@pytest.mark.parametrize("flags, words", [
    (["--grid-span", "inf"], ["--grid-span", "finite"]),
    (["--grid-span", "nan"], ["--grid-span"]),
    (["--grid-span", "1e308"], ["--grid-span"]),
    (["--grid-points", "1000000000"], ["--grid-points"]),
    (["--steps", "1000000000"], ["--steps"]),
    (["--steps", "0"], ["--steps"]),
    (["--n-eval", "-1"], ["--n-eval"]),
])
def test_security_refuses_settings_that_never_end_or_make_no_curve(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                                   flags: List[str], words: List[str]) -> None:
    """bench security was not reachable in the first round: --grid-span inf gave eps inf and NaN rows, a
    billion grid points or FMN steps ran without end. One line, exit 2, no row and no cache written."""
    run = run_folder(tmp_path, "rst")
    before = (tmp_path / "runs.csv").read_bytes()
    files = sorted(p for p in tmp_path.rglob("*"))
    capsys.readouterr()
    assert main(["security", str(run), *flags]) == 2
    one_error_line(capsys, *words)
    assert (tmp_path / "runs.csv").read_bytes() == before and sorted(tmp_path.rglob("*")) == files
