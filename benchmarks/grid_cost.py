"""Where the published grid's time goes, and what the shared stages save (issue 29), from the committed records.

Every row of ``results/published/runs.csv`` carries its run's training compute (``train_seconds``: every stage
the run depends on, a reused shared stage counted at what it cost the run that built it) and each attack's
evaluation seconds (``seconds``); ``sweeps/<name>.csv`` holds each job's wall seconds as it actually ran (the
dense stage, ALTH's levels and R2S's candidates reused where another run built them). So:

* **without sharing** = per run, training + evaluation, as if every run trained every stage itself;
* **with sharing** = the sweeps' job seconds as run (one torch thread per job: seconds = core-seconds);

and the split by family and by stage kind says where the time goes. Run folders present locally
(``runs/<id>/meta.json``, or ``--runs``) give the cost of a run whose job seconds were lost: its training wall
time as run (reused stages not counted) plus its evaluation: on the 39 grid runs that have both (2026-12-06),
0.95-0.99 of the job's seconds (the job also loads data, writes rows and times the ticket).

    python benchmarks/grid_cost.py [--out results/published] [--sweeps published-grid,...] [--runs DIR]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import List, Optional, Sequence

import pandas as pd

from bench.core.results import read_rows

CASCADE_ONLY = ("worst_case",)


def job_costs(out: Path, sweeps: Sequence[str]) -> pd.DataFrame:
    """One line per finished run of the sweeps (done: ran by the sweep, with its wall seconds; skipped: its rows
    were there)."""
    frames = []
    for name in sweeps:
        path = out / "sweeps" / f"{name}.csv"
        if path.exists():
            status = pd.read_csv(path, dtype={"run_id": str})
            frames.append(status[status["status"].isin(["done", "skipped"])].assign(sweep=name))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["run_id", "method", "seconds"])


def run_costs(rows: pd.DataFrame, run_ids: Sequence[str]) -> pd.DataFrame:
    """Per run: training compute (shared stages included) and evaluation seconds (sum over its attack rows)."""
    sub = rows[rows["run_id"].isin(run_ids)]
    # Each attack's seconds once: rows of a smaller n_eval read from the cache and a security curve's one row
    # per eps repeat the seconds of the pass that made them.
    per_attack = sub[~sub["attack"].isin(CASCADE_ONLY)].groupby(["run_id", "attack"])["seconds"].max()
    evals = per_attack.groupby("run_id").sum()
    first = sub.drop_duplicates("run_id").set_index("run_id")
    return pd.DataFrame({"method": first["method"], "sparsity": first["target_sparsity"], "width": first["width"],
                         "train": pd.to_numeric(first["train_seconds"]), "eval": evals}).fillna(0.0)


def main(argv: Optional[List[str]] = None) -> int:
    """Print the cost table (core-hours) of the finished jobs."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="results/published", help="the sweeps' output folder")
    parser.add_argument("--sweeps", default="published-core,published-methods,published-random,published-grid,"
                        "published-r2s",
                        help="comma-separated sweep names whose finished jobs are counted")
    parser.add_argument("--runs", default=None,
                        help="where the run folders are (default <out>/runs; a sweep's worktree has them)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    run_folders = Path(args.runs) if args.runs else out / "runs"
    jobs = job_costs(out, [s for s in args.sweeps.split(",") if s])
    if jobs.empty:
        print("no finished jobs yet")
        return 0
    costs = run_costs(read_rows(out / "runs.csv"), list(jobs["run_id"]))
    done = jobs[jobs["status"] == "done"].drop_duplicates("run_id", keep="last").set_index("run_id")["seconds"]
    costs["as_run"] = done.reindex(costs.index)
    costs["alone"] = costs["train"] + costs["eval"]
    # A run with no job seconds (its status line was lost to a resume before the fix, or its rows came from
    # elsewhere): its run folder's training wall time (reused stages not counted) plus its evaluation.
    sources = []
    for run_id in costs.index:
        meta = run_folders / run_id / "meta.json"
        info = json.loads(meta.read_text()) if meta.exists() else {}
        if pd.notna(costs.at[run_id, "as_run"]):
            sources.append("job")
        elif isinstance(info, dict) and "wall_seconds" in info:
            costs.at[run_id, "as_run"] = float(info["wall_seconds"]) + costs.at[run_id, "eval"]
            sources.append("run folder")
        else:
            sources.append("unknown")
    costs["source"] = sources
    known = costs[costs["source"] != "unknown"]
    by = known.groupby("method")[["train", "eval", "alone", "as_run"]].sum() / 3600
    by["runs"] = known.groupby("method").size()
    by.loc["all"] = by.sum()
    pd.set_option("display.width", 160)
    print(f"{len(costs)} finished run(s) of {args.sweeps} in {out}; core-hours (one torch thread per job)")
    print("as run from: " + ", ".join(f"{n} {k}" for k, n in costs["source"].value_counts().items())
          + " (unknown ones left out of the table)")
    print(by.round(3).to_string())
    total = by.loc["all"]
    print(f"\nwithout sharing (every run trains every stage itself): {total['alone']:.2f} core-h; "
          f"with the shared stages, as run: {total['as_run']:.2f} core-h "
          f"(ratio {total['alone'] / max(total['as_run'], 1e-9):.2f}); training {total['train'] / total['alone']:.0%} "
          f"and evaluation {total['eval'] / total['alone']:.0%} of the unshared cost")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
