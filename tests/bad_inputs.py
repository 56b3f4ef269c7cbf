"""Every known bad input to the ``bench`` CLI, and one runner shared by the test and the docs table.

``tests/test_bad_inputs.py`` runs each case through :func:`bench.cli.main` in
an empty folder and checks it: the exit code, one stderr line holding the
expected words, no traceback, and nothing written. ``scripts/bad_inputs_table.py``
runs the same cases with the same runner and writes ``docs/bad-inputs.md``;
the test checks that every row there is what it observed.

A case is a name, the arguments after ``bench``, the words its message must
contain, and an optional setup that writes files into the case's folder. A
setup also gets an output folder holding one finished tiny run (``runs.csv``
and ``runs/<run_id>/``), for the cases about existing runs.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import pickle
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple
from unittest import mock

from bench.cli import main

Setup = Callable[[Path, Path], None]
# A tiny run for the cases about existing runs (a few seconds on a CPU).
TINY_RUN = ["--arch", "mlp", "--width", "0.1", "--epochs", "1", "--train-steps", "1", "--n-train", "300",
            "--n-eval", "40", "--eval-attacks", "pgd20", "--device", "cpu", "--batch-size", "100"]


@dataclass(frozen=True)
class Case:
    """One bad input: what is typed, the words the one-line message must hold, the exit code."""

    name: str
    args: Tuple[str, ...]
    expect: str
    setup: Optional[Setup] = None
    code: int = 2
    # Run as on a machine without a GPU (torch.cuda.is_available() answers False), whatever this one has.
    no_gpu: bool = False

    @property
    def command(self) -> str:
        """The command line as a person types it."""
        return "bench " + " ".join(a if a and " " not in a else repr(a) for a in self.args)


@dataclass(frozen=True)
class Outcome:
    """What a case did: exit code, stderr lines, and the files it created or changed."""

    code: int
    lines: Tuple[str, ...]
    written: Tuple[str, ...]

    @property
    def message(self) -> str:
        """The last stderr line (the error)."""
        return self.lines[-1] if self.lines else ""


# ---------------------------------------------------------------------------
# Setups: files a case needs in its folder.
# ---------------------------------------------------------------------------

def write(name: str, content: Any) -> Setup:
    """Write ``content`` (text or bytes) to ``name`` in the case's folder."""

    def setup(d: Path, _finished: Path) -> None:
        (d / name).parent.mkdir(parents=True, exist_ok=True)
        data = content if isinstance(content, bytes) else str(content).encode()
        (d / name).write_bytes(data)

    return setup


def both(*setups: Setup) -> Setup:
    """Run several setups in order."""

    def setup(d: Path, finished: Path) -> None:
        for s in setups:
            s(d, finished)

    return setup


def finished_run(d: Path, finished: Path) -> None:
    """Copy the finished tiny run to ``d/results`` (``results/runs.csv`` and ``results/runs/<run_id>``)."""
    shutil.copytree(finished, d / "results")


def copied_run(d: Path, finished: Path) -> None:
    """The tiny run's folder copied to ``d/myrun``, outside any ``<out>/runs``."""
    shutil.copytree(next((finished / "runs").iterdir()), d / "myrun")


def tamper_run(change: Callable[[Path], None]) -> Setup:
    """The finished run in ``d/results`` with ``change`` applied to its run folder."""

    def setup(d: Path, finished: Path) -> None:
        finished_run(d, finished)
        change(next((d / "results" / "runs").iterdir()))

    return setup


def _edit_spec(**changes: Any) -> Callable[[Path], None]:
    """Change fields of a run's spec.json."""

    def change(run: Path) -> None:
        spec = json.loads((run / "spec.json").read_text())
        spec.update(changes)
        (run / "spec.json").write_text(json.dumps(spec))

    return change


def _truncate_ticket(run: Path) -> None:
    """Cut a run's ticket.pt in half, as a full disk would."""
    data = (run / "ticket.pt").read_bytes()
    (run / "ticket.pt").write_bytes(data[: len(data) // 2])


class _Bomb:
    """Unpickling this would run a shell command."""

    def __reduce__(self) -> Tuple[Any, Tuple[str]]:
        return (os.system, ("touch pwned",))


def _pickle_ticket(run: Path) -> None:
    """Replace a run's ticket.pt with a pickle that would run code."""
    with open(run / "ticket.pt", "wb") as fh:
        pickle.dump({"x": _Bomb()}, fh)


def rows_file(name: str, text: str) -> Setup:
    """A rows file: the finished run's header followed by ``text`` (``{header}`` is replaced by it)."""

    def setup(d: Path, finished: Path) -> None:
        header = (finished / "runs.csv").read_text().splitlines()[0]
        (d / name).parent.mkdir(parents=True, exist_ok=True)
        (d / name).write_text(text.replace("{header}", header))

    return setup


def submission(name: str = "subs/entry.json", **fields: Any) -> Setup:
    """A leaderboard submission: a valid entry with ``fields`` changed (None removes a field)."""
    entry: Dict[str, Any] = {
        "link": "https://example.org", "name": "theirs", "authors": "A. Author", "additional_data": False,
        "number_forward_passes": 1, "dataset": "fashion-mnist", "venue": "N/A", "architecture": "ConvNet",
        "eps": "0.1", "clean_acc": "82.00", "reported": "55.00", "autoattack_acc": "53.50", "unreliable": False,
        "footnote": None, "sparsity": 0.9, "density": 0.1, "width": 1.0, "method": "theirs", "randomized": False,
        "eot_iter": 1, "non_adaptive": False, "flags": "",
    }
    for key, value in fields.items():
        if value is None:
            entry.pop(key, None)
        else:
            entry[key] = value
    return write(name, json.dumps(entry))


def crafted_rows(**cells: str) -> Setup:
    """The finished run's rows with ``cells`` overwritten in every row, as ``rows.csv``."""

    def setup(d: Path, finished: Path) -> None:
        with open(finished / "runs.csv", newline="") as fh:
            records = list(csv.DictReader(fh))
        for r in records:
            r.update(cells)
        with open(d / "rows.csv", "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(records[0]))
            writer.writeheader()
            writer.writerows(records)

    return setup


# ---------------------------------------------------------------------------
# The cases.
# ---------------------------------------------------------------------------

def _flag_cases(flag: str, values: Sequence[Tuple[str, str]], field: Optional[str] = None) -> List[Case]:
    """``bench run --FLAG VALUE`` for each (value, expected words)."""
    return [Case(f"--{flag} {value}", ("run", f"--{flag}", value), expect) for value, expect in values]


NUMBERS = (
    _flag_cases("sparsity", [("1", "sparsity must be in [0, 1)"), ("nan", "sparsity: must be a finite number"),
                             ("-0.1", "sparsity must be in [0, 1)"), ("inf", "sparsity: must be a finite number"),
                             ("lots", "sparsity: cannot read 'lots' as float")])
    + _flag_cases("eps", [("0", "eps must be in (0, 1]"), ("-1", "eps must be in (0, 1]"), ("2", "eps must be in (0, 1]"),
                          ("nan", "eps: must be a finite number"), ("inf", "eps: must be a finite number"), ("8/255x", "eps")])
    + _flag_cases("width", [("-1", "width must be > 0"), ("0", "width must be > 0"), ("nan", "width: must be a finite number"),
                            ("inf", "width: must be a finite number"), ("1000", "lower --width")])
    + _flag_cases("seed", [("123456789012345678901234", "seed must be in [0, 2**31)"), ("-1", "seed must be in [0, 2**31)"),
                           ("1.5", "seed"), ("abc", "seed")])
    + _flag_cases("epochs", [("-1", "epochs must be >= 0"), ("1.5", "epochs"), ("x", "epochs")])
    + _flag_cases("batch-size", [("0", "batch_size must be > 0"), ("-5", "batch_size must be > 0"), ("x", "batch_size")])
    + _flag_cases("lr", [("inf", "lr: must be a finite number"), ("0", "lr must be a finite number > 0"),
                         ("-0.1", "lr must be a finite number > 0"), ("nan", "lr: must be a finite number")])
    + _flag_cases("momentum", [("-5", "momentum must be in [0, 1)"), ("1", "momentum must be in [0, 1)"),
                               ("nan", "momentum: must be a finite number")])
    + _flag_cases("weight-decay", [("nan", "weight_decay: must be a finite number"),
                                   ("-1", "weight_decay must be a finite number >= 0"),
                                   ("inf", "weight_decay: must be a finite number")])
    + _flag_cases("train-step-size", [("inf", "train_step_size: must be a finite number"),
                                      ("0", "train_step_size must be a finite number > 0"),
                                      ("-1", "train_step_size must be a finite number > 0")])
    + _flag_cases("trades-beta", [("nan", "trades_beta: must be a finite number"),
                                  ("-1", "trades_beta must be a finite number >= 0"),
                                  ("inf", "trades_beta: must be a finite number")])
    + _flag_cases("train-steps", [("-1", "train_steps must be >= 0"), ("x", "train_steps")])
    + _flag_cases("val-fraction", [("0", "val_fraction must be in (0, 1)"), ("1", "val_fraction must be in (0, 1)"),
                                   ("-0.5", "val_fraction must be in (0, 1)"), ("nan", "val_fraction: must be a finite number")])
    + _flag_cases("n-train", [("-1", "n_train must be >= 0"), ("x", "n_train")])
    + _flag_cases("n-eval", [("-1", "n_eval must be >= 0")])
    + _flag_cases("n-eval-aa", [("-1", "n_eval_aa must be >= 0")])
    + _flag_cases("protocol", [("1", "protocol 1 runs were made by an older version"), ("x", "protocol")])
)

CHOICES = [
    Case("unknown method", ("run", "--method", "magic"), "invalid choice: 'magic'"),
    Case("unknown dataset", ("run", "--dataset", "imagenet"), "invalid choice: 'imagenet'"),
    Case("unknown architecture", ("run", "--arch", "vgg99"), "invalid choice: 'vgg99'"),
    Case("unknown data source", ("run", "--data-source", "web"), "invalid choice: 'web'"),
    Case("unknown optimizer", ("run", "--optimizer", "lbfgs"), "invalid choice: 'lbfgs'"),
    Case("unknown lr schedule", ("run", "--lr-schedule", "warm"), "invalid choice: 'warm'"),
    Case("unknown craft-bn mode", ("run", "--craft-bn", "mixed"), "invalid choice: 'mixed'"),
    Case("unknown trainer", ("run", "--trainer", "fast"), "invalid choice: 'fast'"),
    Case("--device cudaXYZ", ("run", "--device", "cudaXYZ"), "unknown device 'cudaXYZ'"),
    Case("--device tpu", ("run", "--device", "tpu"), "unknown device 'tpu'"),
    Case("--device cuda without a GPU", ("run", "--device", "cuda"), "no CUDA GPU is available", no_gpu=True),
    Case("--device cuda:1 without a GPU", ("run", "--device", "cuda:1"), "no CUDA GPU is available", no_gpu=True),
    Case("unknown flag", ("run", "--prune-rate", "0.9"), "unrecognized arguments: --prune-rate"),
    Case("hyperparameter choice", ("run", "--method", "lwm", "--scope", "neuron"), "scope"),
    Case("hyperparameter of another method", ("run", "--method", "rst", "--prune-fraction", "0.3"),
         "--prune-fraction is a flag of alth, not of rst"),
    Case("hyperparameter not a number", ("run", "--method", "alth", "--prune-fraction", "lots"), "prune_fraction"),
    Case("r2s candidate sparsity = 1", ("run", "--method", "r2s", "--candidates", "0.9,1.0"), "candidates"),
    Case("r2s zero draws", ("run", "--method", "r2s", "--draws", "0"), "draws"),
    Case("random weights of an unknown kind", ("run", "--method", "random", "--weights", "gold"), "unknown random weights 'gold'"),
    Case("linear-bias not a boolean", ("run", "--linear-bias", "maybe"), "linear_bias"),
    Case("unknown command", ("fly",), "invalid choice: 'fly'"),
    Case("no command", (), "the following arguments are required: command"),
]

ATTACK_CASES = [
    Case("unknown attack", ("run", "--eval-attacks", "pgd20,zoo"), "unknown attack 'zoo'"),
    Case("--eval-attacks with no attack", ("run", "--eval-attacks", ","), "eval_attacks must name at least one attack"),
    Case("--eval-attacks empty", ("run", "--eval-attacks", ""), "eval_attacks must name at least one attack"),
    Case("unknown attack option", ("run", "--eval-attacks", "pgd:stepz=3"), "unknown setting 'stepz'"),
    Case("attack option not a number", ("run", "--eval-attacks", "pgd:steps=x"), "steps"),
    Case("attack with zero steps", ("run", "--eval-attacks", "pgd:steps=0"), "steps"),
    Case("attack option without a value", ("run", "--eval-attacks", "pgd:steps"), "pgd:steps"),
    Case("attack with a negative step size", ("run", "--eval-attacks", "pgd:step_size=-1"), "step_size"),
]

COMBINATIONS = [
    Case("dense-at with sparsity > 0", ("run", "--method", "dense-at", "--sparsity", "0.5"), "--sparsity must be 0"),
    Case("dense-at with the clean trainer", ("run", "--method", "dense-at", "--trainer", "clean"), "needs an adversarial trainer"),
    Case("MNIST has no embedded subset", ("run", "--dataset", "mnist", "--data-source", "embedded"), "has no embedded subset"),
    Case("full data requested, none found", ("run", "--dataset", "cifar10", "--arch", "resnet18"), "full cifar10 data not found"),
    Case("full CIFAR-100 in an empty --data-root", ("run", "--dataset", "cifar100", "--arch", "resnet18", "--data-root", "no-data"),
         "full cifar100 data not found"),
    Case("imagefolder without --num-classes", ("run", "--dataset", "imagefolder"), "needs num_classes >= 2"),
    Case("--num-classes on CIFAR-10", ("run", "--dataset", "cifar10", "--num-classes", "5"),
         "num_classes is fixed by dataset 'cifar10' (10)"),
    Case("--image-size on MNIST", ("run", "--dataset", "mnist", "--image-size", "32"), "image_size is fixed by dataset 'mnist'"),
    Case("imagefolder --image-size 8", ("run", "--dataset", "imagefolder", "--num-classes", "3", "--image-size", "8"),
         "image_size must be 0"),
    Case("imagefolder with no train/ and val/", ("run", "--dataset", "imagefolder", "--num-classes", "3", "--data-root", "imgs"),
         "no image folder found: looked for train/<class>/<image>", lambda here, _runs: (here / "imgs").mkdir()),
]

YAML = [
    Case("unknown YAML key", ("run", "--config", "p.yaml"), "unknown run spec key(s): prune_rate",
         write("p.yaml", "method: rst\nprune_rate: 0.1\n")),
    Case("YAML that is not a mapping", ("run", "--config", "p.yaml"), "must be a YAML mapping", write("p.yaml", "- rst\n- 0.9\n")),
    Case("YAML with a python tag", ("run", "--config", "p.yaml"), "is not valid YAML",
         write("p.yaml", "!!python/object/apply:os.system ['true']\n")),
    Case("YAML syntax error", ("run", "--config", "p.yaml"), "is not valid YAML", write("p.yaml", "method: [rst\n")),
    Case("missing config file", ("run", "--config", "nope.yaml"), "config file not found: nope.yaml"),
    Case("--config is a directory", ("run", "--config", "."), "is a directory, not a YAML file"),
    Case("--config is a binary file", ("run", "--config", "p.yaml"), "is not a text file",
         write("p.yaml", b"\xff\xfe\x00\x01binary")),
    Case("empty YAML", ("run", "--config", "p.yaml"), "is empty", write("p.yaml", "")),
    Case("YAML epochs: true", ("run", "--config", "p.yaml"), "epochs: cannot read True as int", write("p.yaml", "epochs: true\n")),
    Case("YAML sparsity: '0.9x'", ("run", "--config", "p.yaml"), "sparsity", write("p.yaml", "sparsity: 0.9x\n")),
    Case("YAML sparsity: null", ("run", "--config", "p.yaml"), "sparsity", write("p.yaml", "sparsity: null\n")),
    Case("YAML hparams: 3", ("run", "--config", "p.yaml"), "must be a mapping of hyperparameters", write("p.yaml", "hparams: 3\n")),
    Case("YAML hparams: [1, 2]", ("run", "--config", "p.yaml"), "must be a mapping of hyperparameters",
         write("p.yaml", "hparams: [1, 2]\n")),
    Case("YAML hparams: ab", ("run", "--config", "p.yaml"), "must be a mapping of hyperparameters", write("p.yaml", "hparams: ab\n")),
    Case("YAML unknown hyperparameter", ("run", "--config", "p.yaml"), "prune_rate",
         write("p.yaml", "method: rst\nhparams: {prune_rate: 0.2}\n")),
    Case("YAML eval_attacks: 5", ("run", "--config", "p.yaml"), "expected a comma-separated list",
         write("p.yaml", "eval_attacks: 5\n")),
    Case("YAML method: 7", ("run", "--config", "p.yaml"), "method", write("p.yaml", "method: 7\n")),
]

ROWS_FILES = [
    Case("runs.csv that is not a rows file", ("run",), "is not a bench rows file",
         write("results/runs.csv", "this is,not\na rows file\n")),
    Case("runs.csv that is empty", ("run",), "results/runs.csv is empty", write("results/runs.csv", "")),
    Case("runs.csv with a torn line", ("run",), "results/runs.csv line 2 has", rows_file("results/runs.csv", "{header}\na,b\n")),
    Case("runs.csv that is a directory", ("run",), "results/runs.csv is a directory", write("results/runs.csv/x", "")),
]

EVAL = [
    Case("eval of a folder that is not a run", ("eval", "."), "has no finished ticket"),
    Case("eval of a missing folder", ("eval", "nowhere"), "nowhere has no finished ticket"),
    Case("eval with neither a run nor --zoo", ("eval",), "give a run folder (RUN_DIR), --zoo MODEL_NAME or --model SPEC"),
    Case("eval --model without --name", ("eval", "--model", "mypkg.nets:make"), "--model needs --name NAME"),
    Case("eval --model of a module that does not exist", ("eval", "--model", "no_such_pkg.nets:make", "--name", "x"),
         "importing module 'no_such_pkg.nets' failed"),
    Case("eval --model of a file that is no model", ("eval", "--model", "notes.txt", "--name", "x"),
         "not a model (expected a TorchScript file, a .pt2 program or module:factory)", write("notes.txt", "hello\n")),
    Case("eval of a run with a --model flag", ("eval", "results/runs/RUN", "--dataset", "mnist"), "--dataset goes with --model SPEC"),
    Case("eval with a run and --zoo", ("eval", "x", "--zoo", "Standard"), "give either RUN_DIR or --zoo MODEL_NAME"),
    Case("eval of a copied run without --out", ("eval", "myrun"), "give --out DIR", copied_run),
    Case("checkpoint that is a code-running pickle", ("eval", "results/runs/RUN"), "not a plain tensor checkpoint",
         tamper_run(_pickle_ticket)),
    Case("truncated ticket.pt", ("eval", "results/runs/RUN"), "ticket.pt", tamper_run(_truncate_ticket)),
    Case("spec.json that is not JSON", ("eval", "results/runs/RUN"), "spec.json",
         tamper_run(lambda run: (run / "spec.json").write_text("{not json"))),
    Case("spec.json with an unknown key", ("eval", "results/runs/RUN"), "prune_rate", tamper_run(_edit_spec(prune_rate=0.9))),
    Case("spec.json of an older protocol", ("eval", "results/runs/RUN"), "protocol", tamper_run(_edit_spec(protocol=1))),
    Case("spec.json with a bad value", ("eval", "results/runs/RUN"), "sparsity must be in [0, 1)",
         tamper_run(_edit_spec(sparsity=3))),
    Case("eval --n-eval -5", ("eval", "results/runs/RUN", "--n-eval", "-5"), "n_eval and n_eval_aa must be >= 0", finished_run),
    Case("eval --n-eval-aa -1", ("eval", "results/runs/RUN", "--n-eval-aa", "-1"), "n_eval and n_eval_aa must be >= 0",
         finished_run),
    Case("eval --attacks zoo", ("eval", "results/runs/RUN", "--attacks", "zoo"), "unknown attack 'zoo'", finished_run),
    Case("eval --n-eval x", ("eval", "results/runs/RUN", "--n-eval", "x"), "invalid int value: 'x'", finished_run),
    Case("compare with a missing run", ("compare", "results/runs/RUN", "nowhere"), "nowhere has no finished ticket",
         finished_run),
    Case("compare --level 1.5", ("compare", "results/runs/RUN", "results/runs/RUN", "--level", "1.5"),
         "--level must be in (0, 1)", finished_run),
    Case("compare --attacks zoo", ("compare", "results/runs/RUN", "results/runs/RUN", "--attacks", "zoo"),
         "unknown attack 'zoo'", finished_run),
    Case("security with a missing run", ("security", "nowhere"), "nowhere has no finished ticket"),
    Case("security --steps 0", ("security", "results/runs/RUN", "--steps", "0"), "--steps must be in [1, 10000]", finished_run),
    Case("security --n-eval -1", ("security", "results/runs/RUN", "--n-eval", "-1"), "--n-eval must be >= 0", finished_run),
    Case("security --grid-points 1", ("security", "results/runs/RUN", "--grid-points", "1"), "--grid-points must be in [2, 1000]",
         finished_run),
    Case("security --grid-span 0", ("security", "results/runs/RUN", "--grid-span", "0"), "--grid-span must be a finite number", finished_run),
    Case("security of a copied run without --out", ("security", "myrun"), "give --out DIR", copied_run),
]

SWEEP = [
    Case("unknown sweep key", ("sweep", "s.yaml"), "unknown sweep key(s) in s.yaml: grids",
         write("s.yaml", "fixed: {method: rst}\ngrids: {}\n")),
    Case("missing sweep file", ("sweep", "nope.yaml"), "nope.yaml"),
    Case("sweep that is not a mapping", ("sweep", "s.yaml"), "s.yaml", write("s.yaml", "- 1\n- 2\n")),
    Case("sweep grid that is not a mapping", ("sweep", "s.yaml"), "grid", write("s.yaml", "grid: [1, 2]\n")),
    Case("sweep grid value that is not a list", ("sweep", "s.yaml"), "seed", write("s.yaml", "grid: {seed: 3}\n")),
    Case("sweep grid with an empty list", ("sweep", "s.yaml"), "seed", write("s.yaml", "grid: {seed: []}\n")),
    Case("sweep grid of an unknown field", ("sweep", "s.yaml"), "prune_rate", write("s.yaml", "grid: {prune_rate: [0.1]}\n")),
    Case("sweep with a bad fixed value", ("sweep", "s.yaml"), "sparsity must be in [0, 1)",
         write("s.yaml", "fixed: {sparsity: 2}\n")),
    Case("sweep --dry-run with a torn runs.csv", ("sweep", "s.yaml", "--dry-run"), "results/runs.csv line 2 has",
         both(write("s.yaml", "fixed: {method: rst}\n"), rows_file("results/runs.csv", "{header}\na,b\n"))),
    Case("sweep --dry-run with an empty runs.csv", ("sweep", "s.yaml", "--dry-run"), "results/runs.csv is empty",
         both(write("s.yaml", "fixed: {method: rst}\n"), write("results/runs.csv", ""))),
    Case("sweep --jobs 0", ("sweep", "s.yaml", "--jobs", "0"), "jobs", write("s.yaml", "fixed: {method: rst}\n")),
    Case("sweep --jobs -1", ("sweep", "s.yaml", "--jobs", "-1"), "jobs", write("s.yaml", "fixed: {method: rst}\n")),
    Case("sweep --executor nope", ("sweep", "s.yaml", "--executor", "nope"), "invalid choice: 'nope'"),
]

TABLES = [
    Case("table of a missing file", ("table", "none.csv"), "results file not found: none.csv"),
    Case("table of an empty file", ("table", "r.csv"), "r.csv is empty", write("r.csv", "")),
    Case("table of a header-only file", ("table", "r.csv"), "r.csv: no rows", rows_file("r.csv", "{header}\n")),
    Case("table of a ragged file", ("table", "r.csv"), "r.csv line 2 has", rows_file("r.csv", "{header}\n1,2,3\n")),
    Case("table of a file without the columns", ("table", "r.csv"), "r.csv is not a bench rows file",
         write("r.csv", "run_id,attack\nx,pgd20\n")),
    Case("table of a binary file", ("table", "r.csv"), "r.csv", write("r.csv", b"\xff\xfe\x00\x01\x02")),
    Case("table --decimals -1", ("table", "--decimals", "-1"), "--decimals must be a whole number from 0 to 6"),
    Case("table --decimals x", ("table", "--decimals", "x"), "--decimals must be a whole number from 0 to 6"),
    Case("table --where without =", ("table", "results/runs.csv", "--where", "method"), "expected COLUMN=VALUE", finished_run),
    Case("table --where unknown column", ("table", "results/runs.csv", "--where", "colour=red"), "unknown column 'colour'",
         finished_run),
    Case("table --where matching nothing", ("table", "results/runs.csv", "--where", "method=hydra"),
         "--where 'method=hydra' leaves no rows; method holds: rst", finished_run),
    Case("table --attack nope", ("table", "results/runs.csv", "--attack", "nope"), "no rows for attack 'nope'", finished_run),
    Case("table --layout nope", ("table", "--layout", "nope"), "invalid choice: 'nope'"),
    Case("table --format nope", ("table", "--format", "nope"), "invalid choice: 'nope'"),
]

PLOTS = [
    Case("plot of a missing file", ("plot", "none.csv"), "results file not found: none.csv"),
    Case("plot of an empty file", ("plot", "r.csv"), "r.csv is empty", write("r.csv", "")),
    Case("plot of a header-only file", ("plot", "r.csv"), "r.csv: no rows", rows_file("r.csv", "{header}\n")),
    Case("plot of a ragged file", ("plot", "r.csv"), "r.csv line 2 has", rows_file("r.csv", "{header}\n1,2,3\n")),
    Case("plot --kind nope", ("plot", "--kind", "nope"), "invalid choice: 'nope'"),
    Case("plot --attacks nope", ("plot", "results/runs.csv", "--attacks", "nope"), "no rows for attack(s) nope", finished_run),
    Case("plot --where matching nothing", ("plot", "results/runs.csv", "--where", "width=3"), "leaves no rows", finished_run),
]

LEADERBOARD = [
    Case("leaderboard submission with a bad field", ("leaderboard", "--submissions", "subs", "--out", "lb"),
         "field 'clean_acc' must be str", submission(clean_acc=82.0)),
    Case("leaderboard submission missing a field", ("leaderboard", "--submissions", "subs", "--out", "lb"),
         "missing required field 'link'", submission(link=None)),
    Case("leaderboard submission with an unknown field", ("leaderboard", "--submissions", "subs", "--out", "lb"),
         "unknown field 'score'", submission(score=1)),
    Case("leaderboard submission that is not JSON", ("leaderboard", "--submissions", "subs", "--out", "lb"),
         "not valid JSON", write("subs/entry.json", "{nope")),
    Case("leaderboard submission that is a list", ("leaderboard", "--submissions", "subs", "--out", "lb"),
         "must be a JSON object", write("subs/entry.json", "[1, 2]")),
    Case("leaderboard submission percent > 100", ("leaderboard", "--submissions", "subs", "--out", "lb"),
         "between 0 and 100", submission(clean_acc="182.00")),
    Case("leaderboard submission robust above clean", ("leaderboard", "--submissions", "subs", "--out", "lb"),
         "is above clean_acc", submission(reported="90.00")),
    Case("leaderboard worst case above AutoAttack", ("leaderboard", "--submissions", "subs", "--out", "lb"),
         "'external' (52.00) is above autoattack_acc (5.00)", submission(external="52.00", autoattack_acc="5.00")),
    Case("leaderboard density not 1 - sparsity", ("leaderboard", "--submissions", "subs", "--out", "lb"),
         "field 'density' must equal 1 - sparsity", submission(density=0.5)),
    Case("leaderboard submission eps 0", ("leaderboard", "--submissions", "subs", "--out", "lb"),
         "field 'eps'", submission(eps="0")),
    Case("leaderboard unknown threat model", ("leaderboard", "--submissions", "subs", "--out", "lb"),
         "field 'threat_model' must be one of", submission(threat_model="L7")),
    Case("leaderboard submissions folder missing", ("leaderboard", "--submissions", "nope", "--out", "lb"),
         "submissions folder not found: nope"),
    Case("leaderboard --verify without a ticket", ("leaderboard", "--submissions", "subs", "--out", "lb", "--verify"),
         "--verify needs a 'ticket' field", submission()),
    Case("leaderboard --verify, ticket outside", ("leaderboard", "--submissions", "subs", "--out", "lb", "--verify"),
         "points outside the submissions folder", submission(ticket="../..")),
    Case("leaderboard --verify without --submissions", ("leaderboard", "results/runs.csv", "--out", "lb", "--verify"),
         "give --submissions DIR", finished_run),
    Case("leaderboard of a header-only file", ("leaderboard", "r.csv", "--out", "lb"), "r.csv: no rows",
         rows_file("r.csv", "{header}\n")),
    Case("leaderboard of a ragged file", ("leaderboard", "r.csv", "--out", "lb"), "r.csv line 2 has",
         rows_file("r.csv", "{header}\n1,2\n")),
    Case("leaderboard row with a traversing dataset", ("leaderboard", "rows.csv", "--out", "lb"), "dataset",
         crafted_rows(dataset="../../x")),
    Case("leaderboard row with an absolute dataset", ("leaderboard", "rows.csv", "--out", "lb"), "dataset",
         crafted_rows(dataset="/tmp/outside")),
    Case("leaderboard row with a traversing norm", ("leaderboard", "rows.csv", "--out", "lb"), "norm",
         crafted_rows(norm="../../../x")),
    Case("leaderboard row with a traversing run_id", ("leaderboard", "rows.csv", "--out", "lb"), "run_id",
         crafted_rows(run_id="../../../../x")),
]

OTHER = [
    Case("check without a reference file", ("check", "--reference", "none.csv"), "reference file not found: none.csv"),
    Case("check with a malformed reference", ("check", "--reference", "r.csv"), "reference r.csv lacks column(s)",
         write("r.csv", "run_id,attack\nx,pgd20\n")),
    Case("check with an empty reference", ("check", "--reference", "r.csv"), "r.csv", write("r.csv", "")),
    Case("check with a missing preset", ("check", "--preset", "nope.yaml"), "nope.yaml"),
    Case("export of a missing file", ("export-robustbench", "none.csv", "out"), "results file not found: none.csv"),
    Case("export of a header-only file", ("export-robustbench", "r.csv", "out"), "r.csv: no rows",
         rows_file("r.csv", "{header}\n")),
    Case("export row with a traversing run_id", ("export-robustbench", "rows.csv", "out"), "run_id",
         crafted_rows(run_id="../../../../x")),
    Case("zoo list of an unknown dataset", ("zoo", "list", "--dataset", "imagenet21k"), "imagenet21k"),
]

CASES: List[Case] = NUMBERS + CHOICES + ATTACK_CASES + COMBINATIONS + YAML + ROWS_FILES + EVAL + SWEEP + TABLES + PLOTS \
    + LEADERBOARD + OTHER


# ---------------------------------------------------------------------------
# The runner.
# ---------------------------------------------------------------------------

def make_finished_run(out: Path) -> Path:
    """Train and evaluate the tiny run into ``out`` (once per session); returns ``out``."""
    code = main(["run", "--out", str(out), *TINY_RUN])
    if code != 0:
        raise RuntimeError(f"the tiny run for the bad-input cases failed with exit code {code}")
    return out


def _snapshot(folder: Path) -> Dict[str, Tuple[int, int]]:
    """Size and modification time of every file under ``folder``."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}


def run_case(case: Case, folder: Path, finished: Path) -> Outcome:
    """Run ``bench ARGS`` in-process in the empty ``folder`` (no data root); what it printed and wrote."""
    if case.setup is not None:
        case.setup(folder, finished)
    run_dirs = sorted((folder / "results" / "runs").glob("*")) if (folder / "results" / "runs").is_dir() else []
    args = [a.replace("results/runs/RUN", str(run_dirs[0].relative_to(folder)) if run_dirs else "results/runs/RUN")
            for a in case.args]
    before = _snapshot(folder)
    err = io.StringIO()
    old_cwd, old_root = os.getcwd(), os.environ.get("BENCH_DATA_ROOT")
    os.chdir(folder)
    os.environ["BENCH_DATA_ROOT"] = str(folder / "no-data")
    try:
        no_gpu = mock.patch("torch.cuda.is_available", return_value=False) if case.no_gpu else contextlib.nullcontext()
        with no_gpu, contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                code = main(args)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 2
    finally:
        os.chdir(old_cwd)
        if old_root is None:
            os.environ.pop("BENCH_DATA_ROOT", None)
        else:
            os.environ["BENCH_DATA_ROOT"] = old_root
    after = _snapshot(folder)
    written = tuple(sorted(name for name, stamp in after.items() if before.get(name) != stamp))
    text = err.getvalue().replace(str(folder.resolve()), "<tmp>").replace(str(folder), "<tmp>")
    for run in run_dirs:
        text = text.replace(run.name, "RUN")
    return Outcome(code, tuple(line for line in text.splitlines() if line.strip()), written)


def table_row(number: int, case: Case, outcome: Outcome) -> str:
    """The docs table row of a case."""
    return f"| {number} | {case.name} | `{case.command}` | {outcome.code} | {outcome.message.replace('|', '/')} |"
