"""Paper vs here: each published claim of the field beside this benchmark's measured counterpart, with intervals.

The papers' figures are quoted from ../shared/REFERENCE.md (the source is named in each row); every figure of
the "here" column is computed from committed tidy rows (``results/*/runs.csv``), selected by the run ids of the
committed sweep files, so nothing measured is typed in. Writes the Markdown table between the markers in
``results/README.md`` (``--check``: exit 1 when the committed table differs from a fresh rebuild):

    python scripts/paper_vs_here.py            # rewrite the table in results/README.md
    python scripts/paper_vs_here.py --check    # CI: is it up to date?

Intervals: one configuration's accuracy pools the examples of its seeds (accuracy x n_eval correct of n_eval,
summed) with a 95 % Wilson interval; a gap between two attacks on the same examples is the share of examples
robust under the weaker attack but broken by the stronger one (a count, so again a Wilson interval); a
difference between two models on the same examples uses Newcombe's hybrid score interval for two
proportions (which ignores the pairing, so it is conservative).
"""
from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

import pandas as pd

from bench.core.results import read_rows, wilson_interval
from bench.core.rows import counted
from bench.sweep.grid import load_sweep

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "results" / "README.md"
START, END = "<!-- paper-vs-here:start -->", "<!-- paper-vs-here:end -->"


@dataclass(frozen=True)
class Arm:
    """One configuration of a committed sweep under one attack: its rows of every seed."""

    rows: str
    sweep: Optional[str]  # None: every run of the method and sparsity in ``rows`` (a file of one experiment)
    method: str
    sparsity: float
    attack: str
    n_eval: Optional[int] = None
    # For worst_case rows: only those whose attacks (the version, '+'-joined) include this one.
    covers: Optional[str] = None

    def select(self) -> pd.DataFrame:
        """One row per seed: the sweep's run ids of this method and sparsity, this attack, the given (or the
        largest) n_eval, the newest row."""
        df = read_rows(ROOT / self.rows)
        if self.sweep is not None:
            ids = {s.run_id for s in load_sweep(ROOT / self.sweep).specs
                   if s.method == self.method and abs(s.sparsity - self.sparsity) < 1e-9}
            df = df[df["run_id"].isin(ids)]
        else:
            df = df[(df["method"] == self.method) & ((df["target_sparsity"] - self.sparsity).abs() < 1e-9)]
        df = df[df["attack"] == self.attack]
        if self.covers is not None:
            covered = [self.covers in str(v).split("+") for v in df["version"].fillna("")]
            df = df[pd.Series(covered, index=df.index, dtype=bool)]
        if self.n_eval is not None:
            df = df[pd.to_numeric(df["n_eval"]) == self.n_eval]
        return counted(df).sort_values(["n_eval", "created_at"], kind="mergesort").drop_duplicates("run_id", keep="last")

    def counts(self) -> Tuple[int, int, int]:
        """(robust examples, examples, seeds) pooled over the seeds present."""
        df = self.select()
        n = pd.to_numeric(df["n_eval"])
        return int(round(float((df["robust_acc"] * n).sum()))), int(n.sum()), len(df)


def pct(value: float) -> str:
    """A share as a percent with one decimal."""
    return f"{100 * value:.1f}"


def interval_text(k: int, n: int) -> str:
    """'61.2 [58.1, 64.2] %' for k of n examples."""
    if n == 0:
        return "not run"
    lo, hi = wilson_interval(k / n, n)
    return f"{pct(k / n)} [{pct(lo)}, {pct(hi)}]"


def newcombe_interval(k1: int, n1: int, k2: int, n2: int) -> Tuple[float, float, float]:
    """p1 - p2 with Newcombe's hybrid score 95 % interval (method 10 of Newcombe 1998, from Wilson intervals)."""
    p1, p2 = k1 / n1, k2 / n2
    (l1, u1), (l2, u2) = wilson_interval(p1, n1), wilson_interval(p2, n2)
    d = p1 - p2
    return d, d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2), d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)


def arm_text(arm: Arm) -> str:
    """'61.2 [58.1, 64.2] (3 seeds x 1000)'."""
    k, n, seeds = arm.counts()
    if seeds == 0:
        return "not run"
    return f"{interval_text(k, n)} ({seeds} seed{'s' if seeds > 1 else ''} x {n // seeds})"


def difference_text(a: Arm, b: Arm) -> str:
    """Model difference a - b in points with its Newcombe interval."""
    (k1, n1, s1), (k2, n2, s2) = a.counts(), b.counts()
    if not s1 or not s2:
        return "not run"
    d, lo, hi = newcombe_interval(k1, n1, k2, n2)
    return f"{100 * d:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}] points"


def gap_text(weaker: Arm, stronger: Arm) -> str:
    """The points by which ``weaker`` overstates ``stronger`` on the same examples (stronger's robust examples
    are a subset of weaker's: the worst case includes it), with the Wilson interval of that share."""
    (k1, n1, s1), (k2, n2, s2) = weaker.counts(), stronger.counts()
    if not s1 or not s2:
        return "not run"
    same_runs = set(weaker.select()["run_id"]) == set(stronger.select()["run_id"])
    if n1 != n2 or k2 > k1 or not same_runs:
        raise ValueError(f"{weaker.attack} and {stronger.attack} rows are not of the same runs and examples ({n1} vs {n2})")
    lo, hi = wilson_interval((k1 - k2) / n1, n1)
    return f"{pct((k1 - k2) / n1)} [{pct(lo)}, {pct(hi)}] points"


# The committed rows and sweeps each claim is measured on.
PUB, PUB_CORE, PUB_MNIST = "results/published/runs.csv", "configs/sweeps/published-core.yaml", "configs/sweeps/published-mnist.yaml"
STUDY = "results/study/runs.csv"
R2S = "results/r2s/runs.csv"
AA_N = 500


def rst(attack: str, sweep: str = PUB_CORE, n: Optional[int] = None, covers: Optional[str] = None) -> Arm:
    """RST at sparsity 0.9 of a published sweep under ``attack``."""
    return Arm(PUB, sweep, "rst", 0.9, attack, n, covers)


def dense(attack: str, sweep: str = PUB_CORE, n: Optional[int] = None, covers: Optional[str] = None) -> Arm:
    """Dense PGD-AT of a published sweep under ``attack``."""
    return Arm(PUB, sweep, "dense-at", 0.0, attack, n, covers)


def claim_rst_vs_dense() -> str:
    """RST-0.9 against dense AT on both datasets, under PGD-20 and the worst case."""
    parts = []
    for name, sweep in (("Fashion-MNIST eps 0.1", PUB_CORE), ("MNIST eps 0.3", PUB_MNIST)):
        for label, attack, n in (("PGD-20", "pgd20", None), ("worst case with AutoAttack", "worst_case", AA_N)):
            parts.append(f"{name}, {label}: RST {arm_text(rst(attack, sweep, n))} vs dense {arm_text(dense(attack, sweep, n))}; "
                         f"RST − dense {difference_text(rst(attack, sweep, n), dense(attack, sweep, n))}")
    return "<br>".join(parts)


def claim_interior_peak() -> str:
    """RST's PGD-20 accuracy at each sparsity of the study, and where it is highest."""
    study = "configs/sweeps/study-sparsity.yaml"
    core = "configs/sweeps/study-core.yaml"
    parts, pooled = [], {}
    for s in (0.5, 0.8, 0.9, 0.95, 0.99):
        arm = Arm(STUDY, core if s == 0.9 else study, "rst", s, "pgd20")
        k, n, _ = arm.counts()
        if n:
            pooled[s] = k / n
        parts.append(f"{s:g}: {arm_text(arm)}")
    peak = f"; highest at {max(pooled, key=lambda s: pooled[s]):g}" if pooled else ""
    return "PGD-20 by sparsity (study, width 0.5): " + "; ".join(parts) + peak


def claim_r2s() -> str:
    """The R2S switch under non-adaptive and adaptive attacks."""
    # results/r2s/ holds one experiment (scripts/r2s_evidence.sh: bench run commands, no sweep file).
    sweep = None
    arms = [("non-adaptive (transfer from one candidate)", "r2s-nonadaptive"), ("PGD-20 on the switch", "pgd20"),
            ("EOT-PGD", "eot-pgd"), ("worst case with AutoAttack-rand (n 200)", "worst_case")]
    texts = [f"{label}: {arm_text(Arm(R2S, sweep, 'r2s', 0.9, attack))}" for label, attack in arms]
    return "R2S (8 RSTs, Fashion-MNIST, 1 seed): " + "; ".join(texts)


def claim_aa_rerun() -> str:
    """RST-0.9 under PGD-20 against the worst case with AutoAttack, on the same examples."""
    n = AA_N
    wc = rst("worst_case", n=n, covers="pgd20")
    return (f"RST-0.9 on the first {n}: PGD-20 {arm_text(rst('pgd20', n=n))}, worst case with AutoAttack "
            f"{arm_text(wc)}; PGD-20 overstates by {gap_text(rst('pgd20', n=n), wc)}")


def claim_hydra_lwm() -> str:
    """HYDRA against LWM at 0.9: the study's PGD-20 and the published worst case."""
    core = "configs/sweeps/study-core.yaml"
    hydra, lwm = Arm(STUDY, core, "hydra", 0.9, "pgd20"), Arm(STUDY, core, "lwm", 0.9, "pgd20")
    study = f"PGD-20 at 0.9 (study): HYDRA {arm_text(hydra)} vs LWM {arm_text(lwm)}; HYDRA − LWM {difference_text(hydra, lwm)}"
    # The published protocol's worst case (AutoAttack on 500), where its sweep got to.
    methods = "configs/sweeps/published-methods.yaml"
    hydra_wc, lwm_wc = Arm(PUB, methods, "hydra", 0.9, "worst_case", AA_N), Arm(PUB, methods, "lwm", 0.9, "worst_case", AA_N)
    return (f"{study}<br>worst case with AutoAttack on the first {AA_N} (published): HYDRA {arm_text(hydra_wc)} vs "
            f"LWM {arm_text(lwm_wc)}; HYDRA − LWM {difference_text(hydra_wc, lwm_wc)}")


def claim_pgd50_gap() -> str:
    """PGD-50 against the worst case with AutoAttack, on the same examples."""
    n = AA_N
    parts = []
    for label, arm in (("RST-0.9", rst), ("dense", dense)):
        wc = arm("worst_case", n=n, covers="pgd50")
        parts.append(f"{label}: PGD-50 {arm_text(arm('pgd50', n=n))} vs worst case {arm_text(wc)}; "
                     f"PGD-50 overstates by {gap_text(arm('pgd50', n=n), wc)}")
    return f"Fashion-MNIST, first {n}: " + "<br>".join(parts)


# (claim, the paper's figure and source, the measurement here)
CLAIMS: Sequence[Tuple[str, str, Callable[[], str]]] = (
    ("RST at sparsity 0.9 ≈ dense PGD-AT",
     "ResNet-18 CIFAR-10 PGD-20: RST ≈ 47 (keep 0.1, figure) vs dense 50.19 (RST paper, Fu et al. 2021)",
     claim_rst_vs_dense),
    ("RST's robust accuracy peaks at an interior sparsity",
     "ResNet-18: best ≈ 47.7 at sparsity 0.8; ≈ 46 at 0.5, ≈ 47 at 0.9, ≈ 45.8 at 0.95, ≈ 37.6 at 0.99 (RST paper, figure)",
     claim_interior_peak),
    ("R2S reaches 63.9 under PGD-20",
     "ResNet-18 CIFAR-10: 77.49 clean / 63.93 PGD-20; the RST transfer matrix's off-diagonal mean is 64.4 (RST paper)",
     claim_r2s),
    ("AutoAttack re-run of RST (APB)",
     "ResNet-18 CIFAR-10 at 90 %: 60.9 clean / 14.3 AutoAttack (eps 0.031), against ≈ 47 PGD-20 in the RST paper",
     claim_aa_rerun),
    ("HYDRA > LWM at 90 %",
     "WRN-28-4 CIFAR-10 robust accuracy: HYDRA 55.2 vs LWM 53.8 (HYDRA paper, Sehwag et al. 2020)",
     claim_hydra_lwm),
    ("PGD-50 overstates robustness against AutoAttack",
     "HYDRA WRN-28-10 (extra data), 90 %: PGD-50 62.24 vs AutoAttack 57.14, a 5.1-point gap (HYDRA / RobustBench)",
     claim_pgd50_gap),
)


def build_table() -> str:
    """The Markdown table (and its caption), from the committed rows."""
    lines = ["| claim | paper's figure (source) | here: measured, % [95 % interval] |", "|---|---|---|"]
    lines += [f"| {claim} | {paper} | {measure()} |" for claim, paper, measure in CLAIMS]
    caption = ("Here: conv net (width 0.5, 8 epochs per stage, PGD-7 training) under one protocol; accuracies pool "
               "the examples of every seed (95 % Wilson interval); model differences: Newcombe's hybrid score "
               "interval (conservative for paired examples); attack gaps on the same examples: Wilson interval of "
               "the share of examples only the stronger attack broke. Built by `python scripts/paper_vs_here.py`.")
    return "\n".join(lines) + "\n\n" + caption + "\n"


def with_table(text: str, table: str) -> str:
    """``text`` with the block between the markers replaced by ``table``."""
    if START not in text or END not in text:
        raise ValueError(f"{README} has no {START} ... {END} block")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{table}{END}{tail}"


def main(argv: Optional[List[str]] = None) -> int:
    """Rewrite (or with --check, compare) the table in results/README.md; the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if results/README.md's table is not up to date")
    args = parser.parse_args(argv)
    text = README.read_text(encoding="utf-8")
    new = with_table(text, build_table())
    if args.check:
        if new != text:
            print("results/README.md: the paper-vs-here table is stale; run python scripts/paper_vs_here.py", file=sys.stderr)
            return 1
        return 0
    README.write_text(new, encoding="utf-8")
    print(f"wrote the paper-vs-here table in {README}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

