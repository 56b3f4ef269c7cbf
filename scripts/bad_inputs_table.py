"""Run every known bad input through the real CLI and write docs/bad-inputs.md.

Each case runs `bench ...` in a fresh temporary folder and records the exit
code and the first line of stderr, so the table is what the program really does.

    python scripts/bad_inputs_table.py
"""
from __future__ import annotations

import os
import pickle
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable, List, Optional, Tuple

ROOT = Path(__file__).resolve().parent.parent
Setup = Optional[Callable[[Path], None]]


def _write(name: str, text: str) -> Callable[[Path], None]:
    """Setup step: write a file into the case's folder."""

    def write(d: Path) -> None:
        (d / name).parent.mkdir(parents=True, exist_ok=True)
        (d / name).write_text(text)

    return write


def _pickle_bomb(d: Path) -> None:
    """A run folder whose checkpoint is a pickle that would run code."""
    import json

    from bench.spec import RunSpec

    spec = RunSpec(arch="mlp").resolve()
    run = d / "runs" / "abc"
    run.mkdir(parents=True)
    (run / "spec.json").write_text(json.dumps(spec.to_dict()))
    (run / "meta.json").write_text("{}")
    (d / "runs" / spec.run_id).symlink_to(run)
    with open(run / "ticket.pt", "wb") as fh:
        pickle.dump({"x": _Bomb()}, fh)


class _Bomb:
    """Unpickling this would run a shell command."""

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, ("touch pwned",))


def _bad_submission(d: Path) -> None:
    """A leaderboard submission with a wrong-typed field."""
    (d / "subs").mkdir()
    (d / "subs" / "entry.json").write_text('{"name": "x", "dataset": "cifar10", "clean_acc": "lots"}')


CASES: List[Tuple[str, List[str], Setup]] = [
    ("unknown method", ["run", "--method", "magic"], None),
    ("unknown dataset", ["run", "--dataset", "imagenet"], None),
    ("unknown architecture", ["run", "--arch", "vgg99"], None),
    ("unknown attack", ["run", "--eval-attacks", "pgd20,zoo"], None),
    ("sparsity = 1", ["run", "--sparsity", "1"], None),
    ("sparsity NaN", ["run", "--sparsity", "nan"], None),
    ("sparsity not a number", ["run", "--sparsity", "lots"], None),
    ("eps <= 0", ["run", "--eps", "0"], None),
    ("negative width", ["run", "--width", "-1"], None),
    ("dense-at with sparsity > 0", ["run", "--method", "dense-at", "--sparsity", "0.5"], None),
    ("--device cuda without a GPU", ["run", "--device", "cuda"], None),
    ("full data requested, none found", ["run", "--dataset", "cifar10", "--arch", "resnet18"], None),
    ("MNIST has no embedded subset", ["run", "--dataset", "mnist", "--data-source", "embedded"], None),
    ("unknown YAML key", ["run", "--config", "p.yaml"], _write("p.yaml", "method: rst\nprune_rate: 0.1\n")),
    ("YAML that is not a mapping", ["run", "--config", "p.yaml"], _write("p.yaml", "- rst\n- 0.9\n")),
    ("YAML with a python tag", ["run", "--config", "p.yaml"], _write("p.yaml", "!!python/object/apply:os.system ['true']\n")),
    ("missing config file", ["run", "--config", "nope.yaml"], None),
    ("unknown sweep key", ["sweep", "s.yaml"], _write("s.yaml", "fixed: {method: rst}\ngrids: {}\n")),
    ("eval of a folder that is not a run", ["eval", "."], None),
    ("checkpoint that is a code-running pickle", ["eval", "runs/abc"], _pickle_bomb),
    ("check without a reference file", ["check", "--reference", "none.csv"], None),
    ("check with a malformed reference", ["check", "--reference", "r.csv"], _write("r.csv", "run_id,attack\nx,pgd20\n")),
    ("leaderboard submission with a bad field", ["leaderboard", "--submissions", "subs", "--out", "lb"], _bad_submission),
    ("unknown attack option", ["run", "--eval-attacks", "pgd:stepz=3"], None),
    ("--lr inf", ["run", "--lr", "inf"], None),
    ("--momentum -5", ["run", "--momentum", "-5"], None),
    ("--weight-decay nan", ["run", "--weight-decay", "nan"], None),
    ("--train-step-size inf", ["run", "--train-step-size", "inf"], None),
    ("--trades-beta nan", ["run", "--trades-beta", "nan"], None),
    ("24-digit seed", ["run", "--seed", "123456789012345678901234"], None),
    ("--device cudaXYZ", ["run", "--device", "cudaXYZ"], None),
    ("--eval-attacks with no attack", ["run", "--eval-attacks", ","], None),
    ("YAML epochs: true", ["run", "--config", "p.yaml"], _write("p.yaml", "epochs: true\n")),
    ("empty YAML", ["run", "--config", "p.yaml"], _write("p.yaml", "")),
    ("--config is a directory", ["run", "--config", "."], None),
    ("YAML hparams: 3", ["run", "--config", "p.yaml"], _write("p.yaml", "hparams: 3\n")),
    ("YAML eval_attacks: 5", ["run", "--config", "p.yaml"], _write("p.yaml", "eval_attacks: 5\n")),
    ("runs.csv that is not a rows file", ["run"], _write("results/runs.csv", "this is,not\na rows file\n")),
]


def run_case(args: List[str], setup: Setup) -> Tuple[int, str]:
    """Exit code and first stderr line of `bench ARGS` in a fresh folder."""
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        if setup is not None:
            setup(d)
        env = dict(os.environ, BENCH_DATA_ROOT=str(d / "no-data"), CUDA_VISIBLE_DEVICES="")
        proc = subprocess.run([sys.executable, "-m", "bench", *args], cwd=d, env=env, capture_output=True, text=True, timeout=300)
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        return proc.returncode, (lines[-1] if lines else "")


def main() -> None:
    """Run the cases and write the Markdown table."""
    rows = ["| # | bad input | command | exit | message |", "|---|---|---|---|---|"]
    for i, (name, args, setup) in enumerate(CASES, 1):
        code, message = run_case(args, setup)
        rows.append(f"| {i} | {name} | `bench {' '.join(args)}` | {code} | {message.replace('|', '/')} |")
        print(f"{code}  {name}: {message}")
    out = ROOT / "docs" / "bad-inputs.md"
    out.write_text("# Bad input and what it gets\n\nGenerated by `python scripts/bad_inputs_table.py`, which runs each "
                   "case through the real CLI in an empty folder (no data root, no GPU visible). Nothing is written to "
                   "the results in any of these cases.\n\n" + "\n".join(rows) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
