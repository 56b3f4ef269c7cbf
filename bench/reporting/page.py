"""The leaderboard page: the board as JSON-ready data (``leaderboard.json``) and the HTML page rendered from that
data by a Jinja2 template (``bench/reporting/templates/leaderboard.html``, autoescaped), as RobustBench renders its
leaderboard. The page is self-contained (inline CSS and JavaScript, no network): sortable by clicking a header,
filterable by a text box."""
from __future__ import annotations

import math
from typing import Any, Dict, List, Tuple

import jinja2
import pandas as pd

# The page's columns: (row key, header).
HTML_COLUMNS: Tuple[Tuple[str, str], ...] = (
    ("rank", "#"), ("method", "method"), ("architecture", "architecture"), ("width", "width"),
    ("sparsity", "sparsity"), ("clean_acc", "clean (%)"), ("robust_acc", "worst-case robust (%)"),
    ("autoattack_acc", "AutoAttack (%)"), ("reported", "PGD-20 (%)"), ("median_distance", "FMN median eps"),
    ("attacks", "attacks"), ("n_eval", "n_eval"), ("randomized", "randomized"), ("non_adaptive", "non-adaptive"),
    ("flags", "flags"), ("source", "source"), ("run_id", "run"))
# Columns shown with two decimals (percentages); sparsity with four; other numbers as %g.
PERCENT_COLUMNS = ("clean_acc", "robust_acc", "autoattack_acc", "reported")
GROUP_KEYS = ("dataset", "threat_model", "eps")
DEFAULT_TITLE = "Robust tickets leaderboard"


def _plain(value: Any) -> Any:
    """A cell as JSON holds it: NaN is null, numpy scalars are Python numbers."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def page_data(board: pd.DataFrame, title: str = DEFAULT_TITLE) -> Dict[str, Any]:
    """The page's data: its title, columns and one group per (dataset, threat model, eps) with rows in rank order."""
    groups: List[Dict[str, Any]] = []
    if not board.empty:
        for (dataset, threat, eps), g in board.groupby(list(GROUP_KEYS), sort=True):
            rows = [{k: _plain(v) for k, v in r.items()} for r in g.sort_values("rank", kind="mergesort").to_dict("records")]
            groups.append({"dataset": str(dataset), "threat_model": str(threat), "eps": str(eps), "rows": rows})
    return {"title": title, "columns": [{"key": k, "label": label} for k, label in HTML_COLUMNS], "groups": groups}


def cell(column: str, value: Any) -> Dict[str, Any]:
    """One table cell: its sortable ``value`` attribute, its ``text`` and whether it is text (left-aligned)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return {"value": "", "text": "–", "text_cell": False}
    if isinstance(value, bool):
        return {"value": str(int(value)), "text": "yes" if value else "no", "text_cell": True}
    if isinstance(value, (int, float)):
        text = f"{value:.2f}" if column in PERCENT_COLUMNS else (f"{value:.4f}" if column == "sparsity" else f"{value:g}")
        return {"value": repr(value), "text": text, "text_cell": False}
    return {"value": str(value), "text": str(value), "text_cell": True}


def to_html(data: Dict[str, Any]) -> str:
    """The page for ``page_data``'s data (every value escaped by the template engine)."""
    env = jinja2.Environment(loader=jinja2.PackageLoader("bench.reporting", "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    env.globals["cell"] = cell
    return env.get_template("leaderboard.html").render(**data)
