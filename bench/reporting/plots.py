"""Figures from tidy ``runs.csv`` rows: PNG and PDF, drawn with matplotlib's Agg canvas.

- robust accuracy vs sparsity: one line per method, band = ± std over seeds,
  bars = 95 % Wilson interval of the examples of all seeds pooled, one panel per attack; dense methods (only sparsity 0) are dashed reference lines;
- robust accuracy vs width: one line per (method, sparsity);
- clean vs robust accuracy: one point per configuration (mean over seeds);
- security curves: robust accuracy against eps from FMN, one line per ticket (band = 95 % Wilson interval),
  the fixed-eps worst case at the spec's eps as a marker;
- accuracy against a cost (MACs, non-zero parameters, latency; :mod:`bench.reporting.costs`): one point per
  configuration (circles: weight tickets, squares: channel tickets), each method's Pareto front as a line.

Figures are built on ``matplotlib.figure.Figure`` with an explicit Agg canvas:
no pyplot, no global backend switch and no rcParams changes.
"""
from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import pandas as pd
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from bench.core.results import CURVE_ATTACKS, format_eps
from bench.core.rows import latest_curves, latest_rows, row_norms
from bench.reporting.cells import check_cells
from bench.reporting.costs import COSTS, cost_points
from bench.reporting.stats import pooled_interval
from bench.reporting.tables import span

KINDS = ("sparsity", "width", "scatter", "security", "cost")
# What `bench plot` draws without --kind (security curves exist only after `bench security`).
DEFAULT_KINDS = ("sparsity", "width", "scatter")
FONT = 10
PANEL = (4.2, 3.4)


def _palette(names: Sequence[str]) -> Dict[str, Any]:
    """One fixed colour per name (sorted), the same in every panel and figure of a call."""
    cmap = colormaps["tab10"]
    return {name: cmap(i % 10) for i, name in enumerate(sorted(set(map(str, names))))}


def _figure(n_panels: int) -> Tuple[Figure, list]:
    """A figure with ``n_panels`` side-by-side axes on an Agg canvas."""
    fig = Figure(figsize=(PANEL[0] * n_panels, PANEL[1]), constrained_layout=True)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, n_panels, squeeze=False)[0]
    return fig, list(axes)


def _style(ax, xlabel: str, ylabel: str, title: str) -> None:
    """Readable axis labels, grid and title."""
    ax.set_xlabel(xlabel, fontsize=FONT)
    ax.set_ylabel(ylabel, fontsize=FONT)
    ax.set_title(title, fontsize=FONT + 1)
    ax.tick_params(labelsize=FONT - 1)
    ax.grid(True, alpha=0.3)


def _subtitle(rows: pd.DataFrame, bands: bool = True, width: int = 200) -> str:
    """Dataset, eps, n_eval, seeds and budget, wrapped at ``width`` characters."""
    parts = [", ".join(sorted(rows["dataset"].astype(str).unique())),
             "eps " + ", ".join(format_eps(e) for e in sorted(set(rows["eps"].round(8)))),
             f"n_eval {span(rows['n_eval'])}"]
    if "epochs" in rows:
        parts.append(f"{span(rows['epochs'])} epoch(s)")
    seeds = rows.groupby([c for c in ("method", "arch", "width", "target_sparsity") if c in rows])["seed"].nunique()
    what = "mean ± std (band), bars: 95 % Wilson interval of the pooled examples" if bands else "mean"
    parts.append(f"{what} over {span(seeds)} seeds" if seeds.max() > 1 else "1 seed")
    return textwrap.fill(" | ".join(parts), width)


def _save(fig: Figure, stem: Path) -> List[Path]:
    """Write ``stem.png`` (150 dpi) and ``stem.pdf`` (no creation date, so the same figure is the same bytes)."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
    fig.savefig(paths[0], dpi=150)
    fig.savefig(paths[1], metadata={"CreationDate": None})
    return paths


def _attacks(df: pd.DataFrame, attacks: Optional[Sequence[str]]) -> List[str]:
    """Requested attacks, or every fixed-eps attack present (security curves left out) with worst_case last."""
    present = sorted(df["attack"].astype(str).unique(), key=lambda a: (a == "worst_case", a))
    if not attacks:
        return [a for a in present if a not in CURVE_ATTACKS]
    curve = [a for a in attacks if a in CURVE_ATTACKS]
    if curve:
        raise ValueError(f"{', '.join(curve)} rows are a security curve (one row per eps): use --kind security")
    missing = [a for a in attacks if a not in present]
    if missing:
        raise ValueError(f"no rows for attack(s) {', '.join(missing)}; attacks present: {', '.join(present)}")
    return list(attacks)


def _agg(rows: pd.DataFrame, keys: List[str], column: str) -> pd.DataFrame:
    """Mean and std (over seeds) of ``column`` in percent per key, and the 95 % Wilson interval (``lo``, ``hi``)
    over the key's test examples of all seeds pooled."""
    out = rows.groupby(keys)[column].agg(["mean", "std", "count"]).join(pooled_interval(rows, keys, column)).reset_index()
    out[["mean", "std"]] = out[["mean", "std"]] * 100
    out["std"] = out["std"].fillna(0.0)
    return out


def _interval_bars(ax: Any, x: Any, g: pd.DataFrame, color: Any) -> None:
    """Vertical bars of each point's pooled 95 % Wilson interval."""
    ax.errorbar(x, g["mean"], yerr=[(g["mean"] - g["lo"]).clip(lower=0), (g["hi"] - g["mean"]).clip(lower=0)],
                fmt="none", ecolor=color, elinewidth=0.8, capsize=2)


def plot_vs_sparsity(df: pd.DataFrame, out_stem: Union[str, Path], attacks: Optional[Sequence[str]] = None,
                     metric: str = "robust") -> List[Path]:
    """Accuracy vs sparsity, one panel per attack, one line (band = ± std) per method."""
    names = _attacks(df, attacks)
    fig, axes = _figure(len(names))
    column = "robust_acc" if metric == "robust" else "clean_acc"
    colors = _palette(df["method"])
    for ax, attack in zip(axes, names):
        rows = latest_rows(df, attack)
        check_cells(rows, ["method", "target_sparsity"])
        stats = _agg(rows, ["method", "target_sparsity"], column)
        for method, g in stats.groupby("method"):
            g = g.sort_values("target_sparsity")
            x = g["target_sparsity"] * 100
            # A dense method (only sparsity 0) is a horizontal reference line.
            if len(g) == 1 and g["target_sparsity"].iloc[0] == 0:
                m, s = g["mean"].iloc[0], g["std"].iloc[0]
                ax.axhline(m, linestyle="--", linewidth=1.5, color=colors[str(method)], label=f"{method} (dense)")
                ax.axhspan(m - s, m + s, color=colors[str(method)], alpha=0.15, linewidth=0)
                continue
            ax.plot(x, g["mean"], marker="o", markersize=4, linewidth=1.8, color=colors[str(method)], label=str(method))
            ax.fill_between(x, g["mean"] - g["std"], g["mean"] + g["std"], color=colors[str(method)], alpha=0.2, linewidth=0)
            _interval_bars(ax, x, g, colors[str(method)])
        # Each panel names its own number of evaluated examples.
        _style(ax, "sparsity (% of prunable weights zero)", f"{metric} accuracy (%)", f"{attack} (n_eval {span(rows['n_eval'])})")
        ax.set_ylim(bottom=0)
    axes[0].legend(fontsize=FONT - 1, frameon=False)
    # The subtitle wraps to the figure's width (about 65 characters per panel).
    fig.suptitle(_subtitle(pd.concat([latest_rows(df, a) for a in names]), width=min(200, 65 * len(names))),
                 fontsize=FONT - 1)
    return _save(fig, Path(out_stem))


def plot_vs_width(df: pd.DataFrame, out_stem: Union[str, Path], attacks: Union[str, Sequence[str]] = "worst_case",
                  metric: str = "robust") -> List[Path]:
    """Accuracy vs width multiplier, one panel per attack, one line (band = ± std) per (method, sparsity)."""
    names = [attacks] if isinstance(attacks, str) else list(attacks)
    fig, axes = _figure(len(names))
    column = "robust_acc" if metric == "robust" else "clean_acc"
    every = []
    for ax, attack in zip(axes, names):
        rows = latest_rows(df, attack)
        every.append(rows)
        check_cells(rows, ["method", "target_sparsity", "width"])
        stats = _agg(rows, ["method", "target_sparsity", "width"], column)
        colors = _palette([f"{m} {s}" for m, s in zip(stats["method"], stats["target_sparsity"])])
        for (method, sparsity), g in stats.groupby(["method", "target_sparsity"]):
            g = g.sort_values("width")
            (line,) = ax.plot(g["width"], g["mean"], marker="o", markersize=4, linewidth=1.8,
                              color=colors[f"{method} {sparsity}"], label=f"{method}, sparsity {sparsity * 100:g}%")
            ax.fill_between(g["width"], g["mean"] - g["std"], g["mean"] + g["std"], color=line.get_color(), alpha=0.2,
                            linewidth=0)
            _interval_bars(ax, g["width"], g, line.get_color())
        # Widths usually double: a log2 axis with a tick at every width used.
        widths = sorted(stats["width"].unique())
        ax.set_xscale("log", base=2)
        ax.set_xticks(widths, [f"{w:g}" for w in widths])
        ax.minorticks_off()
        _style(ax, "width multiplier (x standard width, log scale)", f"{metric} accuracy (%)",
               f"{attack} (n_eval {span(rows['n_eval'])})" if len(names) > 1 else attack)
        ax.set_ylim(bottom=0)
    axes[0].legend(fontsize=FONT - 1, frameon=False)
    fig.suptitle(_subtitle(pd.concat(every), width=min(200, 65 * len(names))), fontsize=FONT - 1)
    return _save(fig, Path(out_stem))


def plot_clean_vs_robust(df: pd.DataFrame, out_stem: Union[str, Path], attack: str = "worst_case") -> List[Path]:
    """Clean vs robust accuracy: one point per (method, arch, width, sparsity), mean over seeds."""
    rows = latest_rows(df, attack)
    keys = ["method", "arch", "width", "target_sparsity"]
    check_cells(rows, keys)
    clean = _agg(rows, keys, "clean_acc").rename(columns={"mean": "clean"})
    robust = _agg(rows, keys, "robust_acc").rename(columns={"mean": "robust"})
    stats = clean[keys + ["clean"]].merge(robust[keys + ["robust"]], on=keys)
    fig, (ax,) = _figure(1)
    colors = _palette(stats["method"])
    markers = {name: "osD^v<>ph*"[i % 10] for i, name in enumerate(colors)}
    for method, g in stats.groupby("method"):
        ax.scatter(g["clean"], g["robust"], s=36, marker=markers[str(method)], color=colors[str(method)],
                   label=str(method), alpha=0.85)
        for _, r in g.iterrows():
            ax.annotate(f"{r['target_sparsity'] * 100:g}%", (r["clean"], r["robust"]), fontsize=FONT - 3,
                        xytext=(3, 3), textcoords="offset points")
    _style(ax, "clean accuracy (%)", f"robust accuracy (%) under {attack}", "clean vs robust (labels: sparsity)")
    ax.legend(fontsize=FONT - 1, frameon=False)
    fig.suptitle(_subtitle(rows, bands=False, width=60), fontsize=FONT - 1)
    return _save(fig, Path(out_stem))


def plot_security(df: pd.DataFrame, out_stem: Union[str, Path], attack: str = "worst_case") -> List[Path]:
    """Robust accuracy against eps from the minimum-norm attacks (``bench security``), one panel per dataset and
    threat model and one line per ticket (band: the 95 % Wilson interval at each eps); ``attack`` at the spec's eps
    in that threat model is a square with its interval, so a curve that disagrees with the fixed-eps evaluation
    shows."""
    # One curve per ticket and threat model: its largest evaluation, then the newest (one step count).
    curves = latest_curves(df)
    if curves.empty:
        raise ValueError("no security-curve rows (attack fmn or fab) to plot; run `bench security RUN_DIR` first")
    curves = curves.assign(_norm=row_norms(curves))
    fixed_all = latest_rows(df, attack) if (df["attack"] == attack).any() else pd.DataFrame()
    if not fixed_all.empty:
        fixed_all = fixed_all.assign(_norm=row_norms(fixed_all))
    panels = sorted({(str(d), str(n)) for d, n in zip(curves["dataset"], curves["_norm"])})
    fig, axes = _figure(len(panels))
    configs = curves.assign(_config=[f"{m}, sparsity {s * 100:g}%" for m, s in zip(curves["method"], curves["target_sparsity"])])
    colors = _palette(configs["_config"])
    styles = ("-", "--", ":", "-.")
    for ax, (dataset, norm) in zip(axes, panels):
        rows = configs[(configs["dataset"].astype(str) == dataset) & (configs["_norm"] == norm)]
        fixed = fixed_all[fixed_all["_norm"] == norm].set_index("run_id") if not fixed_all.empty else fixed_all
        for run_id, g in rows.sort_values(["_config", "seed"]).groupby("run_id", sort=False):
            g = g.sort_values("eps")
            color = colors[g["_config"].iloc[0]]
            seeds = sorted(rows[rows["_config"] == g["_config"].iloc[0]]["seed"].unique())
            style = styles[seeds.index(g["seed"].iloc[0]) % len(styles)]
            bounds = pooled_interval(g, ["eps"], "robust_acc")
            ax.plot(g["eps"], g["robust_acc"] * 100, linestyle=style, linewidth=1.5, color=color,
                    label=f"{g['_config'].iloc[0]}, seed {g['seed'].iloc[0]} (median {float(g['median_distance'].iloc[0]):.3g})"
                    if "median_distance" in g else f"{g['_config'].iloc[0]}, seed {g['seed'].iloc[0]}")
            ax.fill_between(g["eps"], bounds["lo"].to_numpy(), bounds["hi"].to_numpy(), color=color, alpha=0.12, linewidth=0)
            # The fixed-eps evaluation of the same ticket in the same threat model, with its own interval.
            if run_id in fixed.index:
                r = fixed.loc[[run_id]].iloc[-1]
                point = pooled_interval(fixed.loc[[run_id]].tail(1).reset_index(), ["run_id"], "robust_acc").iloc[0]
                value = float(r["robust_acc"]) * 100
                ax.errorbar([float(r["eps"])], [value], yerr=[[max(0.0, value - point["lo"])], [max(0.0, point["hi"] - value)]],
                            fmt="s", markersize=4, color=color, capsize=2)
        n_text = span(rows["n_eval"])
        names = "/".join(sorted(rows["attack"].astype(str).str.upper().unique()))
        norm_text = {"Linf": "L-inf"}.get(norm, norm)
        _style(ax, f"eps ({norm_text}, pixel units)", "robust accuracy (%)",
               f"{dataset}: {names} security curves (n_eval {n_text})")
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=FONT - 3, frameon=False)
    steps = span(curves["steps"]) if "steps" in curves else "?"
    fig.suptitle(textwrap.fill(f"robust accuracy = share of examples whose minimal perturbation ({steps} steps) "
                               f"exceeds eps; band: 95 % Wilson interval; squares: {attack} at the spec's eps", 110),
                 fontsize=FONT - 1)
    return _save(fig, Path(out_stem))


def plot_vs_cost(df: pd.DataFrame, out_stem: Union[str, Path], attack: str = "worst_case", cost: str = "macs",
                 metric: str = "robust") -> List[Path]:
    """Accuracy against ``cost`` (log scale): a point per configuration, each method's Pareto front as a line."""
    found = cost_points(df, attack, cost, metric)
    points = found.points
    # One wider panel: the caption and the cost's label are long.
    fig = Figure(figsize=(6.4, 5.0), constrained_layout=True)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    colors = _palette(points["method"])
    markers = {"weight": "o", "channel": "s"}
    for method, g in points.groupby("method"):
        color = colors[str(method)]
        for granularity, h in g.groupby("granularity"):
            ax.scatter(h["cost"], h["mean"], s=30, marker=markers.get(str(granularity), "^"), color=color, alpha=0.8,
                       label=f"{method} ({granularity})")
        front = g[g["front"]].sort_values("cost")
        ax.plot(front["cost"], front["mean"], color=color, linewidth=1.2, drawstyle="steps-post")
    ax.set_xscale("log")
    # Plain numbers on the log axis (4, 5, 6, ... or 1e+06), not powers of ten with mantissas.
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    if float(points["cost"].max()) < 10 * float(points["cost"].min()):
        # Within one decade only minor ticks fall between the points: label them too.
        ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    _style(ax, textwrap.fill(COSTS[cost][1], 60), f"{metric} accuracy (%) under {attack}",
           f"{metric} accuracy against cost")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=FONT - 2, frameon=False)
    fig.suptitle(textwrap.fill(found.caption, 110), fontsize=FONT - 3)
    return _save(fig, Path(out_stem))


def make_plots(df: pd.DataFrame, out_dir: Union[str, Path], kinds: Sequence[str] = DEFAULT_KINDS,
               attacks: Optional[Sequence[str]] = None, attack: str = "worst_case", metric: str = "robust",
               cost: str = "macs") -> List[Path]:
    """Draw the requested kinds into ``out_dir``; returns every file written."""
    out_dir = Path(out_dir)
    written: List[Path] = []
    for kind in kinds:
        if kind == "sparsity":
            written += plot_vs_sparsity(df, out_dir / f"{metric}_vs_sparsity", attacks, metric)
        elif kind == "width":
            # The width figure has a panel per --attacks entry, or the one --attack.
            written += plot_vs_width(df, out_dir / f"{metric}_vs_width", list(attacks) if attacks else attack, metric)
        elif kind == "scatter":
            written += plot_clean_vs_robust(df, out_dir / "clean_vs_robust", attack)
        elif kind == "security":
            written += plot_security(df, out_dir / "security", attack)
        elif kind == "cost":
            written += plot_vs_cost(df, out_dir / f"{metric}_vs_{cost}", attack, cost, metric)
        else:
            raise ValueError(f"unknown plot kind {kind!r}; choices: {', '.join(KINDS)}")
    return written
