"""Leaderboard of tickets: ranked by worst-case robust accuracy within (dataset, threat model, eps).

Entries are RobustBench model-info dicts extended with our fields (sparsity,
density, width, method, randomized, eot_iter, non_adaptive, flags). Local
runs become entries through :mod:`bench.export` (one JSON per ticket);
submitted entries (a folder of such JSON files) are validated field by field
and merged. Outputs: ``leaderboard.csv``, the entry JSONs, and a
self-contained ``leaderboard.html`` (inline CSS/JS, sortable by clicking a
header, filterable by a text box, no network).
"""
from __future__ import annotations

import dataclasses
import html
import json
import math
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import pandas as pd

from bench.export import export_robustbench_json
from bench.harness import evaluate_run, load_finished_ticket
from bench.io import atomic_with, atomic_write, file_sha256
from bench.results import parse_eps
from bench.ticket import read_spec

THREATS = ("Linf", "L2")
# Where local entries record what they wrote, and the first characters that make a CSV cell a formula.
MANIFEST = ".written-by-bench.txt"
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
PERCENT_RE = re.compile(r"^\d{1,3}(\.\d+)?$")
# Where an entry comes from: this harness's rows, a submitted file, or a submitted file whose ticket
# --verify re-evaluated here.
EVALUATED_HERE, SUBMITTED, VERIFIED = "evaluated here", "submitted", "submitted, verified here"
# How far (percentage points) a submission's claim may sit above this harness's re-evaluation of its ticket.
VERIFY_TOLERANCE_PTS = 1.0

# Field -> (allowed types, required). Types are checked exactly (bool is not an int here).
ROBUSTBENCH_SCHEMA: Dict[str, Tuple[Tuple[type, ...], bool]] = {
    "link": ((str,), True),
    "name": ((str,), True),
    "authors": ((str,), True),
    "additional_data": ((bool,), True),
    "number_forward_passes": ((int,), True),
    "dataset": ((str,), True),
    "venue": ((str,), True),
    "architecture": ((str,), True),
    "eps": ((str,), True),
    "clean_acc": ((str,), True),
    "reported": ((str, type(None)), True),
    "autoattack_acc": ((str, type(None)), True),
    "unreliable": ((bool,), True),
    "footnote": ((str, type(None)), True),
    "external": ((str, type(None)), False),
}
EXTENSION_SCHEMA: Dict[str, Tuple[Tuple[type, ...], bool]] = {
    "sparsity": ((float, int), True),
    "density": ((float, int), True),
    "width": ((float, int), True),
    "method": ((str,), True),
    "randomized": ((bool,), True),
    "eot_iter": ((int,), True),
    "non_adaptive": ((bool,), True),
    "flags": ((str,), True),
    "threat_model": ((str,), False),
    "target_sparsity": ((float, int, type(None)), False),
    "run_id": ((str,), False),
    "n_eval": ((int,), False),
    "evaluations": ((list,), False),
    "ticket": ((str,), False),
    "median_distance": ((float, int, type(None)), False),
}
SCHEMA = {**ROBUSTBENCH_SCHEMA, **EXTENSION_SCHEMA}
CSV_COLUMNS = ("dataset", "threat_model", "eps", "rank", "method", "name", "architecture", "width", "sparsity", "density",
               "clean_acc", "robust_acc", "autoattack_acc", "reported", "median_distance", "attacks", "n_eval", "randomized",
               "eot_iter", "non_adaptive", "unreliable", "flags", "run_id", "source", "entry")


@dataclass(frozen=True)
class Entry:
    """One validated leaderboard entry, its file and where it came from (``EVALUATED_HERE``, ``SUBMITTED``, ``VERIFIED``)."""

    info: Dict[str, Any]
    threat: str
    source: str
    origin: str = SUBMITTED

    @property
    def robust(self) -> float:
        """Worst-case robust accuracy in percent: ``external`` if given, else the lowest robust figure."""
        if self.info.get("external") is not None:
            return float(self.info["external"])
        return min(float(self.info[k]) for k in ("autoattack_acc", "reported") if self.info.get(k) is not None)


def _pct(value: Optional[str]) -> Optional[float]:
    """A RobustBench percent string as a float (None stays None)."""
    return None if value is None else float(value)


def validate_entry(info: Any, where: str, submitted: bool = True) -> Dict[str, Any]:
    """Check a model-info dict against the schema; raise ``ValueError`` naming the field.

    A ``submitted`` entry's figures must also be consistent with each other
    (its worst case at most each attack's figure). Entries evaluated here are
    exempt: their PGD/CW rows cover ``n_eval`` examples and the worst case
    only AutoAttack's subset, so the figures are of different example sets.
    """
    if not isinstance(info, dict):
        raise ValueError(f"{where}: an entry must be a JSON object, got {type(info).__name__}")
    unknown = sorted(set(info) - set(SCHEMA))
    if unknown:
        raise ValueError(f"{where}: unknown field {unknown[0]!r}; allowed fields: {', '.join(SCHEMA)}")
    # Presence and JSON types.
    for name, (types, required) in SCHEMA.items():
        if name not in info:
            if required:
                raise ValueError(f"{where}: missing required field {name!r}")
            continue
        value = info[name]
        ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
        if not ok:
            wanted = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            raise ValueError(f"{where}: field {name!r} must be {wanted}, got {json.dumps(value)} ({type(value).__name__})")
    # Values.
    for name in ("name", "dataset", "architecture", "method"):
        if not info[name].strip():
            raise ValueError(f"{where}: field {name!r} must not be empty")
    for name in ("clean_acc", "reported", "autoattack_acc", "external"):
        value = info.get(name)
        if value is not None and (not PERCENT_RE.match(value) or not 0 <= float(value) <= 100):
            raise ValueError(f"{where}: field {name!r} must be a percent string between 0 and 100 like '57.14', got {value!r}")
    if all(info.get(k) is None for k in ("external", "autoattack_acc", "reported")):
        raise ValueError(f"{where}: field 'autoattack_acc' (or 'external'/'reported') must give a robust accuracy")
    try:
        eps = parse_eps(info["eps"])
    except ValueError as exc:
        raise ValueError(f"{where}: field 'eps': {exc}") from None
    if not 0 < eps <= 1:
        raise ValueError(f"{where}: field 'eps' must be in (0, 1] (pixel units), got {info['eps']!r}")
    if info["number_forward_passes"] < 1:
        raise ValueError(f"{where}: field 'number_forward_passes' must be >= 1, got {info['number_forward_passes']}")
    if info["eot_iter"] < 1:
        raise ValueError(f"{where}: field 'eot_iter' must be >= 1, got {info['eot_iter']}")
    sparsity, density, width = (_float_field(info, name, where) for name in ("sparsity", "density", "width"))
    if not (math.isfinite(sparsity) and 0 <= sparsity < 1):
        raise ValueError(f"{where}: field 'sparsity' must be the fraction of zero weights in [0, 1), got {info['sparsity']}")
    if not math.isclose(density, 1 - sparsity, abs_tol=1e-6):
        raise ValueError(f"{where}: field 'density' must equal 1 - sparsity ({1 - sparsity:.6g}), got {info['density']}")
    if not (math.isfinite(width) and width > 0):
        raise ValueError(f"{where}: field 'width' must be > 0, got {info['width']}")
    threat = info.get("threat_model", "Linf")
    if threat not in THREATS:
        raise ValueError(f"{where}: field 'threat_model' must be one of {', '.join(THREATS)}, got {threat!r}")
    clean = float(info["clean_acc"])
    for name in ("reported", "autoattack_acc", "external"):
        if info.get(name) is not None and float(info[name]) > clean + 1e-9:
            raise ValueError(f"{where}: field {name!r} ({info[name]}) is above clean_acc ({info['clean_acc']})")
    # The worst case over every attack cannot beat any one of them (on one set of examples).
    if submitted and info.get("external") is not None:
        for name in ("autoattack_acc", "reported"):
            if info.get(name) is not None and float(info["external"]) > float(info[name]) + 1e-9:
                raise ValueError(f"{where}: field 'external' ({info['external']}) is above {name} ({info[name]}); "
                                 "external is the worst case over every attack, so it is at most each of them")
    return info


def _float_field(info: Dict[str, Any], name: str, where: str) -> float:
    """A numeric field as a float; an integer beyond float's range (``10**400``) is a ``ValueError`` naming it."""
    try:
        return float(info[name])
    except OverflowError:
        raise ValueError(f"{where}: field {name!r} is too large a number") from None


def _no_constant(name: str) -> Any:
    """JSON's NaN and Infinity are not numbers an entry may hold."""
    raise ValueError(f"{name} is not a number an entry may hold")


def load_entry(path: Union[str, Path], threat: Optional[str] = None, origin: str = SUBMITTED) -> Entry:
    """Read and validate one entry file (threat from the field, the argument, or Linf)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: not a regular file (an entry is a JSON file)")
    try:
        info = json.loads(path.read_text(encoding="utf-8"), parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a UTF-8 text file") from None
    except RecursionError:
        raise ValueError(f"{path}: JSON nested too deeply to be an entry") from None
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    info = validate_entry(info, str(path), submitted=origin != EVALUATED_HERE)
    return Entry(info, str(info.get("threat_model") or threat or "Linf"), str(path), origin)


def load_submissions(folder: Union[str, Path]) -> List[Entry]:
    """Every ``*.json`` under ``folder`` (recursively), validated; the first bad one raises."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"submissions folder not found: {folder}")
    entries = []
    for path in sorted(folder.rglob("*.json")):
        # A ticket's run folder shipped with an entry (its spec.json, eval cache) holds no entries.
        if any((folder / parent / "spec.json").exists() for parent in path.relative_to(folder).parents if parent != Path(".")):
            continue
        threat = next((p for p in reversed(path.relative_to(folder).parts[:-1]) if p in THREATS), None)
        entries.append(load_entry(path, threat))
    return entries


def provably_written(entries_dir: Path) -> List[Path]:
    """The files of ``entries_dir`` this tool wrote, as its manifest proves: each manifest line is
    ``sha256  relative/path.json``, and a file counts only when it lies inside the folder (no ``..``, no
    link leading out), is a regular ``.json`` file and still has exactly that content. The manifest is
    data, not authority: a line that fails any check is ignored, so nothing else is ever deleted."""
    manifest = entries_dir / MANIFEST
    if not manifest.is_file():
        return []
    root = entries_dir.resolve()
    found: List[Path] = []
    for line in manifest.read_text(errors="replace").splitlines():
        sha, sep, rel = line.partition("  ")
        if not sep or len(sha) != 64 or not rel.endswith(".json") or Path(rel).is_absolute():
            continue
        path = root / rel
        try:
            ok = (path.resolve().is_relative_to(root) and not path.is_symlink() and path.is_file()
                  and file_sha256(path) == sha)
        except (OSError, ValueError):
            ok = False
        if ok:
            found.append(path.resolve())
    return found


def local_entries(rows: pd.DataFrame, entries_dir: Union[str, Path]) -> List[Entry]:
    """Export one JSON per local run (bench.export) into ``entries_dir`` and load them back validated.

    ``entries_dir`` belongs to the leaderboard: JSON files of tickets not in ``rows`` are removed.
    """
    entries_dir = Path(entries_dir)
    manifest = entries_dir / MANIFEST
    written_before = provably_written(entries_dir)
    paths = export_robustbench_json(rows, entries_dir,
                                    validate=lambda info, where: validate_entry(info, where, submitted=False))
    # The folder mirrors the current board: drop only entries this command can prove it wrote before
    # (inside the folder, named in the manifest with their exact content) for tickets no longer selected.
    keep = {p.resolve() for p in paths}
    for stale in sorted(set(written_before) - keep):
        stale.unlink(missing_ok=True)
    root = entries_dir.resolve()
    atomic_write(manifest, "".join(f"{file_sha256(path)}  {path.relative_to(root).as_posix()}\n"
                                   for path in sorted(keep)))
    out = []
    for p in paths:
        threat = p.parent.name if p.parent.name in THREATS else "Linf"
        out.append(load_entry(p, threat, EVALUATED_HERE))
    return out


def verify_entry(entry: Entry, folder: Union[str, Path], data_root: Optional[str] = None) -> Entry:
    """Re-evaluate a submission's ticket with its spec's attacks (RobustBench re-runs claims).

    The entry's ``ticket`` field names the run folder, relative to the entry
    file and inside the submissions ``folder``. A claimed clean or worst-case
    robust accuracy more than ``VERIFY_TOLERANCE_PTS`` above the re-evaluation
    is a ValueError saying by how much; otherwise the entry is ranked by the
    lower of the two figures. The evaluation cache goes to a temporary folder:
    nothing is written next to the submission.
    """
    where = entry.source
    if not entry.info.get("ticket"):
        raise ValueError(f"{where}: --verify needs a 'ticket' field: the ticket's run folder, relative to this file")
    root = Path(folder).resolve()
    run_dir = (Path(entry.source).parent / entry.info["ticket"]).resolve()
    if not run_dir.is_relative_to(root):
        raise ValueError(f"{where}: field 'ticket' ({entry.info['ticket']!r}) points outside the submissions folder {folder}")
    spec = read_spec(run_dir).resolve()
    # The claim must be about this ticket's threat model.
    if spec.dataset != entry.info["dataset"] or not math.isclose(spec.eps_value, parse_eps(entry.info["eps"]), abs_tol=1e-6):
        raise ValueError(f"{where}: the entry claims {entry.info['dataset']} at eps {entry.info['eps']}, its ticket's spec "
                         f"is {spec.dataset} at eps {spec.eps_value:.6g}")
    ticket = load_finished_ticket(spec, run_dir, data_root)
    n_eval = entry.info.get("n_eval") or spec.n_eval
    with tempfile.TemporaryDirectory(prefix="bench-verify-") as scratch:
        results = evaluate_run(dataclasses.replace(ticket, run_dir=Path(scratch)), n_eval=n_eval)
    measured_robust = 100 * min(r.robust_acc for r in results)
    measured_clean = 100 * results[0].clean_acc
    attacks = "+".join(r.attack for r in results if r.attack != "worst_case")
    checks = (("clean accuracy", float(entry.info["clean_acc"]), measured_clean),
              ("worst-case robust accuracy", entry.robust, measured_robust))
    for what, claimed, measured in checks:
        if claimed > measured + VERIFY_TOLERANCE_PTS:
            raise ValueError(f"{where}: claim rejected: {what} {claimed:.2f}% claimed, {measured:.2f}% re-evaluated here "
                             f"({attacks} on {results[0].n_eval} examples): {claimed - measured:.2f} points above "
                             f"(tolerance {VERIFY_TOLERANCE_PTS:g})")
    info = {**entry.info, "external": f"{min(entry.robust, measured_robust):.2f}"}
    return Entry(info, entry.threat, entry.source, VERIFIED)


def rank_entries(entries: Sequence[Entry]) -> pd.DataFrame:
    """The leaderboard table: rank 1 = highest worst-case robust accuracy in each (dataset, threat, eps)."""
    seen: Dict[str, str] = {}
    records = []
    for e in entries:
        info = e.info
        run_id = info.get("run_id")
        if run_id:
            if run_id in seen:
                raise ValueError(f"duplicate run_id {run_id!r} in {seen[run_id]} and {e.source}")
            seen[run_id] = e.source
        evaluations = info.get("evaluations") or []
        records.append({
            "dataset": info["dataset"], "threat_model": e.threat, "eps": info["eps"], "eps_value": parse_eps(info["eps"]),
            "method": info["method"], "name": info["name"], "architecture": info["architecture"],
            "width": float(info["width"]), "sparsity": float(info["sparsity"]), "density": float(info["density"]),
            "clean_acc": float(info["clean_acc"]), "robust_acc": e.robust,
            "autoattack_acc": _pct(info.get("autoattack_acc")), "reported": _pct(info.get("reported")),
            "median_distance": info.get("median_distance"),
            "attacks": "+".join(str(ev.get("attack")) for ev in evaluations if isinstance(ev, dict) and ev.get("attack") != "worst_case"),
            "n_eval": info.get("n_eval"), "randomized": info["randomized"], "eot_iter": info["eot_iter"],
            "non_adaptive": info["non_adaptive"], "unreliable": info["unreliable"], "flags": info["flags"],
            "run_id": run_id or "", "source": e.origin, "entry": e.source,
        })
    df = pd.DataFrame(records, columns=list(CSV_COLUMNS) + ["eps_value"])
    if df.empty:
        return df.drop(columns=["eps_value"])
    # Rank inside each (dataset, threat model, eps) group; ties share the better rank.
    df = df.sort_values(["dataset", "threat_model", "eps_value", "robust_acc", "clean_acc"],
                        ascending=[True, True, True, False, False], kind="mergesort")
    df["rank"] = df.groupby(["dataset", "threat_model", "eps_value"])["robust_acc"].rank(method="min", ascending=False).astype(int)
    return df.drop(columns=["eps_value"]).reset_index(drop=True)[list(CSV_COLUMNS)]


# ---------------------------------------------------------------------------
# The static HTML page.
# ---------------------------------------------------------------------------

HTML_COLUMNS = (("rank", "#"), ("method", "method"), ("architecture", "architecture"), ("width", "width"),
                ("sparsity", "sparsity"), ("clean_acc", "clean (%)"), ("robust_acc", "worst-case robust (%)"),
                ("autoattack_acc", "AutoAttack (%)"), ("reported", "PGD-20 (%)"),
                ("median_distance", "FMN median eps"), ("attacks", "attacks"),
                ("n_eval", "n_eval"), ("randomized", "randomized"), ("non_adaptive", "non-adaptive"), ("flags", "flags"),
                ("source", "source"), ("run_id", "run"))

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em;color:#222}
h1{font-size:1.4em}h2{font-size:1.1em;margin-top:1.6em}
table{border-collapse:collapse;font-size:.9em;margin-top:.4em}
th,td{padding:.3em .6em;border-bottom:1px solid #ddd;text-align:right;white-space:nowrap}
th{cursor:pointer;background:#f3f3f3;user-select:none}
th[data-dir=asc]::after{content:" \\25B2"}th[data-dir=desc]::after{content:" \\25BC"}
td.t{text-align:left}tr.warn td{background:#fff6e0}
#filter{font-size:1em;padding:.3em;width:24em}.note{color:#666;font-size:.85em}
"""

JS = """
(function(){
  function key(cell){
    var v=cell.getAttribute('data-value');
    if(v===null||v===''){return {n:false,s:''};}
    var f=parseFloat(v);
    return isNaN(f)?{n:false,s:v.toLowerCase()}:{n:true,f:f};
  }
  function cmp(a,b){
    if(a.n&&b.n){return a.f-b.f;}
    if(a.n!==b.n){return a.n?-1:1;}
    return a.s<b.s?-1:(a.s>b.s?1:0);
  }
  document.querySelectorAll('table.board').forEach(function(table){
    var heads=table.querySelectorAll('thead th');
    heads.forEach(function(th,col){
      th.addEventListener('click',function(){
        var dir=th.getAttribute('data-dir')==='asc'?'desc':'asc';
        heads.forEach(function(h){h.removeAttribute('data-dir');});
        th.setAttribute('data-dir',dir);
        var body=table.tBodies[0];
        var rows=Array.prototype.slice.call(body.rows);
        rows.sort(function(r1,r2){
          var c=cmp(key(r1.cells[col]),key(r2.cells[col]));
          return dir==='asc'?c:-c;
        });
        rows.forEach(function(r){body.appendChild(r);});
      });
    });
  });
  var box=document.getElementById('filter');
  box.addEventListener('input',function(){
    var q=box.value.toLowerCase();
    document.querySelectorAll('table.board tbody tr').forEach(function(tr){
      tr.style.display=tr.textContent.toLowerCase().indexOf(q)>=0?'':'none';
    });
  });
})();
"""


def _cell(column: str, value: Any) -> str:
    """One <td> with a sortable data-value and escaped text."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return '<td data-value="">–</td>'
    if isinstance(value, bool):
        return f'<td class="t" data-value="{int(value)}">{"yes" if value else "no"}</td>'
    if isinstance(value, (int, float)):
        text = f"{value:.2f}" if column in ("clean_acc", "robust_acc", "autoattack_acc", "reported") else (
            f"{value:.4f}" if column == "sparsity" else f"{value:g}")
        return f'<td data-value="{value!r}">{html.escape(text)}</td>'
    text = str(value)
    return f'<td class="t" data-value="{html.escape(text, quote=True)}">{html.escape(text)}</td>'


def to_html(board: pd.DataFrame, title: str = "Robust tickets leaderboard") -> str:
    """A self-contained HTML page: one sortable table per (dataset, threat model, eps), one filter box."""
    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>",
             f"<style>{CSS}</style></head><body>", f"<h1>{html.escape(title)}</h1>",
             '<p class="note">Ranked by worst-case robust accuracy (per example, over every attack run) within each '
             "dataset, threat model and eps. Click a column header to sort; type to filter. Highlighted rows are "
             "randomised models evaluated non-adaptively or runs with sanity flags.</p>",
             '<p><input id="filter" type="search" placeholder="filter rows (method, architecture, flags ...)"></p>']
    groups = board.groupby(["dataset", "threat_model", "eps"], sort=True) if not board.empty else []
    for (dataset, threat, eps), g in groups:
        parts.append(f"<h2>{html.escape(str(dataset))} · {html.escape(str(threat))} · eps {html.escape(str(eps))}</h2>")
        parts.append('<table class="board"><thead><tr>' + "".join(f"<th>{html.escape(h)}</th>" for _, h in HTML_COLUMNS)
                     + "</tr></thead><tbody>")
        for _, r in g.sort_values("rank", kind="mergesort").iterrows():
            warn = bool(r["non_adaptive"]) or bool(str(r["flags"]).strip())
            row_class = ' class="warn"' if warn else ""
            parts.append(f"<tr{row_class}>" + "".join(_cell(c, r[c]) for c, _ in HTML_COLUMNS) + "</tr>")
        parts.append("</tbody></table>")
    if board.empty:
        parts.append("<p>No entries.</p>")
    parts.append(f"<script>{JS}</script></body></html>")
    return "\n".join(parts) + "\n"


def neutralise(cell: Any) -> Any:
    """A text cell a spreadsheet would run as a formula (``= + - @``, tab, CR first) gets a leading quote."""
    if isinstance(cell, str) and cell[:1] in FORMULA_STARTS:
        return "'" + cell
    return cell


def build_leaderboard(rows: Optional[pd.DataFrame], out_dir: Union[str, Path],
                      submissions: Optional[Union[str, Path]] = None, verify: bool = False,
                      data_root: Optional[str] = None) -> Dict[str, Any]:
    """Export local entries, merge submissions (re-evaluated with ``verify``), rank, and write csv + html."""
    out_dir = Path(out_dir)
    # Validate (and verify) submissions first, so a bad one stops everything before any output is written.
    submitted = load_submissions(submissions) if submissions is not None else []
    if verify:
        if submissions is None:
            raise ValueError("--verify re-evaluates submissions: give --submissions DIR")
        submitted = [verify_entry(e, submissions, data_root) for e in submitted]
    entries = local_entries(rows, out_dir / "entries") if rows is not None and not rows.empty else []
    board = rank_entries(entries + submitted)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, html_path = out_dir / "leaderboard.csv", out_dir / "leaderboard.html"
    safe = board.apply(lambda col: col.map(neutralise) if col.dtype == object or pd.api.types.is_string_dtype(col) else col)
    atomic_with(csv_path, lambda tmp: safe.to_csv(tmp, index=False, float_format="%.4f"))
    atomic_write(html_path, to_html(board))
    return {"csv": csv_path, "html": html_path, "entries": [e.source for e in entries], "submitted": len(submitted),
            "board": board}
