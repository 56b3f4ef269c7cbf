"""The seed-aware training gate: retrain the reference specs, compare seed means with the reference's spread.

The reference (``results/reference/reference.csv``) holds, per *base* (a
reference spec without its seed), attack and metric, the mean and standard
deviation over its seeds (at least :data:`MIN_SEEDS`). ``bench check``
retrains every seed and compares means of the same seeds:

- per base, ``d = mean_now - mean_ref`` has standard error
  ``se = sqrt(2 / n) * s`` where ``n`` is the number of seeds and ``s`` the
  reference's seed std, floored at the binomial noise ``sqrt(p (1 - p) / n_eval)``
  of one run (three seeds can underestimate the spread). A base fails when
  ``|d| > PER_BASE_SIGMAS * se``;
- pooled over the bases with inverse-variance weights ``w_b = 1 / se_b^2``,
  ``D = sum_b w_b d_b / sum_b w_b`` has ``SE = 1 / sqrt(sum_b w_b)`` and fails
  when ``|D| > POOLED_SIGMAS * SE``: a systematic change moves every base the
  same way (``D`` is that shift whatever the weights) and is caught well below
  any single base's noise; the quietest bases weigh most.

On one machine the same seeds retrain bit-identically (``d = 0``); on
another CPU each seed moves like a reseed, which is what ``se`` measures.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Dict, List, Mapping, Sequence, Tuple

import pandas as pd

from bench.core.io import digest
from bench.core.rows import latest_per
from bench.spec import RunSpec

MIN_SEEDS = 3
PER_BASE_SIGMAS = 4.0
POOLED_SIGMAS = 3.0
METRICS = ("clean_acc", "robust_acc")
COLUMNS = ("base", "method", "dataset", "arch", "width", "target_sparsity", "attack", "n_eval", "metric", "mean",
           "std", "seeds")


def base_of(spec: RunSpec) -> str:
    """The id of a spec without its seed (the seeds of one base are compared together)."""
    return digest({k: v for k, v in spec.canonical().items() if k != "seed"})


def seed_stats(rows: pd.DataFrame, specs: Sequence[RunSpec], attacks: Sequence[str]) -> pd.DataFrame:
    """Mean, std and seed list per (base, attack, metric) of the rows of ``specs``."""
    by_run = {s.run_id: s for s in specs}
    sub = rows[rows["run_id"].isin(list(by_run)) & rows["attack"].isin(list(attacks))]
    # One row per (run, attack): the one on the spec's n_eval examples (rows of other counts are older evaluations).
    wanted = sub.apply(lambda r: str(r["n_eval"]) == str(by_run[r["run_id"]].n_eval) or by_run[r["run_id"]].n_eval == 0,
                       axis=1) if len(sub) else pd.Series([], dtype=bool)
    sub = latest_per(sub[wanted], ("run_id", "attack"))
    out = []
    groups: Dict[Tuple[str, str], List[Tuple[int, Mapping[str, float], RunSpec]]] = {}
    for _, r in sub.iterrows():
        spec = by_run[r["run_id"]]
        groups.setdefault((base_of(spec), r["attack"]), []).append(
            (spec.seed, {m: float(r[m]) for m in METRICS}, spec))
    for (base, attack), members in sorted(groups.items()):
        members.sort(key=lambda m: m[0])
        spec = members[0][2]
        n_eval = int(sub[sub["run_id"] == spec.run_id]["n_eval"].iloc[0])
        for metric in METRICS:
            values = [m[1][metric] for m in members]
            out.append({"base": base, "method": spec.method, "dataset": spec.dataset, "arch": spec.arch,
                        "width": spec.width, "target_sparsity": spec.sparsity, "attack": attack, "n_eval": n_eval,
                        "metric": metric, "mean": statistics.fmean(values),
                        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                        "seeds": "+".join(str(m[0]) for m in members)})
    return pd.DataFrame(out, columns=list(COLUMNS))


@dataclass(frozen=True)
class TrainLine:
    """One gated quantity of the training gate."""

    label: str
    attack: str
    metric: str
    reference: float
    now: float
    se: float
    sigmas: float
    seeds: str

    @property
    def delta(self) -> float:
        """Current minus reference mean."""
        return self.now - self.reference

    @property
    def allowed(self) -> float:
        """The largest |delta| that passes."""
        return self.sigmas * self.se

    @property
    def verdict(self) -> str:
        """pass, FAIL, or MISSING (no current value)."""
        if math.isnan(self.now):
            return "MISSING"
        return "pass" if abs(self.delta) <= self.allowed + 1e-12 else "FAIL"

    def text(self) -> str:
        """One line: what, reference, now, delta, allowed, verdict."""
        return (f"train {self.label:<34} {self.attack:<6} {self.metric:<10} seeds {self.seeds:<6} "
                f"ref {self.reference:.4f}  now {self.now:.4f}  delta {self.delta:+.4f}  "
                f"allowed ±{self.allowed:.4f} ({self.sigmas:g} se)  {self.verdict}")


def standard_error(row: Mapping[str, float], n_seeds: int) -> float:
    """Standard error of a difference of two n-seed means: ``sqrt(2 / n) * max(seed std, binomial noise)``."""
    p, n_eval = float(row["mean"]), int(row["n_eval"])
    noise = math.sqrt(max(p * (1 - p), 1e-4) / max(n_eval, 1))
    return math.sqrt(2.0 / n_seeds) * max(float(row["std"]), noise)


def training_gate(reference: pd.DataFrame, now: pd.DataFrame, skip_bases: Sequence[str] = ()) -> List[TrainLine]:
    """Per-base and pooled lines comparing current seed means with the reference's."""
    lines: List[TrainLine] = []
    current = {(r["base"], r["attack"], r["metric"]): (float(r["mean"]), str(r["seeds"])) for _, r in now.iterrows()}
    pooled: Dict[Tuple[str, str], List[Tuple[float, float, float]]] = {}
    for _, r in reference.iterrows():
        if r["base"] in set(skip_bases):
            continue
        seeds = str(r["seeds"])
        n_seeds = len(seeds.split("+"))
        se = standard_error(r, n_seeds)
        value, now_seeds = current.get((r["base"], r["attack"], r["metric"]), (math.nan, ""))
        if now_seeds and now_seeds != seeds:
            value = math.nan
        label = f"{r['base']} {r['method']} {r['dataset']} s={r['target_sparsity']}"
        lines.append(TrainLine(label, r["attack"], r["metric"], float(r["mean"]), value, se, PER_BASE_SIGMAS, seeds))
        pooled.setdefault((r["attack"], r["metric"]), []).append((float(r["mean"]), value, se))
    # The pooled line per (attack, metric): a systematic shift across every base, inverse-variance weighted.
    for (attack, metric), members in sorted(pooled.items()):
        weights = [1.0 / m[2] ** 2 for m in members]
        total = sum(weights)
        ref_mean = sum(w * m[0] for w, m in zip(weights, members)) / total
        now_mean = sum(w * m[1] for w, m in zip(weights, members)) / total
        lines.append(TrainLine(f"pooled over {len(members)} base(s)", attack, metric, ref_mean, now_mean,
                               1.0 / math.sqrt(total), POOLED_SIGMAS, "all"))
    return lines


def check_reference_seeds(reference: pd.DataFrame) -> None:
    """Every base of a training reference needs at least :data:`MIN_SEEDS` seeds (``ValueError`` otherwise)."""
    for _, r in reference.iterrows():
        if len(str(r["seeds"]).split("+")) < MIN_SEEDS:
            raise ValueError(f"training reference base {r['base']} ({r['method']}) has seeds {r['seeds']}: "
                             f"the gate needs at least {MIN_SEEDS}")
