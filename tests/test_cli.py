"""The CLI end to end: a tiny `bench run`, resume without duplicates, and bad input."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import List

import pandas as pd
import pytest
import torch

import bench.data.sources as sources_mod
from bench import load_ticket
from bench.cli import main

TINY_FLAGS = ["--arch", "mlp", "--width", "0.1", "--epochs", "1", "--train-steps", "1", "--n-train", "300",
              "--n-eval", "60", "--eval-attacks", "pgd20,cw20", "--device", "cpu", "--batch-size", "100"]


def run_cli(args: List[str]) -> int:
    """Call the CLI in-process and return its exit code (argparse errors included)."""
    try:
        return main(args)
    except SystemExit as exc:
        return int(exc.code)


def test_tiny_run_writes_rows_and_resumes(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "res"
    assert run_cli(["run", "--method", "rst", "--sparsity", "0.9", "--out", str(out), *TINY_FLAGS]) == 0
    df = pd.read_csv(out / "runs.csv")
    assert list(df["attack"]) == ["pgd20", "cw20", "worst_case"] or set(df["attack"]) >= {"pgd20", "cw20"}
    for col in ("run_id", "method", "dataset", "arch", "width", "target_sparsity", "measured_sparsity", "seed",
                "attack", "eps", "steps", "n_eval", "clean_acc", "robust_acc", "seconds", "created_at",
                "git_commit", "torch_version", "device"):
        assert col in df.columns, col
    assert (df["robust_acc"] <= df["clean_acc"]).all()
    assert df["robust_acc"].between(0, 1).all() and df["clean_acc"].between(0, 1).all()
    assert (df["measured_sparsity"] - 0.9).abs().max() < 0.005
    assert (df["eps"] == 0.1).all() and (df["n_eval"] == 60).all()
    # The run folder holds the spec, a safe-loadable ticket and a log.
    run_dir = out / "runs" / df["run_id"][0]
    assert json.loads((run_dir / "spec.json").read_text())["sparsity"] == 0.9
    assert isinstance(torch.load(run_dir / "ticket.pt", weights_only=True), dict)
    assert (run_dir / "log.txt").exists()
    model = load_ticket(run_dir)
    assert not model.training
    logits = model(torch.rand(3, 1, 28, 28))
    assert logits.shape == (3, 10) and not torch.allclose(logits.softmax(1).sum(1), logits.sum(1))
    # Rerunning the identical spec reuses the ticket and adds no rows.
    mtime = (run_dir / "ticket.pt").stat().st_mtime_ns
    assert run_cli(["run", "--method", "rst", "--sparsity", "0.9", "--out", str(out), *TINY_FLAGS]) == 0
    assert len(pd.read_csv(out / "runs.csv")) == len(df)
    assert (run_dir / "ticket.pt").stat().st_mtime_ns == mtime
    assert "0 new row(s)" in capsys.readouterr().out


def test_yaml_preset_with_flag_override(tmp_path: Path) -> None:
    cfg = tmp_path / "p.yaml"
    cfg.write_text("method: rst\nsparsity: 0.5\narch: mlp\nwidth: 0.1\nepochs: 1\ntrain_steps: 1\nn_train: 200\n"
                   "n_eval: 30\neval_attacks: [pgd20]\ndevice: cpu\nhparams:\n  weight_init: kaiming-normal\n")
    out = tmp_path / "res"
    assert run_cli(["run", "--config", str(cfg), "--sparsity", "0.8", "--out", str(out)]) == 0
    df = pd.read_csv(out / "runs.csv")
    assert set(df["target_sparsity"]) == {0.8}
    assert json.loads(df["hparams"][0])["weight_init"] == "kaiming-normal"


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No Debian copy, no env root, and a torchvision download that fails as offline."""
    monkeypatch.setattr(sources_mod, "DEBIAN_ROOT", tmp_path / "no-debian")
    monkeypatch.delenv(sources_mod.ENV_ROOT, raising=False)

    def no_network(slug: str) -> None:
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz")

    monkeypatch.setattr(sources_mod, "torchvision_download", no_network)


BAD_INPUTS = {
    # Choices come from the registries through argparse, which names the flag and lists them.
    "unknown method": (["--method", "magic"], "argument --method: invalid choice: 'magic' (choose from 'alth'"),
    "unknown dataset": (["--dataset", "imagenet"], "argument --dataset: invalid choice: 'imagenet' (choose from 'cifar10'"),
    "unknown arch": (["--arch", "vgg99"], "argument --arch: invalid choice: 'vgg99' (choose from 'convnet'"),
    "unknown trainer": (["--trainer", "mart"], "argument --trainer: invalid choice: 'mart' (choose from 'clean'"),
    "unknown attack": (["--eval-attacks", "pgd20,zoo"], "unknown attack 'zoo'; choices:"),
    "sparsity 1": (["--sparsity", "1"], "sparsity must be in [0, 1)"),
    "sparsity nan": (["--sparsity", "nan"], "sparsity: must be a finite number"),
    "sparsity text": (["--sparsity", "lots"], "cannot read 'lots' as float"),
    "eps zero": (["--eps", "0"], "eps must be in (0, 1]"),
    "eps negative": (["--eps", "-0.03"], "eps must be in (0, 1]"),
    "hparam of another method": (["--method", "rst", "--nonexistent-flag", "1"], None),
    "cuda without gpu": (["--device", "cuda"], "no CUDA GPU is available"),
    "full data offline": (["--data-source", "full"], "full fashion-mnist data not found"),
    "mnist embedded": (["--dataset", "mnist", "--data-source", "embedded"], "has no embedded subset"),
    "missing config": (["--config", "/nonexistent/preset.yaml"], "config file not found"),
    "config is a directory": (["--config", "/tmp"], "is a directory"),
    "lr inf": (["--lr", "inf"], "lr: must be a finite number"),
    "momentum negative": (["--momentum", "-5"], "momentum must be in [0, 1)"),
    "weight decay nan": (["--weight-decay", "nan"], "weight_decay: must be a finite number"),
    "train step size inf": (["--train-step-size", "inf"], "train_step_size: must be a finite number"),
    "trades beta nan": (["--trades-beta", "nan"], "trades_beta: must be a finite number"),
    "24-digit seed": (["--seed", "123456789012345678901234"], "seed must be in [0, 2**31)"),
    "device cudaXYZ": (["--device", "cudaXYZ"], "unknown device 'cudaXYZ'"),
    "no attacks": (["--eval-attacks", ","], "eval_attacks must name at least one attack"),
}


@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
def test_bad_input_exits_2_and_writes_nothing(name: str, tmp_path: Path, offline: None,
                                              monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    flags, message = BAD_INPUTS[name]
    out = tmp_path / "res"
    assert run_cli(["run", "--out", str(out), *TINY_FLAGS, *flags]) == 2
    err = capsys.readouterr().err.strip()
    if message is not None:
        assert message in err
        assert len(err.splitlines()) == 1, err
    assert not (out / "runs.csv").exists()
    assert not (out / "runs").exists() or not any((out / "runs").iterdir())


def test_unknown_yaml_key_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cfg = tmp_path / "p.yaml"
    cfg.write_text("method: rst\nprune_rate: 0.1\n")
    assert run_cli(["run", "--config", str(cfg), "--out", str(tmp_path / "res")]) == 2
    assert "unknown run spec key(s): prune_rate" in capsys.readouterr().err
    assert not (tmp_path / "res").exists()


def test_help_explains_units(capsys: pytest.CaptureFixture) -> None:
    assert run_cli(["run", "--help"]) == 0
    text = capsys.readouterr().out
    assert "fraction of ZEROS" in text and "pixel units" in text


def test_list_shows_every_family(capsys: pytest.CaptureFixture) -> None:
    assert run_cli(["list"]) == 0
    text = capsys.readouterr().out
    for title in ("methods:", "datasets:", "architectures:", "attacks:"):
        assert title in text
    assert "rst" in text and "fashion-mnist" in text and "pgd20" in text


def run_help(capsys: pytest.CaptureFixture, *words: str) -> str:
    """What ``bench run ... --help`` prints (exit 0)."""
    with pytest.raises(SystemExit) as exc:
        main(["run", *words])
    assert exc.value.code == 0
    return capsys.readouterr().out


def flag_help(text: str, flag: str) -> str:
    """One flag's help in a --help text, its wrapped lines joined."""
    flat = " ".join(text.split())
    return re.split(r" --[a-z-]+ [A-Z]+ ", flat.split(f" {flag} ", 1)[1], maxsplit=1)[0]


def test_run_help_shows_the_chosen_methods_flags_with_its_defaults(capsys: pytest.CaptureFixture,
                                                                    tmp_path: Path) -> None:
    """Every method's flags shared one namespace: --method rst --help listed ALTH's flags, and a flag's help
    stated one method's default for all. Now: the shared flags and M's own, M's defaults, wherever --help stands."""
    rst = run_help(capsys, "--method", "rst", "--help")
    assert "--weight-init" in rst and "--sparsity" in rst and "--out" in rst
    assert "--prune-fraction" not in rst and "--rewind" not in rst
    alth = run_help(capsys, "--help", "--method", "alth")
    assert "--prune-fraction" in alth and "--weight-init" not in alth
    # A name two methods share shows each one's own default.
    hydra = run_help(capsys, "--method", "hydra", "--help")
    assert "[default: 0.1]" in flag_help(hydra, "--finetune-lr-scale")
    assert "[default: 1.0]" in flag_help(rst, "--finetune-lr-scale")
    # The method may come from a preset.
    preset = tmp_path / "p.yaml"
    preset.write_text("method: alth\nsparsity: 0.8\n")
    assert "--prune-fraction" in run_help(capsys, "--config", str(preset), "--help")


def test_a_flag_of_another_method_names_its_method(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    """--prune-fraction with --method hydra: one line naming alth, exit 2, nothing written."""
    assert main(["run", "--method", "hydra", "--prune-fraction", "0.3", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "--prune-fraction is a flag of alth, not of hydra" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()
    # A flag two methods share is accepted for both.
    assert main(["run", "--method", "lwm", "--start-from", "last", "--epochs", "-1", "--out", str(tmp_path / "o")]) == 2
    assert "start" not in capsys.readouterr().err
