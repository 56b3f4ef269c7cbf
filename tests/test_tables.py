"""bench table / bench plot: numbers equal a pandas groupby of the input, rendering, filters, errors."""
from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path
from typing import List

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import binomtest

from bench.cli import main
from bench.core.results import AttackResult, append_rows, result_rows, wilson_interval
from bench.core.rows import apply_filters, latest_rows, load_rows
from bench.reporting.plots import _agg, make_plots
from bench.reporting.render import render, to_latex, to_markdown
from bench.reporting.tables import build_table, transpose_table
from bench.spec import PROTOCOL

METHODS = ("hydra", "rst")
SPARSITIES = (0.5, 0.9, 0.99)
WIDTHS = (0.5, 1.0)
SEEDS = (0, 1, 2)
ATTACKS = ("pgd20", "cw20", "worst_case")


def make_rows(seed: int = 0) -> pd.DataFrame:
    """A tidy table like runs.csv: methods x sparsity x width x seed x attack, random accuracies."""
    rng = np.random.default_rng(seed)
    records = []
    for method in METHODS:
        for sparsity in SPARSITIES:
            for width in WIDTHS:
                for s in SEEDS:
                    run_id = f"{method}-{sparsity}-{width}-{s}"
                    clean = round(float(rng.uniform(0.6, 0.9)), 4)
                    pgd = round(float(rng.uniform(0.2, 0.5)), 4)
                    cw = round(float(rng.uniform(0.2, 0.5)), 4)
                    for attack, robust in zip(ATTACKS, (pgd, cw, min(pgd, cw) - 0.01)):
                        records.append({
                            "run_id": run_id, "method": method, "dataset": "fashion-mnist", "arch": "convnet",
                            "width": width, "target_sparsity": sparsity, "measured_sparsity": sparsity, "seed": s,
                            "attack": attack, "norm": "Linf", "eps": 0.1,
                            "version": "pgd20+cw20" if attack == "worst_case" else "", "scope": "all" if attack == "worst_case" else "alone",
                            "n_eval": 500, "clean_acc": clean, "robust_acc": round(robust, 4), "flags": "", "status": "ok",
                            "epochs": 5, "train_steps": 7, "data_source": "embedded", "n_train": 0,
                            "created_at": "2026-01-01T00:00:00+00:00",
                        })
    return pd.DataFrame(records)


@pytest.fixture()
def csv_path(tmp_path: Path) -> Path:
    path = tmp_path / "runs.csv"
    make_rows().to_csv(path, index=False)
    return path


def expected(df: pd.DataFrame, attack: str, keys: List[str], column: str = "robust_acc") -> pd.DataFrame:
    """The reference aggregation, straight from pandas."""
    return df[df["attack"] == attack].groupby(keys)[column].agg(["mean", "std", "count"]) * [100, 100, 1]


@pytest.mark.parametrize("attack", ["worst_case", "pgd20"])
def test_sparsity_table_equals_groupby(csv_path: Path, attack: str) -> None:
    df = load_rows([csv_path])
    table = build_table(apply_filters(df, ["width=1"]), "sparsity", attack)
    ref = expected(df[df["width"] == 1.0], attack, ["target_sparsity", "method"])
    assert list(table.mean.index) == list(SPARSITIES) and list(table.mean.columns) == list(METHODS)
    for (sparsity, method), r in ref.iterrows():
        assert table.mean.at[sparsity, method] == pytest.approx(r["mean"])
        assert table.std.at[sparsity, method] == pytest.approx(r["std"])
        assert table.n.at[sparsity, method] == 3
    md = to_markdown(table)
    cell = f"{ref.loc[(0.9, 'rst'), 'mean']:.1f} ± {ref.loc[(0.9, 'rst'), 'std']:.1f}"
    assert cell in md
    assert "fashion-mnist" in md and "eps 0.1" in md and "n_eval 500" in md and "mean ± std over 3 seeds" in md
    assert ("worst case over pgd20, cw20" if attack == "worst_case" else "attack: pgd20") in md


def test_clean_metric(csv_path: Path) -> None:
    df = load_rows([csv_path])
    table = build_table(df[df["width"] == 0.5], "sparsity", "pgd20", metric="clean")
    ref = expected(df[df["width"] == 0.5], "pgd20", ["target_sparsity", "method"], "clean_acc")
    assert table.mean.at[0.5, "hydra"] == pytest.approx(ref.loc[(0.5, "hydra"), "mean"])


def test_method_table_clean_slash_robust(csv_path: Path) -> None:
    df = load_rows([csv_path])
    table = build_table(apply_filters(df, ["width=1.0"]), "method", "worst_case")
    sub = df[(df["width"] == 1.0) & (df["attack"] == "worst_case")]
    clean = sub.groupby(["method", "arch", "target_sparsity"])["clean_acc"].mean() * 100
    robust = sub.groupby(["method", "arch", "target_sparsity"])["robust_acc"].mean() * 100
    assert list(table.mean.columns) == [("convnet", s) for s in SPARSITIES]
    for (method, arch, sparsity), value in robust.items():
        assert table.mean.at[method, (arch, sparsity)] == pytest.approx(value)
        assert table.clean.at[method, (arch, sparsity)] == pytest.approx(clean[(method, arch, sparsity)])
    md = to_markdown(table)
    assert f"{clean[('rst', 'convnet', 0.9)]:.1f} / " in md
    assert "| method | convnet 0.5 | convnet 0.9 | convnet 0.99 |" in md
    latex = to_latex(table)
    assert r"\multicolumn{3}{c}{convnet}" in latex and r"\cmidrule(lr){2-4}" in latex


def test_width_table_both_column_choices(csv_path: Path) -> None:
    df = load_rows([csv_path])
    by_sparsity = build_table(df[df["method"] == "rst"], "width", "cw20")
    ref = expected(df[df["method"] == "rst"], "cw20", ["width", "target_sparsity"])
    assert by_sparsity.mean.at[0.5, 0.99] == pytest.approx(ref.loc[(0.5, 0.99), "mean"])
    by_method = build_table(df[df["target_sparsity"] == 0.9], "width", "cw20", columns="method")
    ref = expected(df[df["target_sparsity"] == 0.9], "cw20", ["width", "method"])
    assert by_method.mean.at[1.0, "hydra"] == pytest.approx(ref.loc[(1.0, "hydra"), "mean"])


def latex_body(latex: str) -> List[List[str]]:
    """Cells of the body rows of a booktabs table."""
    body = latex.split("\\midrule\n", 1)[1].split("\\bottomrule", 1)[0]
    return [[c.strip() for c in line.rstrip(" \\").split(" & ")] for line in body.strip().splitlines()]


def test_latex_bolds_the_max_of_each_column(csv_path: Path) -> None:
    df = load_rows([csv_path])
    table = build_table(df[df["width"] == 1.0], "sparsity", "worst_case")
    latex = to_latex(table, label="tab:sparsity")
    for token in (r"\begin{table}", r"\toprule", r"\midrule", r"\bottomrule", r"\caption{", r"\label{tab:sparsity}", "$\\pm$"):
        assert token in latex
    caption = re.search(r"\\caption\{(.*)\}", latex).group(1)
    for fact in ("fashion-mnist", "eps 0.1", "worst case over pgd20, cw20", "n\\_eval 500", "5 epoch(s)", "3 seeds"):
        assert fact in caption
    rows = latex_body(latex)
    for j, method in enumerate(table.mean.columns, start=1):
        best = table.mean[method].round(1).max()
        for i, sparsity in enumerate(table.mean.index):
            bold = rows[i][j].startswith(r"\textbf{")
            assert bold == (round(table.mean.at[sparsity, method], 1) == best)
    # Exactly one bold per column here (random data has no ties).
    assert latex.count(r"\textbf{") == len(table.mean.columns)


def test_markdown_bold_per_row_and_none(csv_path: Path) -> None:
    table = build_table(load_rows([csv_path]).query("width == 1.0"), "sparsity", "pgd20")
    assert to_markdown(table, bold="row").count("**") == 2 * len(table.mean.index)
    assert "**" not in to_markdown(table, bold="none")


def test_csv_pivot_round_trips(csv_path: Path, tmp_path: Path) -> None:
    df = load_rows([csv_path])
    table = build_table(df[df["width"] == 1.0], "sparsity", "pgd20")
    out = tmp_path / "pivot.csv"
    out.write_text(render(table, "csv"))
    back = pd.read_csv(out, index_col=0)
    assert back.index.name == "sparsity"
    assert back.loc[0.9, "rst mean"] == pytest.approx(table.mean.at[0.9, "rst"], abs=1e-4)
    assert back.loc[0.9, "rst std"] == pytest.approx(table.std.at[0.9, "rst"], abs=1e-4)
    assert back.loc[0.9, "rst n"] == 3


def test_cells_must_not_mix_configs(csv_path: Path) -> None:
    df = load_rows([csv_path])
    with pytest.raises(ValueError, match=r"differ in width .*--where width="):
        build_table(df, "sparsity", "pgd20")


def test_cells_never_mix_crafting_modes_or_selections() -> None:
    """A cell of runs that crafted in train mode and runs that crafted in eval mode is refused (craft_bn was
    missing from the configuration columns), and so is one mixing the best and the last epoch."""
    for column, values in (("craft_bn", ("eval", "train")), ("select", ("best", "last"))):
        df = make_rows().query("width == 0.5").copy()
        df[column] = [values[int(s == 2)] for s in df["seed"]]
        with pytest.raises(ValueError, match=f"mix runs that differ in {column}"):
            build_table(df, "sparsity", "pgd20")
        # A row written before the column existed ran its default: it joins the default's cell.
        df[column] = [values[0] if s == 2 else None for s in df["seed"]]
        build_table(df, "sparsity", "pgd20")
        df[column] = [values[1] if s == 2 else None for s in df["seed"]]
        with pytest.raises(ValueError, match=f"mix runs that differ in {column}"):
            build_table(df, "sparsity", "pgd20")


def test_blank_cells_of_a_rows_file_are_missing_fields(tmp_path: Path) -> None:
    """Through a rows file (read as text, blanks kept as ''): an older row without select joins the default's
    cell, one saying last is refused (a blank compared unequal to 'best', and a row of 'last' beside blanks of
    the default passed); a row without a method protocol is protocol 1, never mixed with protocol 2."""
    df = make_rows().query("width == 0.5").copy()
    path = tmp_path / "runs.csv"
    old = df[df["seed"] == 2].drop(columns=["select", "protocol"], errors="ignore")
    append_rows(path, old.to_dict("records"))
    new = df[df["seed"] != 2].assign(protocol=PROTOCOL)
    append_rows(path, new.assign(select="best").to_dict("records"))
    with pytest.raises(ValueError, match="mix runs that differ in protocol"):
        build_table(load_rows([path]), "sparsity", "pgd20")
    path.unlink()
    append_rows(path, old.assign(protocol=PROTOCOL).to_dict("records"))
    append_rows(path, new.assign(select="best").to_dict("records"))
    build_table(load_rows([path]), "sparsity", "pgd20")
    path.unlink()
    append_rows(path, old.assign(protocol=str(PROTOCOL)).to_dict("records"))
    append_rows(path, new.assign(select="last").to_dict("records"))
    with pytest.raises(ValueError, match="mix runs that differ in select"):
        build_table(load_rows([path]), "sparsity", "pgd20")


def test_hyperparameters_at_their_default_do_not_split_a_cell() -> None:
    """A row written before a hyperparameter existed and one that records its default are the same run;
    a non-default value is another configuration."""
    df = make_rows().query("width == 0.5 and method == 'hydra'").copy()
    df["hparams"] = ['{"score_bn": "trained"}' if s == 0 else '{"dense_init": "pytorch", "score_bn": "trained"}'
                     for s in df["seed"]]
    build_table(df, "sparsity", "pgd20")
    df["hparams"] = ['{"score_bn": "trained"}' if s == 0 else '{"dense_init": "hydra", "score_bn": "trained"}'
                     for s in df["seed"]]
    with pytest.raises(ValueError, match="mix runs that differ in hparams"):
        build_table(df, "sparsity", "pgd20")


def test_transpose_swaps_rows_and_columns_cell_for_cell(csv_path: Path) -> None:
    """Methods down, sparsities across: every cell, interval and ‡ mark moves with its (method, sparsity)."""
    df = apply_filters(load_rows([csv_path]), ["width=0.5"])
    table = build_table(df, "sparsity", "pgd20", interval=True, reference="hydra")
    flipped = transpose_table(table)
    assert flipped.row_name == "method" and flipped.col_names == ("target_sparsity",)
    for frame in ("mean", "std", "n", "low", "high", "same_as_reference", "flagged"):
        assert getattr(flipped, frame).equals(getattr(table, frame).T), frame
    assert "by method and sparsity" in flipped.caption
    md = to_markdown(flipped)
    assert md.splitlines()[0].startswith("| method | 0.5 | 0.9 | 0.99 |")
    with pytest.raises(ValueError, match="--transpose"):
        transpose_table(build_table(df, "method", "pgd20"))


def test_filters(csv_path: Path) -> None:
    df = load_rows([csv_path])
    assert set(apply_filters(df, ["method=rst"])["method"]) == {"rst"}
    assert set(apply_filters(df, ["target_sparsity=0.5,0.99"])["target_sparsity"]) == {0.5, 0.99}
    assert set(apply_filters(df, ["method!=rst"])["method"]) == {"hydra"}
    assert len(apply_filters(df, ["seed=1", "width=0.50"])) == len(df) / 3 / 2
    with pytest.raises(ValueError, match="unknown column 'colour'"):
        apply_filters(df, ["colour=red"])
    with pytest.raises(ValueError, match="expected COLUMN=VALUE"):
        apply_filters(df, ["method"])
    with pytest.raises(ValueError, match="--where 'method=none' leaves no rows; method holds: hydra, rst"):
        apply_filters(df, ["method=none"])


def test_missing_attack_lists_present_ones(csv_path: Path) -> None:
    with pytest.raises(ValueError, match="no rows for attack 'autoattack'; attacks present: cw20, pgd20, worst_case"):
        build_table(load_rows([csv_path]), "sparsity", "autoattack")


def test_mixed_datasets_are_an_error(csv_path: Path) -> None:
    df = load_rows([csv_path])
    other = df[df["width"] == 1.0].assign(dataset="mnist", run_id=lambda d: "m-" + d["run_id"])
    with pytest.raises(ValueError, match="differ in dataset|several datasets"):
        build_table(pd.concat([df[df["width"] == 1.0], other]), "sparsity", "pgd20")


def test_repeated_evaluations_use_the_largest_n_eval_and_alone_rows() -> None:
    df = make_rows()
    extra = df[(df["attack"] == "pgd20")].assign(n_eval=1000, robust_acc=0.01)
    cascade = df[(df["attack"] == "pgd20")].assign(n_eval=1000, robust_acc=0.99, scope="after:cw20")
    picked = latest_rows(pd.concat([df, cascade, extra]), "pgd20")
    assert len(picked) == df["run_id"].nunique()
    assert set(picked["n_eval"]) == {1000} and set(picked["robust_acc"]) == {0.01}


def test_flagged_cells_get_a_dagger(csv_path: Path) -> None:
    df = load_rows([csv_path]).query("width == 1.0").copy()
    df.loc[(df["method"] == "rst") & (df["target_sparsity"] == 0.99), "flags"] = "non_adaptive;grad_vanish"
    table = build_table(df, "sparsity", "pgd20")
    md = to_markdown(table)
    assert md.count("†") == 1 + 1  # the cell and the caption note
    assert "flagged (grad_vanish, non_adaptive)" in md
    assert r"$^\dagger$" in to_latex(table)
    # A non_adaptive column (randomised tickets evaluated only non-adaptively) is marked the same way.
    df["flags"] = ""
    df["non_adaptive"] = (df["method"] == "hydra") & (df["target_sparsity"] == 0.5)
    md = to_markdown(build_table(df, "sparsity", "pgd20"))
    assert md.count("†") == 2 and "flagged (non_adaptive)" in md


def test_table_cli_writes_all_formats(csv_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    for fmt in ("markdown", "latex", "csv"):
        out = tmp_path / f"t.{fmt}"
        assert main(["table", str(csv_path), "--where", "width=1", "--format", fmt, "--output", str(out)]) == 0
        assert out.read_text().strip()
    assert main(["table", str(csv_path), "--layout", "method", "--where", "width=1"]) == 0
    assert " / " in capsys.readouterr().out
    assert main(["table", str(csv_path)]) == 2
    assert "--where width=" in capsys.readouterr().err


def test_table_never_overwrites_its_input(csv_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Issue 33: ``bench table runs.csv -o runs.csv`` replaced the rows by the table (exit 0)."""
    before = csv_path.read_bytes()
    link = tmp_path / "link.csv"
    link.symlink_to(csv_path)
    for target in (csv_path, link, Path(str(csv_path.parent) + "/./" + csv_path.name)):
        assert main(["table", str(csv_path), "--where", "width=1", "-o", str(target)]) == 2
        assert "--output" in capsys.readouterr().err
        assert csv_path.read_bytes() == before


def test_plots_write_png_and_pdf(csv_path: Path, tmp_path: Path) -> None:
    df = load_rows([csv_path])
    dense = df[(df["method"] == "rst") & (df["target_sparsity"] == 0.5)].assign(method="dense-at", target_sparsity=0.0,
                                                                                run_id=lambda d: "d-" + d["run_id"])
    paths = make_plots(pd.concat([df, dense]).query("width == 1.0"), tmp_path / "plots", kinds=("sparsity", "scatter"))
    paths += make_plots(df.query("target_sparsity == 0.9"), tmp_path / "plots", kinds=("width",), attack="pgd20")
    names = sorted(p.name for p in paths)
    assert names == sorted(f"{n}.{ext}" for n in ("robust_vs_sparsity", "clean_vs_robust", "robust_vs_width") for ext in ("png", "pdf"))
    for p in paths:
        head = p.read_bytes()[:8]
        assert head.startswith(b"\x89PNG") if p.suffix == ".png" else head.startswith(b"%PDF")
        assert p.stat().st_size > 5000


def test_plot_cli_and_bad_attack(csv_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "figs"
    assert main(["plot", str(csv_path), "--where", "width=1", "--kind", "sparsity", "--attacks", "pgd20,worst_case", "--out-dir", str(out)]) == 0
    assert (out / "robust_vs_sparsity.png").exists()
    assert main(["plot", str(csv_path), "--where", "width=1", "--kind", "sparsity", "--attacks", "fgsm", "--out-dir", str(out)]) == 2
    assert "no rows for attack(s) fgsm" in capsys.readouterr().err


def test_importing_plots_leaves_matplotlib_settings_alone() -> None:
    code = ("import matplotlib; before = dict(matplotlib.rcParams); backend = matplotlib.get_backend(); "
            "import bench.reporting.plots, bench.reporting.tables; "
            "assert dict(matplotlib.rcParams) == before and matplotlib.get_backend() == backend")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("k, n", [(0, 10), (10, 10), (617, 1000), (55, 100), (3, 7), (1, 1)])
def test_wilson_interval_matches_scipy(k: int, n: int) -> None:
    """Our Wilson score interval against scipy's (binomtest(...).proportion_ci(method='wilson'))."""
    ref = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    lo, hi = wilson_interval(k / n, n)
    assert (lo, hi) == (pytest.approx(ref.low, abs=1e-12), pytest.approx(ref.high, abs=1e-12))


def test_rows_carry_intervals() -> None:
    """Every row built by result_rows has the 95 % Wilson interval of its clean and robust accuracy."""
    r = AttackResult("pgd20", {"eps": 0.1}, 200, 0.75, 0.5, 1.0, torch.zeros(200, dtype=torch.bool))
    row = result_rows({"run_id": "x"}, [r], {}, torch.device("cpu"))[0]
    assert (row["robust_ci_low"], row["robust_ci_high"]) == tuple(round(v, 6) for v in wilson_interval(0.5, 200))
    assert row["clean_ci_low"] < 0.75 < row["clean_ci_high"]


def test_interval_cells_pool_the_seeds(csv_path: Path) -> None:
    """--interval: each cell's interval is Wilson over the correct examples of all its seeds pooled."""
    df = make_rows()
    rows = df[(df["attack"] == "pgd20") & (df["width"] == 0.5)]
    table = build_table(apply_filters(load_rows([csv_path]), ["width=0.5"]), "sparsity", "pgd20", interval=True)
    assert table.low is not None and table.high is not None and "Wilson" in table.caption
    for (method, sparsity), g in rows.groupby(["method", "target_sparsity"]):
        k, n = float((g["robust_acc"] * g["n_eval"]).sum()), int(g["n_eval"].sum())
        lo, hi = wilson_interval(k / n, n)
        assert table.low.at[sparsity, method] == pytest.approx(100 * lo)
        assert table.high.at[sparsity, method] == pytest.approx(100 * hi)
    text = to_markdown(table)
    assert f"[{table.low.iloc[0, 0]:.1f}, {table.high.iloc[0, 0]:.1f}]" in text


def test_plot_points_carry_the_pooled_interval() -> None:
    """The plots' aggregation gives each point the Wilson interval of its pooled examples (drawn as bars)."""
    df = make_rows()
    rows = latest_rows(df[df["width"] == 0.5], "pgd20")
    stats = _agg(rows, ["method", "target_sparsity"], "robust_acc")
    for _, s in stats.iterrows():
        g = rows[(rows["method"] == s["method"]) & (rows["target_sparsity"] == s["target_sparsity"])]
        lo, hi = wilson_interval(float((g["robust_acc"] * g["n_eval"]).sum()) / g["n_eval"].sum(), int(g["n_eval"].sum()))
        assert (s["lo"], s["hi"]) == (pytest.approx(100 * lo), pytest.approx(100 * hi))
        assert s["lo"] <= s["mean"] <= s["hi"]


def fisher_two_sided(a: int, b: int, c: int, d: int) -> float:
    """Fisher's exact two-sided p-value of [[a, b], [c, d]] by hand: the hypergeometric probabilities of every
    table with the same margins that are no more likely than the observed one, summed."""
    row1, col1, n = a + b, a + c, a + b + c + d

    def prob(x: int) -> float:
        return math.comb(col1, x) * math.comb(n - col1, row1 - x) / math.comb(n, row1)

    observed = prob(a)
    return min(1.0, sum(prob(x) for x in range(max(0, row1 + col1 - n), min(row1, col1) + 1)
                        if prob(x) <= observed * (1 + 1e-7)))


def reference_rows(robust: dict) -> pd.DataFrame:
    """One seed per (method, sparsity) on 200 examples: dense-at only at 0, the others at 0.5 and 0.9."""
    records = []
    for (method, sparsity), acc in robust.items():
        records.append({"run_id": f"{method}-{sparsity}", "method": method, "dataset": "fashion-mnist", "arch": "convnet",
                        "width": 0.5, "target_sparsity": sparsity, "measured_sparsity": sparsity, "seed": 0,
                        "attack": "pgd20", "norm": "Linf", "eps": 0.1, "version": "", "scope": "alone", "n_eval": 200,
                        "clean_acc": 0.8, "robust_acc": acc, "flags": "", "status": "ok", "epochs": 8,
                        "created_at": "2026-01-01T00:00:00+00:00"})
    return pd.DataFrame(records)


def test_reference_marks_follow_fishers_exact_test() -> None:
    """--reference dense-at: a cell is marked ‡ exactly when Fisher's exact test (computed by hand here) on its
    200 examples against the dense reference's 200 gives p >= 0.05; a dense reference serves every row."""
    robust = {("dense-at", 0.0): 0.60, ("rst", 0.5): 0.59, ("rst", 0.9): 0.45, ("hydra", 0.5): 0.52, ("hydra", 0.9): 0.70}
    table = build_table(reference_rows(robust), "sparsity", "pgd20", reference="dense-at")
    assert table.same_as_reference is not None and "Fisher" in table.caption and "0.05" in table.caption
    ref_k = 120
    for (method, sparsity), acc in robust.items():
        if method == "dense-at":
            assert not table.same_as_reference.at[sparsity, method]
            continue
        k = round(acc * 200)
        p = fisher_two_sided(k, 200 - k, ref_k, 200 - ref_k)
        assert bool(table.same_as_reference.at[sparsity, method]) == (p >= 0.05), (method, sparsity, p)
    marks = table.same_as_reference
    assert marks.at[0.5, "rst"] and not marks.at[0.9, "rst"] and not marks.at[0.9, "hydra"]
    text = to_markdown(table, bold="none")
    assert "59.0‡" in text and "45.0‡" not in text and r"$^\ddagger$" in to_latex(table)


def test_reference_needs_method_columns_and_a_present_method() -> None:
    rows = reference_rows({("dense-at", 0.0): 0.6, ("rst", 0.9): 0.5})
    with pytest.raises(ValueError, match="--reference compares methods"):
        build_table(rows, "method", "pgd20", reference="dense-at")
    with pytest.raises(ValueError, match="has no rows in this table; methods: dense-at, rst"):
        build_table(rows, "sparsity", "pgd20", reference="lwm")


def test_a_single_cell_reference_off_sparsity_zero_serves_only_its_row() -> None:
    """Only a dense reference (one cell, at sparsity 0) is compared with every row."""
    rows = reference_rows({("lwm", 0.9): 0.60, ("rst", 0.5): 0.60, ("rst", 0.9): 0.60})
    marks = build_table(rows, "sparsity", "pgd20", reference="lwm").same_as_reference
    assert marks is not None and marks.at[0.9, "rst"] and not marks.at[0.5, "rst"]
