"""The published grid's findings, generated from the committed rows (issue 29): nothing here is typed in.

Reads ``results/published/runs.csv`` (Fashion-MNIST, the conv net) and writes
``results/published/findings.md``:

* the peak sparsity of each family at width 0.5 (PGD-20 and the per-example worst case), and its value at the
  highest sparsity swept;
* the smallest width at which RST at sparsity 0.9 is not significantly different from dense AT of the same
  width (two-sided Fisher's exact test on the pooled examples, level 0.05, as the tables' ‡);
* every cell where the worst case falls more than ``GAP`` points below PGD-20 (PGD-20 overstates robustness:
  gradient masking or a weak attack), flagged;
* the RST paper's sparsity and width findings beside their counterparts here;
* R2S (the random switch over RSTs) against RST-0.9 of the same seed (its own candidate from
  ``r2s-reference/runs.csv`` where that exists), under each of its non-adaptive and adaptive attacks, beside the
  paper's R2S claim.

Cells with fewer than 3 seeds say how many they have. ``--check`` exits 1 when the committed file differs from
a fresh rebuild (tests/test_published.py runs it).

    python scripts/grid_findings.py            # rewrite results/published/findings.md
    python scripts/grid_findings.py --check    # is it up to date?
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import pandas as pd
from scipy.stats import fisher_exact

from bench.core.results import read_rows, wilson_interval
from bench.core.rows import counted, latest_rows, row_norms

ROOT = Path(__file__).resolve().parents[1]
ROWS = ROOT / "results" / "published" / "runs.csv"
OUT = ROOT / "results" / "published" / "findings.md"
# R2S's reference: RST-0.9 retrained where R2S's candidates were, evaluated on R2S's examples
# (configs/sweeps/published-r2s-reference.yaml); without it R2S is set against the grid's RST-0.9 rows.
R2S_REFERENCE = ROOT / "results" / "published" / "r2s-reference" / "runs.csv"
DATASET = "fashion-mnist"
# The sparsity axis is swept at this width; the width axis at this RST sparsity.
AXIS_WIDTH, WIDTH_SPARSITY = 0.5, 0.9
# The grid's threat model (L-inf) budget on Fashion-MNIST.
EPS = 0.1
# Worst case this many points below PGD-20 flags a cell (PGD-20 overstates its robustness).
GAP = 10.0
LEVEL = 0.05
# The RST paper's figures (../shared/REFERENCE.md 1.1, read off its figure, about +-1 point): ResNet-18 on CIFAR-10,
# PGD-20 robust accuracy (%) by sparsity; dense PGD-AT and the best RST of ResNet-18 and WRN-34-10.
RST_PAPER_BY_SPARSITY = {0.5: 46.0, 0.8: 47.7, 0.9: 47.0, 0.95: 45.8, 0.99: 37.6}
RST_PAPER_WIDTH = {"ResNet-18": (47.7, 50.19), "WRN-34-10": (51.3, 52.27)}
# The RST paper's R2S and its best single RST (ResNet-18, CIFAR-10, PGD-20, %; REFERENCE.md 1.1).
R2S_PAPER, RST_PAPER_BEST = 63.93, 47.7
# R2S's attacks in the published sweep (configs/sweeps/published-r2s.yaml) and their per-example worst case, each
# with the RST row it is set against: on a deterministic network the PGD-20 variants are PGD-20, and the paper
# sets R2S (seemingly under a non-adaptive attack, REFERENCE.md 1.1) against RST under white-box PGD-20 (None: no
# counterpart). Any other attack with R2S rows follows them, without a counterpart.
R2S_VERSUS_RST = {"r2s-nonadaptive": "pgd20", "r2s-nonadaptive-full": "pgd20", "pgd20": "pgd20", "cw20": "cw20",
                  "eot-pgd": "pgd20", "ensemble-pgd": "pgd20", "autoattack-rand": None, "worst_case": "worst_case"}


def cells(df: pd.DataFrame, attack: str) -> pd.DataFrame:
    """One line per (method, sparsity, width): mean and std over seeds (%), seeds, pooled k of n, interval."""
    rows = latest_rows(df, attack)
    rows = rows[rows["dataset"] == DATASET]
    n = pd.to_numeric(rows["n_eval"])
    rows = rows.assign(pct=rows["robust_acc"] * 100, k=(rows["robust_acc"] * n).round(), n=n)
    out = rows.groupby(["method", "target_sparsity", "width"]).agg(
        mean=("pct", "mean"), std=("pct", "std"), seeds=("pct", "count"), k=("k", "sum"), n=("n", "sum"),
        n_eval=("n_eval", "max")).reset_index()
    bounds = [wilson_interval(k / n, int(n)) for k, n in zip(out["k"], out["n"])]
    out["lo"], out["hi"] = [100 * lo for lo, _ in bounds], [100 * hi for _, hi in bounds]
    return out


def seeds_note(count: int, of: int = 3) -> str:
    """' (n seeds)' when fewer than ``of``."""
    return "" if count >= of else f" ({count} seed{'s' if count != 1 else ''})"


def fmt(cell: pd.Series) -> str:
    """'m ± s [lo, hi]' with the seed count when under 3."""
    std = "" if pd.isna(cell["std"]) else f" ± {cell['std']:.1f}"
    return f"{cell['mean']:.1f}{std} [{cell['lo']:.1f}, {cell['hi']:.1f}]{seeds_note(int(cell['seeds']))}"


def same(a: pd.Series, b: pd.Series) -> Tuple[bool, float]:
    """Whether two cells' pooled accuracies do not differ (Fisher's exact test), and the p-value."""
    p = float(fisher_exact([[int(a["k"]), int(a["n"] - a["k"])], [int(b["k"]), int(b["n"] - b["k"])]])[1])
    return p >= LEVEL, p


def peak_section(table: Dict[str, pd.DataFrame]) -> List[str]:
    """Peak sparsity per family at the axis width, for PGD-20 and the worst case."""
    lines = [f"## Peak sparsity per family (width {AXIS_WIDTH:g})", "",
             "| family | attack | sparsities swept | peak sparsity | at the peak | at the highest sparsity swept |",
             "|---|---|---|---|---|---|"]
    for attack, frame in table.items():
        axis = frame[(frame["width"] == AXIS_WIDTH) & (frame["target_sparsity"] > 0)]
        for method, g in axis.groupby("method"):
            g = g.sort_values("target_sparsity")
            if len(g) < 2:
                continue
            best = g.loc[g["mean"].idxmax()]
            top = g.iloc[-1]
            swept = ", ".join(f"{s:g}" for s in g["target_sparsity"])
            lines.append(f"| {method} | {attack} | {swept} | {best['target_sparsity']:g} | {fmt(best)} | "
                         f"{top['target_sparsity']:g}: {fmt(top)} |")
    if len(lines) == 4:
        lines.append("| (no family has two sparsities yet) | | | | | |")
    return lines + [""]


def width_section(table: Dict[str, pd.DataFrame]) -> List[str]:
    """RST at the width-axis sparsity against dense AT of the same width."""
    lines = [f"## RST at sparsity {WIDTH_SPARSITY:g} against dense AT, by width", "",
             "| attack | width | rst | dense-at | rst / dense-at | Fisher p | not different (level 0.05) |",
             "|---|---|---|---|---|---|---|"]
    smallest: Dict[str, Optional[float]] = {}
    for attack, frame in table.items():
        rst = frame[(frame["method"] == "rst") & (frame["target_sparsity"] == WIDTH_SPARSITY)].set_index("width")
        dense = frame[(frame["method"] == "dense-at") & (frame["target_sparsity"] == 0)].set_index("width")
        smallest[attack] = None
        for width in sorted(set(rst.index) & set(dense.index)):
            ok, p = same(rst.loc[width], dense.loc[width])
            if ok and smallest[attack] is None:
                smallest[attack] = width
            ratio = rst.loc[width, "mean"] / dense.loc[width, "mean"]
            lines.append(f"| {attack} | {width:g} | {fmt(rst.loc[width])} | {fmt(dense.loc[width])} | {ratio:.3f} | "
                         f"{p:.3g} | {'yes' if ok else 'no'} |")
    lines.append("")
    for attack, width in smallest.items():
        lines.append(f"* {attack}: " + (f"the smallest width at which RST-{WIDTH_SPARSITY:g} is not significantly "
                                        f"different from dense AT is {width:g}." if width is not None else
                                        f"RST-{WIDTH_SPARSITY:g} differs significantly from dense AT at every width "
                                        "measured."))
    return lines + [""]


def gap_section(table: Dict[str, pd.DataFrame]) -> List[str]:
    """Every cell's PGD-20 against its worst case; cells more than GAP points apart flagged."""
    pgd, worst = table["pgd20"], table["worst_case"]
    merged = pgd.merge(worst, on=["method", "target_sparsity", "width"], suffixes=("_pgd", "_worst"))
    merged["gap"] = merged["mean_pgd"] - merged["mean_worst"]
    merged = merged.sort_values(["gap", "method", "target_sparsity", "width"], ascending=[False, True, True, True])
    flagged = merged[merged["gap"] > GAP]
    lines = [f"## Where the worst case falls far below PGD-20 (more than {GAP:g} points)", "",
             "PGD-20 on the first 1 000 test images, the worst case (PGD-20, CW-20, PGD-50, AutoAttack standard, "
             "per example; R2S: its attacks of the section below) on the first 200 or 500; a gap beyond the sampling "
             "noise means PGD-20 overstates robustness (gradient masking or a weak attack).", "",
             "| method | sparsity | width | PGD-20 | worst case | gap (points) | flagged |", "|---|---|---|---|---|---|---|"]
    for _, r in merged.iterrows():
        lines.append(f"| {r['method']} | {r['target_sparsity']:g} | {r['width']:g} | {r['mean_pgd']:.1f} | "
                     f"{r['mean_worst']:.1f} | {r['gap']:.1f} | {'**yes**' if r['gap'] > GAP else ''} |")
    lines += ["", f"{len(flagged)} of {len(merged)} cells flagged."]
    return lines + [""]


def paper_section(table: Dict[str, pd.DataFrame]) -> List[str]:
    """The RST paper's sparsity and width findings beside their counterparts here (PGD-20, as the paper)."""
    pgd = table["pgd20"]
    rst = pgd[(pgd["method"] == "rst") & (pgd["width"] == AXIS_WIDTH)].set_index("target_sparsity")
    lines = ["## Paper vs here: the RST paper's sparsity and width findings", "",
             "The paper: ResNet-18 on CIFAR-10 at eps 8/255 (../shared/REFERENCE.md 1.1, read off its figure); "
             "here: the conv net at width 0.5 on Fashion-MNIST at eps 0.1. Compare shapes, not levels.", "",
             "| finding | paper | here |", "|---|---|---|"]
    paper_peak = max(RST_PAPER_BY_SPARSITY, key=lambda s: RST_PAPER_BY_SPARSITY[s])
    if len(rst) >= 2:
        peak = float(rst["mean"].idxmax())
        lines.append(f"| RST's peak sparsity (PGD-20) | {paper_peak:g} ({RST_PAPER_BY_SPARSITY[paper_peak]:.1f}) | "
                     f"{peak:g} ({fmt(rst.loc[peak])}) |")
        top = float(rst.index.max())
        drop_here = rst.loc[peak, "mean"] - rst.loc[top, "mean"]
        if top in RST_PAPER_BY_SPARSITY:
            drop_paper = RST_PAPER_BY_SPARSITY[paper_peak] - RST_PAPER_BY_SPARSITY[top]
            lines.append(f"| drop from the peak to sparsity {top:g} (points) | {drop_paper:.1f} | {drop_here:.1f} |")
    else:
        lines.append("| RST's peak sparsity (PGD-20) | "
                     f"{paper_peak:g} ({RST_PAPER_BY_SPARSITY[paper_peak]:.1f}) | (one sparsity measured so far) |")
    paper_ratios = ", ".join(f"{name} {r / d:.3f}" for name, (r, d) in RST_PAPER_WIDTH.items())
    rst_w = pgd[(pgd["method"] == "rst") & (pgd["target_sparsity"] == WIDTH_SPARSITY)].set_index("width")
    dense_w = pgd[(pgd["method"] == "dense-at") & (pgd["target_sparsity"] == 0)].set_index("width")
    widths = sorted(set(rst_w.index) & set(dense_w.index))
    here = ", ".join(f"width {w:g} {rst_w.loc[w, 'mean'] / dense_w.loc[w, 'mean']:.3f}" for w in widths)
    lines.append(f"| best RST / dense PGD-AT, wider network closer to 1 | {paper_ratios} | "
                 f"RST-{WIDTH_SPARSITY:g}: {here or '(not measured)'} |")
    return lines + [""]


def adaptive_label(values: pd.Series) -> str:
    """'yes' / 'no' from the rows' ``adaptive`` cells ('True', 'false', ...); '?' where the rows do not say."""
    text = values.astype(str).str.strip().str.lower()
    if text.isin(["true", "1", "1.0"]).any():
        return "yes"
    return "no" if text.isin(["false", "0", "0.0"]).all() and len(text) else "?"


def seed_pct(df: pd.DataFrame, method: str, attack: str) -> pd.DataFrame:
    """One row per seed of ``method`` at the R2S cell (sparsity 0.9, width 0.5, L-inf at the grid's eps) for
    ``attack``: robust accuracy in %; two runs of one seed are a ValueError naming them (which pairs is unclear)."""
    # The cell: counted rows of the method at the grid's threat model.
    cell = counted(df)
    cell = cell[(cell["dataset"] == DATASET) & (cell["method"] == method)
                & (cell["target_sparsity"] == WIDTH_SPARSITY) & (cell["width"] == AXIS_WIDTH)
                & (row_norms(cell) == "Linf") & ((cell["eps"] - EPS).abs() < 1e-9)]
    columns = ["seed", "pct", "n_eval", "adaptive", "draws"]
    if attack not in set(cell["attack"].astype(str)):
        return pd.DataFrame(columns=columns)
    # One row per run (the most examples), then one run per seed.
    rows = latest_rows(cell, attack)
    repeated = rows[rows["seed"].duplicated(keep=False)]
    if not repeated.empty:
        raise ValueError(f"{method} has several runs of seed(s) {sorted(set(repeated['seed'].astype(int)))} at "
                         f"sparsity {WIDTH_SPARSITY:g} ({', '.join(sorted(repeated['run_id'].astype(str)))}); "
                         "the R2S findings pair one run per seed")
    adaptive = rows["adaptive"] if "adaptive" in rows else pd.Series("", index=rows.index)
    draws = pd.to_numeric(rows["draws"], errors="coerce") if "draws" in rows else pd.Series(float("nan"), rows.index)
    return pd.DataFrame({"seed": rows["seed"].astype(int), "pct": rows["robust_acc"] * 100,
                         "n_eval": pd.to_numeric(rows["n_eval"]).astype(int), "adaptive": adaptive, "draws": draws})


def mean_std(values: pd.Series) -> str:
    """'m ± s' over seeds ('m' alone for one seed); never '-0.0'."""
    mean = round(float(values.mean()), 1) + 0.0
    return f"{mean:.1f}" + ("" if len(values) < 2 else f" ± {values.std():.1f}")


def r2s_section(df: pd.DataFrame, reference: Optional[pd.DataFrame] = None) -> List[str]:
    """R2S under each attack against RST-0.9 of the same seeds (the switch's reference sparsity), and the paper.

    ``reference``: RST rows of R2S's own 0.9 candidates (retrained where R2S's candidates were); without it, the
    RST-0.9 rows of ``df``."""
    if reference is not None:
        source = ("RST-0.9 is R2S's own sparsity-0.9 candidate: the RST of that spec retrained on the machine that "
                  "trained R2S's candidates (`r2s-reference/`, configs/sweeps/published-r2s-reference.yaml; the same "
                  "ticket there, results/published/README.md), evaluated with the grid's RST protocol on the examples "
                  "R2S is evaluated on. The grid's RST-0.9 rows, from another CPU, are a different sample of the same "
                  "spec.")
    else:
        source = (f"RST-{WIDTH_SPARSITY:g} is the grid's RST run of the same seed (the same random network); R2S's "
                  "own candidate may have been trained again on another CPU, where the same spec can give another "
                  "ticket (results/published/README.md).")
    lines = [f"## R2S against RST-{WIDTH_SPARSITY:g}, its reference sparsity (width {AXIS_WIDTH:g})", "",
             "R2S puts the RSTs of 8 sparsities of one random network behind a random switch (docs/r2s.md). "
             + source + " R2S figures are means over inference draws (`draws`); cells are mean ± std over seeds; "
             "the difference is R2S minus the RST row named, over the seeds both have (mean ± std). RST's worst "
             "case is over PGD-20, CW-20, PGD-50 and AutoAttack standard, per example; R2S's is over its attacks "
             "below, the attacker's choice per example scored over the draws. `n` is the number of test images "
             "(the first n).", "",
             "| attack on R2S | adaptive | n | draws | R2S | RST-0.9 row | n (RST) | RST-0.9 | R2S − RST (points) |",
             "|---|---|---|---|---|---|---|---|---|"]
    # The attacks with R2S rows: the sweep's, in the table's order, then any other (with no RST counterpart).
    r2s_rows = counted(df)
    present = set(r2s_rows.loc[(r2s_rows["method"] == "r2s") & (r2s_rows["dataset"] == DATASET), "attack"].astype(str))
    versus_of = {**R2S_VERSUS_RST, **{a: None for a in sorted(present - set(R2S_VERSUS_RST))}}
    rst_rows = df if reference is None else reference
    gains: Dict[str, Tuple[pd.Series, str]] = {}
    for attack, versus in versus_of.items():
        r2s = seed_pct(df, "r2s", attack)
        if r2s.empty:
            continue
        # Pair seed by seed with the RST row the attack is set against.
        rst = seed_pct(rst_rows, "rst", versus) if versus else pd.DataFrame(columns=["seed", "pct", "n_eval"])
        paired = r2s.merge(rst[["seed", "pct", "n_eval"]], on="seed", suffixes=("", "_rst"), validate="one_to_one")
        gain = paired["pct"] - paired["pct_rst"]
        n = "/".join(str(v) for v in sorted(set(r2s["n_eval"])))
        n_rst = "/".join(str(int(v)) for v in sorted(set(paired["n_eval_rst"]))) or "–"
        gains[attack] = (gain, f"R2S on the first {n}, RST on the first {n_rst}")
        draws = "/".join(f"{v:g}" for v in sorted(set(r2s["draws"].dropna()))) or "–"
        both = seeds_note(len(paired), len(r2s)).replace(" seed", " paired seed")
        lines.append(f"| {attack} | {adaptive_label(r2s['adaptive'])} | {n} | {draws} | "
                     f"{mean_std(r2s['pct'])}{seeds_note(len(r2s))} | {versus or '–'} | {n_rst} | "
                     f"{mean_std(paired['pct_rst']) + both if len(paired) else '–'} | "
                     f"{mean_std(gain) + both if len(paired) else '–'} |")
    if not gains:
        return lines[:2] + ["No R2S run has finished yet (`sweeps/published-r2s.csv`).", ""]
    # The paper's claim beside the gains here, without and with adaptive attacks.
    lines += ["", f"* The paper: R2S {R2S_PAPER:.2f} against the best single RST {RST_PAPER_BEST:.1f} under PGD-20 "
              f"(+{R2S_PAPER - RST_PAPER_BEST:.1f} points; ResNet-18, CIFAR-10), a figure that REFERENCE.md 1.1 "
              "finds consistent with a non-adaptive evaluation."]
    for attack, label in (("r2s-nonadaptive", "R2S under the paper's non-adaptive protocol against RST under PGD-20"),
                          ("worst_case", "the per-example worst cases, R2S's with adaptive attacks")):
        if attack in gains and len(gains[attack][0]):
            gain, examples = gains[attack]
            lines.append(f"* Here, {label}: R2S − RST-{WIDTH_SPARSITY:g} = {mean_std(gain)} points over "
                         f"{len(gain)} seed{'s' if len(gain) != 1 else ''} ({examples}).")
    return lines + [""]


def build(rows: Path = ROWS, r2s_reference: Path = R2S_REFERENCE) -> str:
    """The findings page from the committed rows (and R2S's reference rows, where they exist)."""
    df = read_rows(rows)
    table = {attack: cells(df, attack) for attack in ("pgd20", "worst_case")}
    seeds = {attack: int(frame["seeds"].sum()) for attack, frame in table.items()}
    head = ["# Findings of the published grid (generated)", "",
            f"Generated by `python scripts/grid_findings.py` from `runs.csv` ({DATASET}, the conv net; "
            f"{seeds['pgd20']} runs with PGD-20 rows, {seeds['worst_case']} with a worst case). Cells: mean ± std "
            "over seeds [95 % Wilson interval of the pooled examples]; fewer than 3 seeds are named. The sweep is "
            "still running where a cell has fewer seeds or is missing (`sweeps/*.csv` says `pending`).", ""]
    reference = read_rows(r2s_reference) if r2s_reference.exists() else None
    body = (peak_section(table) + width_section(table) + gap_section(table) + paper_section(table)
            + r2s_section(df, reference))
    return "\n".join(head + body)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Write (or with ``--check`` compare) results/published/findings.md."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when the committed file is not a fresh rebuild")
    args = parser.parse_args(argv)
    text = build()
    if args.check:
        current = OUT.read_text(encoding="utf-8") if OUT.exists() else ""
        if current != text:
            print(f"{OUT} is stale: run python scripts/grid_findings.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
