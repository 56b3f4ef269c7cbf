"""Wall time and peak memory of the default `bench run --method rst --sparsity 0.9`.

Runs the real command in a fresh output folder as a child process and reports
its wall time and the peak resident memory of the child (from the operating
system's accounting, `resource.getrusage(RUSAGE_CHILDREN)`), plus the run's
own rows. Usage:

    python benchmarks/default_run.py [--out /tmp/default-run] [extra bench run flags...]
"""
from __future__ import annotations

import argparse
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd


def main() -> None:
    """Run the default job once and print wall seconds, peak RSS and the rows."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="/tmp/default-run", help="fresh output folder (deleted first)")
    args, extra = parser.parse_known_args()
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "bench", "run", "--method", "rst", "--sparsity", "0.9", "--out", str(out), *extra]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    wall = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(proc.stdout)
    print(f"exit {proc.returncode}; wall {wall:.1f} s; peak RSS {peak_mb:.0f} MB")
    if (out / "runs.csv").exists():
        df = pd.read_csv(out / "runs.csv")
        print(df[["attack", "n_eval", "clean_acc", "robust_acc", "measured_sparsity", "seconds", "train_seconds"]].to_string(index=False))


if __name__ == "__main__":
    main()
