"""Leaderboard of tickets: ranked by worst-case robust accuracy within (dataset, threat model, eps).

Entries (:mod:`bench.reporting.entries`) are RobustBench model-info dicts extended with
our fields. Local runs become entries through :mod:`bench.reporting.export` (one JSON
per ticket); submitted entries (a folder of such JSON files) are validated
field by field, optionally re-evaluated (``--verify``), and merged. Outputs:
``leaderboard.csv``, the entry JSONs, ``leaderboard.json`` (the data the page
shows) and ``leaderboard.html``, rendered from it by :mod:`bench.reporting.page`.
"""
from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import pandas as pd

from bench.core.io import atomic_with, atomic_write, file_sha256
from bench.core.results import parse_eps
from bench.external import SPARSITY_TOLERANCE, ExternalSpec, run_external
from bench.harness import evaluate_run, load_finished_ticket
from bench.methods.ticket import read_spec
from bench.reporting.entries import EVALUATED_HERE, THREATS, VERIFIED, Entry, load_entry, load_submissions, percent_or_none, validate_entry
from bench.reporting.export import export_robustbench_json
from bench.reporting.page import page_data, to_html

# Where local entries record what they wrote, and the first characters that make a CSV cell a formula.
MANIFEST = ".written-by-bench.txt"
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
# How far (percentage points) a submission's claim may sit above this harness's re-evaluation of its ticket.
VERIFY_TOLERANCE_PTS = 1.0
CSV_COLUMNS = ("dataset", "threat_model", "eps", "rank", "method", "name", "architecture", "width", "sparsity", "density",
               "clean_acc", "robust_acc", "autoattack_acc", "reported", "median_distance", "attacks", "n_eval", "randomized",
               "eot_iter", "non_adaptive", "unreliable", "flags", "run_id", "source", "entry")


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
    """Export one JSON per local run (bench.reporting.export) into ``entries_dir`` and load them back validated.

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
    if entry.info.get("model"):
        return verify_external(entry, folder, data_root)
    if not entry.info.get("ticket"):
        raise ValueError(f"{where}: --verify needs a 'ticket' field: the ticket's run folder, relative to this file")
    root = Path(folder).resolve()
    run_dir = (Path(entry.source).parent / entry.info["ticket"]).resolve()
    if not run_dir.is_relative_to(root):
        raise ValueError(f"{where}: field 'ticket' ({entry.info['ticket']!r}) points outside the submissions folder {folder}")
    spec = read_spec(run_dir).resolve()
    # The claim must be about this ticket's data; it is re-evaluated in the entry's threat model and budget (a ticket
    # trained in L-inf may be claimed in L2).
    if spec.dataset != entry.info["dataset"]:
        raise ValueError(f"{where}: the entry claims {entry.info['dataset']}, its ticket's spec is {spec.dataset}")
    ticket = load_finished_ticket(spec, run_dir, data_root)
    n_eval = entry.info.get("n_eval") or spec.n_eval
    with tempfile.TemporaryDirectory(prefix="bench-verify-") as scratch:
        results = evaluate_run(dataclasses.replace(ticket, run_dir=Path(scratch)), n_eval=n_eval, norm=entry.threat,
                               eps=parse_eps(entry.info["eps"]))
    attacks = "+".join(r.attack for r in results if r.attack != "worst_case")
    return verified(entry, 100 * results[0].clean_acc, 100 * min(r.robust_acc for r in results),
                    f"{attacks} on {results[0].n_eval} examples")


def verified(entry: Entry, measured_clean: float, measured_robust: float, ran: str) -> Entry:
    """The entry ranked by the lower of its claim and the re-evaluation (percent), or a ``ValueError`` when a claimed
    clean or worst-case robust accuracy sits more than ``VERIFY_TOLERANCE_PTS`` above it (``ran``: what ran)."""
    checks = (("clean accuracy", float(entry.info["clean_acc"]), measured_clean),
              ("worst-case robust accuracy", entry.robust, measured_robust))
    for what, claimed, measured in checks:
        if claimed > measured + VERIFY_TOLERANCE_PTS:
            raise ValueError(f"{entry.source}: claim rejected: {what} {claimed:.2f}% claimed, {measured:.2f}% re-evaluated "
                             f"here ({ran}): {claimed - measured:.2f} points above (tolerance {VERIFY_TOLERANCE_PTS:g})")
    info = {**entry.info, "external": f"{min(entry.robust, measured_robust):.2f}"}
    return Entry(info, entry.threat, entry.source, VERIFIED)


def _inside(entry: Entry, folder: Union[str, Path], text: str, what: str) -> Path:
    """A path an entry names, relative to its file, that must lie inside the submissions folder."""
    path = (Path(entry.source).parent / text).resolve()
    if not path.is_relative_to(Path(folder).resolve()):
        raise ValueError(f"{entry.source}: field {what!r} ({text!r}) points outside the submissions folder {folder}")
    return path


def verify_external(entry: Entry, folder: Union[str, Path], data_root: Optional[str] = None) -> Entry:
    """Re-evaluate a submitted model made elsewhere (fields ``model`` and optional ``weights``, as ``bench eval
    --model`` takes them; a ``file.py:factory`` model runs the submission's code, by the --verify request) with the
    attacks its ``evaluations`` name (else the default ones), in a temporary folder. A claimed clean or worst-case
    robust accuracy more than ``VERIFY_TOLERANCE_PTS`` above the re-evaluation, or a sparsity further than
    ``SPARSITY_TOLERANCE`` from the measured one, is a ValueError; otherwise the entry ranks by the lower figure."""
    where, info = entry.source, entry.info
    model_text = str(info["model"])
    # The model's file (and its weights) must be inside the submissions folder.
    file_part, sep, factory = model_text.rpartition(":") if ":" in model_text else (model_text, "", "")
    if sep and not file_part.endswith(".py"):
        raise ValueError(f"{where}: field 'model' ({model_text!r}) must be file.py:factory, a TorchScript file or a .pt2 "
                         "program, inside the submissions folder")
    model_path = _inside(entry, folder, file_part, "model")
    model = f"{model_path}{sep}{factory}"
    weights = _inside(entry, folder, str(info["weights"]), "weights") if info.get("weights") else None
    attacks = tuple(str(e.get("attack")) for e in info.get("evaluations") or []
                    if isinstance(e, dict) and e.get("attack") not in (None, "worst_case"))
    spec = ExternalSpec(name=str(info["name"]), model=model, dataset=str(info["dataset"]), norm=entry.threat,
                        eps=parse_eps(info["eps"]), n_eval=int(info.get("n_eval") or ExternalSpec.n_eval))
    if attacks:
        spec = dataclasses.replace(spec, attacks=attacks)
    with tempfile.TemporaryDirectory(prefix="bench-verify-") as scratch:
        rows = run_external(spec, scratch, weights, data_root=data_root, show=False)
    measured_robust = 100 * float(rows["robust_acc"].min())
    measured_clean = 100 * float(rows.loc[rows["n_eval"].idxmax(), "clean_acc"])
    measured_sparsity = float(rows["measured_sparsity"].iloc[0])
    if abs(float(info["sparsity"]) - measured_sparsity) > SPARSITY_TOLERANCE:
        raise ValueError(f"{where}: claim rejected: sparsity {float(info['sparsity']):.4f} claimed, {measured_sparsity:.4f} "
                         f"measured from the weights here (tolerance {SPARSITY_TOLERANCE:g})")
    ran = "+".join(a for a in rows["attack"] if a != "worst_case")
    return verified(entry, measured_clean, measured_robust, f"{ran} on {int(rows['n_eval'].max())} examples")


def rank_entries(entries: Sequence[Entry]) -> pd.DataFrame:
    """The leaderboard table: rank 1 = highest worst-case robust accuracy in each (dataset, threat, eps)."""
    seen: Dict[str, str] = {}
    records = []
    for e in entries:
        info = e.info
        run_id = info.get("run_id")
        # One entry per run and threat model (a run evaluated in L-inf and L2 has two).
        key = f"{run_id} {e.threat} {info['eps']}"
        if run_id:
            if key in seen:
                raise ValueError(f"duplicate run_id {run_id!r} ({e.threat}, eps {info['eps']}) in {seen[key]} and {e.source}")
            seen[key] = e.source
        evaluations = info.get("evaluations") or []
        records.append({
            "dataset": info["dataset"], "threat_model": e.threat, "eps": info["eps"], "eps_value": parse_eps(info["eps"]),
            "method": info["method"], "name": info["name"], "architecture": info["architecture"],
            "width": float(info["width"]), "sparsity": float(info["sparsity"]), "density": float(info["density"]),
            "clean_acc": float(info["clean_acc"]), "robust_acc": e.robust,
            "autoattack_acc": percent_or_none(info.get("autoattack_acc")), "reported": percent_or_none(info.get("reported")),
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
    # The page's data as JSON, and the page rendered from that data.
    data = page_data(board)
    json_path = out_dir / "leaderboard.json"
    atomic_write(json_path, json.dumps(data, indent=1, allow_nan=False) + "\n")
    atomic_write(html_path, to_html(data))
    return {"csv": csv_path, "html": html_path, "json": json_path, "entries": [e.source for e in entries], "submitted": len(submitted),
            "board": board}
