"""bench leaderboard: ranking, entry JSONs, submission validation, and the HTML page in headless Chromium."""
from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pandas as pd
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from bench.cli import main
from bench.core.io import file_sha256
from bench.harness import evaluate_run, load_finished_ticket
from bench.methods.ticket import read_spec
from bench.reporting.entries import load_submissions, validate_entry
from bench.reporting.leaderboard import MANIFEST, build_leaderboard, rank_entries


def tidy_rows() -> pd.DataFrame:
    """runs.csv-like rows for five tickets in two (dataset, eps) groups, two attacks + worst case each."""
    tickets = [
        # run_id, method, dataset, eps, width, sparsity, clean, pgd, cw, worst
        ("a10000000000", "rst", "fashion-mnist", 0.1, 1.0, 0.9, 0.80, 0.52, 0.50, 0.48),
        ("a20000000000", "hydra", "fashion-mnist", 0.1, 1.0, 0.9, 0.84, 0.60, 0.58, 0.57),
        ("a30000000000", "lwm", "fashion-mnist", 0.1, 2.0, 0.99, 0.70, 0.40, 0.42, 0.39),
        ("b10000000000", "rst", "mnist", 0.3, 1.0, 0.5, 0.97, 0.85, 0.88, 0.84),
        ("b20000000000", "dense-at", "mnist", 0.3, 1.0, 0.0, 0.98, 0.90, 0.91, 0.89),
    ]
    records = []
    for run_id, method, dataset, eps, width, sparsity, clean, pgd, cw, worst in tickets:
        for attack, robust, version, eot in (("pgd20", pgd, "", 1), ("cw20", cw, "", 1), ("worst_case", worst, "pgd20+cw20", "")):
            records.append({"run_id": run_id, "method": method, "dataset": dataset, "arch": "convnet", "width": width,
                            "target_sparsity": sparsity, "measured_sparsity": sparsity, "seed": 0, "attack": attack,
                            "norm": "Linf", "eps": eps, "version": version, "eot_samples": eot, "n_eval": 500,
                            "clean_acc": clean, "robust_acc": robust, "flags": "", "status": "ok"})
    return pd.DataFrame(records)


def submission(**overrides: Any) -> Dict[str, Any]:
    """A valid submitted entry (RobustBench fields + ours)."""
    entry = {
        "link": "https://example.org/paper", "name": "Someone's sparse ticket", "authors": "A. Author",
        "additional_data": False, "number_forward_passes": 1, "dataset": "fashion-mnist", "venue": "N/A",
        "architecture": "ConvNet", "eps": "0.1", "clean_acc": "82.00", "reported": "55.00", "autoattack_acc": "53.50",
        "unreliable": False, "footnote": None, "sparsity": 0.95, "density": 0.05, "width": 1.0, "method": "their-method",
        "randomized": False, "eot_iter": 1, "non_adaptive": False, "flags": "",
    }
    entry.update(overrides)
    return entry


@pytest.fixture()
def csv_path(tmp_path: Path) -> Path:
    path = tmp_path / "runs.csv"
    tidy_rows().to_csv(path, index=False)
    return path


def test_ranking_within_dataset_threat_and_eps(tmp_path: Path) -> None:
    result = build_leaderboard(tidy_rows(), tmp_path / "lb")
    board = pd.read_csv(tmp_path / "lb" / "leaderboard.csv", dtype={"eps": str})
    assert len(board) == 5 and len(result["entries"]) == 5
    fm = board[board["dataset"] == "fashion-mnist"]
    assert list(fm["method"]) == ["hydra", "rst", "lwm"] and list(fm["rank"]) == [1, 2, 3]
    assert list(fm["robust_acc"]) == [57.0, 48.0, 39.0]
    mn = board[board["dataset"] == "mnist"]
    assert list(mn["method"]) == ["dense-at", "rst"] and list(mn["rank"]) == [1, 2]
    assert set(board["eps"]) == {"0.1", "0.3"} and set(board["threat_model"]) == {"Linf"}
    for col in ("sparsity", "width", "method", "density", "clean_acc", "robust_acc"):
        assert col in board.columns
    assert board.set_index("run_id").loc["a30000000000", "width"] == 2.0
    assert board.set_index("run_id").loc["a30000000000", "attacks"] == "pgd20+cw20"


def test_the_page_is_rendered_from_its_json_data(tmp_path: Path) -> None:
    """leaderboard.json holds what the page shows (one group per dataset, threat and eps, rows in rank order);
    the page rendered from that file is the page written, and a rendered value is escaped by the template."""
    import json

    from bench.reporting.page import to_html

    rows = tidy_rows()
    rows.loc[0, "method"] = "<script>alert(1)</script>"
    result = build_leaderboard(rows, tmp_path / "lb")
    data = json.loads(result["json"].read_text())
    assert [(g["dataset"], g["eps"]) for g in data["groups"]] == [("fashion-mnist", "0.1"), ("mnist", "0.3")]
    assert [r["rank"] for r in data["groups"][0]["rows"]] == [1, 2, 3]
    html_text = result["html"].read_text()
    assert to_html(data) == html_text
    assert "<script>alert(1)</script>" not in html_text and "&lt;script&gt;alert(1)&lt;/script&gt;" in html_text
    assert html_text.count("<table class=\"board\">") == 2


def test_entry_jsons_have_robustbench_and_extended_fields(tmp_path: Path) -> None:
    build_leaderboard(tidy_rows(), tmp_path / "lb")
    files = sorted((tmp_path / "lb" / "entries").rglob("*.json"))
    assert len(files) == 5
    info = json.loads(next(f for f in files if "a20000000000" in f.name).read_text())
    for field in ("link", "name", "authors", "additional_data", "number_forward_passes", "dataset", "venue",
                  "architecture", "eps", "clean_acc", "reported", "autoattack_acc", "unreliable", "footnote",
                  "sparsity", "density", "width", "method", "randomized", "eot_iter", "non_adaptive", "flags"):
        assert field in info, field
    assert info["clean_acc"] == "84.00" and info["reported"] == "60.00" and info["method"] == "hydra"
    assert info["sparsity"] == 0.9 and info["density"] == pytest.approx(0.1)
    validate_entry(info, "exported")


def test_ties_share_a_rank(tmp_path: Path) -> None:
    rows = tidy_rows()
    # a1's worst case ties a2's (the per-attack figures stay at or above the worst case, as they must).
    rows.loc[rows["run_id"] == "a10000000000", "robust_acc"] = 0.58
    rows.loc[(rows["run_id"] == "a10000000000") & (rows["attack"] == "worst_case"), "robust_acc"] = 0.57
    board = build_leaderboard(rows, tmp_path / "lb")["board"]
    fm = board[board["dataset"] == "fashion-mnist"]
    assert list(fm["rank"]) == [1, 1, 3]


def test_submissions_are_merged_and_ranked(tmp_path: Path) -> None:
    subs = tmp_path / "subs" / "fashion-mnist" / "Linf"
    subs.mkdir(parents=True)
    (subs / "theirs.json").write_text(json.dumps(submission()))
    result = build_leaderboard(tidy_rows(), tmp_path / "lb", submissions=tmp_path / "subs")
    assert result["submitted"] == 1
    fm = result["board"][result["board"]["dataset"] == "fashion-mnist"]
    # No 'external' field: its worst case is the lowest robust figure it gives (AutoAttack 53.50).
    assert list(fm["method"]) == ["hydra", "their-method", "rst", "lwm"]
    assert fm.iloc[1]["robust_acc"] == 53.5 and fm.iloc[1]["entry"].endswith("theirs.json") and fm.iloc[1]["source"] == "submitted"


def write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, message", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "an entry must be a JSON object"),
    (json.dumps({k: v for k, v in submission().items() if k != "clean_acc"}), "missing required field 'clean_acc'"),
    (json.dumps(submission(clean_acc=82.0)), "field 'clean_acc' must be str, got 82.0 (float)"),
    (json.dumps(submission(clean_acc="82%")), "field 'clean_acc' must be a percent string"),
    (json.dumps(submission(autoattack_acc="101.00")), "field 'autoattack_acc' must be a percent string between 0 and 100"),
    (json.dumps(submission(additional_data="no")), "field 'additional_data' must be bool"),
    (json.dumps(submission(number_forward_passes=True)), "field 'number_forward_passes' must be int"),
    (json.dumps(submission(sparsity=1.2, density=-0.2)), "field 'sparsity' must be the fraction of zero weights"),
    (json.dumps(submission(density=0.5)), "field 'density' must equal 1 - sparsity"),
    (json.dumps(submission(width=0)), "field 'width' must be > 0"),
    (json.dumps(submission(eps="eight")), "field 'eps': cannot read eps 'eight'"),
    (json.dumps(submission(eps="2")), "field 'eps' must be in (0, 1]"),
    (json.dumps(submission(eot_iter=0)), "field 'eot_iter' must be >= 1"),
    (json.dumps(submission(threat_model="L7")), "field 'threat_model' must be one of Linf, L2"),
    (json.dumps(submission(method=" ")), "field 'method' must not be empty"),
    (json.dumps(submission(reported=None, autoattack_acc=None)), "must give a robust accuracy"),
    (json.dumps(submission(autoattack_acc="90.00")), "field 'autoattack_acc' (90.00) is above clean_acc"),
    (json.dumps(submission(score=3)), "unknown field 'score'"),
])
def test_bad_submission_is_rejected_naming_the_field(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path / "subs", "bad.json", text)
    with pytest.raises(ValueError) as err:
        load_submissions(tmp_path / "subs")
    assert message in str(err.value) and str(path) in str(err.value)


def test_duplicate_run_ids_are_rejected(tmp_path: Path) -> None:
    write(tmp_path / "subs", "x.json", json.dumps(submission(run_id="a10000000000")))
    with pytest.raises(ValueError, match="duplicate run_id 'a10000000000'"):
        build_leaderboard(tidy_rows(), tmp_path / "lb", submissions=tmp_path / "subs")


def test_cli_writes_outputs_and_rejects_bad_submission(csv_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "lb"
    rb = tmp_path / "rb"
    assert main(["leaderboard", str(csv_path), "--out", str(out), "--robustbench-json", str(rb)]) == 0
    assert (out / "leaderboard.csv").exists() and (out / "leaderboard.html").exists()
    assert len(list(rb.rglob("*.json"))) == 5
    assert "5 entr(ies): 5 local, 0 submitted" in capsys.readouterr().out
    assert main(["leaderboard", str(csv_path), "--where", "dataset=mnist", "--out", str(out)]) == 0
    assert len(pd.read_csv(out / "leaderboard.csv")) == 2
    assert len(list((out / "entries").rglob("*.json"))) == 2
    write(tmp_path / "subs", "bad.json", json.dumps(submission(density=0.5)))
    assert main(["leaderboard", str(csv_path), "--out", str(tmp_path / "lb3"), "--submissions", str(tmp_path / "subs")]) == 2
    err = capsys.readouterr().err
    assert "bad.json: field 'density' must equal 1 - sparsity" in err
    assert not (tmp_path / "lb3" / "leaderboard.csv").exists()


def test_submissions_only(tmp_path: Path) -> None:
    write(tmp_path / "subs", "one.json", json.dumps(submission()))
    assert main(["leaderboard", "--submissions", str(tmp_path / "subs"), "--out", str(tmp_path / "lb")]) == 0
    assert list(pd.read_csv(tmp_path / "lb" / "leaderboard.csv")["method"]) == ["their-method"]


def test_rank_entries_empty() -> None:
    assert rank_entries([]).empty


# ---------------------------------------------------------------------------
# The HTML page in a real headless browser (Debian's chromium + chromium-driver).
# ---------------------------------------------------------------------------

@pytest.fixture()
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    assert chromium, "Debian's chromium is required (apt-get install chromium chromium-driver)"
    assert driver_path, "chromedriver is required (apt-get install chromium-driver)"
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
                f"--user-data-dir={tmp_path / 'chrome-profile'}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def column_texts(table: Any, index: int) -> List[str]:
    """Visible text of one column of a table's body rows, in page order."""
    return [row.find_elements(By.TAG_NAME, "td")[index].text for row in table.find_elements(By.CSS_SELECTOR, "tbody tr")]


def test_html_page_sorts_and_filters_in_chromium(tmp_path: Path, browser: webdriver.Chrome) -> None:
    result = build_leaderboard(tidy_rows(), tmp_path / "lb")
    page = result["html"].read_text()
    assert "http://" not in page and "https://" not in page and "<script src" not in page and "<link" not in page
    browser.get(result["html"].resolve().as_uri())
    tables = browser.find_elements(By.CSS_SELECTOR, "table.board")
    assert len(tables) == 2
    fm = next(t for t in tables if "hydra" in t.text)
    headers = [h.text for h in fm.find_elements(By.CSS_SELECTOR, "thead th")]
    method_col, robust_col = headers.index("method"), headers.index("worst-case robust (%)")
    # Rows present, in rank order.
    assert column_texts(fm, method_col) == ["hydra", "rst", "lwm"]
    assert len(browser.find_elements(By.CSS_SELECTOR, "table.board tbody tr")) == 5
    # Clicking the robust-accuracy header sorts ascending, clicking again descending.
    header = fm.find_elements(By.CSS_SELECTOR, "thead th")[robust_col]
    header.click()
    assert column_texts(fm, robust_col) == ["39.00", "48.00", "57.00"]
    assert column_texts(fm, method_col) == ["lwm", "rst", "hydra"]
    header.click()
    assert column_texts(fm, robust_col) == ["57.00", "48.00", "39.00"]
    # Text columns sort alphabetically.
    fm.find_elements(By.CSS_SELECTOR, "thead th")[method_col].click()
    assert column_texts(fm, method_col) == ["hydra", "lwm", "rst"]
    # The filter box hides rows that do not match.
    box = browser.find_element(By.ID, "filter")
    box.send_keys("hydra")
    visible = [r for r in browser.find_elements(By.CSS_SELECTOR, "table.board tbody tr") if r.is_displayed()]
    assert len(visible) == 1 and "hydra" in visible[0].text


def test_external_above_an_attack_is_refused() -> None:
    """A worst case above AutoAttack's (or PGD's) own figure is a claim nobody could have measured."""
    with pytest.raises(ValueError, match=r"'external' \(80.00\) is above autoattack_acc \(5.00\)"):
        validate_entry(submission(external="80.00", autoattack_acc="5.00"), "x.json")
    with pytest.raises(ValueError, match=r"'external' \(56.00\) is above reported \(55.00\)"):
        validate_entry(submission(external="56.00", autoattack_acc=None), "x.json")
    assert validate_entry(submission(external="50.00"), "x.json")["external"] == "50.00"


TINY_RUN = ["--arch", "mlp", "--width", "0.1", "--epochs", "1", "--train-steps", "1", "--n-train", "300",
            "--n-eval", "60", "--eval-attacks", "pgd20", "--device", "cpu", "--batch-size", "100"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Any]:
    """A tiny finished ticket's run folder and its measured clean and PGD-20 accuracy (percent)."""
    out = tmp_path_factory.mktemp("verify-run")
    assert main(["run", "--out", str(out), *TINY_RUN]) == 0
    rows = pd.read_csv(out / "runs.csv")
    row = rows[rows["attack"] == "pgd20"].iloc[0]
    return {"run": next((out / "runs").iterdir()), "clean": 100 * row["clean_acc"], "robust": 100 * row["robust_acc"]}


def _submit(folder: Path, run: Path, **claims: Any) -> Path:
    """A submissions folder holding a copy of ``run`` and one entry naming it, with ``claims``."""
    folder.mkdir()
    shutil.copytree(run, folder / "ticket")
    (folder / "entry.json").write_text(json.dumps(submission(ticket="ticket", n_eval=60, autoattack_acc=None, **claims)))
    return folder


def test_verify_confirms_an_honest_claim(finished_run: Dict[str, Any], tmp_path: Path) -> None:
    """The re-evaluation reproduces the run's own figures, so its claim stands, marked verified."""
    subs = _submit(tmp_path / "subs", finished_run["run"], clean_acc=f"{finished_run['clean']:.2f}",
                   reported=f"{finished_run['robust']:.2f}")
    before = sorted(p.relative_to(subs) for p in subs.rglob("*"))
    build_leaderboard(None, tmp_path / "lb", subs, verify=True)
    board = pd.read_csv(tmp_path / "lb" / "leaderboard.csv")
    assert list(board["source"]) == ["submitted, verified here"]
    assert board["robust_acc"].iloc[0] == pytest.approx(finished_run["robust"], abs=0.01)
    # Nothing was written next to the submission (the evaluation cache went to a temporary folder).
    assert sorted(p.relative_to(subs) for p in subs.rglob("*")) == before


def test_verify_rejects_an_inflated_claim_saying_by_how_much(finished_run: Dict[str, Any], tmp_path: Path) -> None:
    assert finished_run["clean"] - finished_run["robust"] > 5, "the tiny ticket must leave room for a false claim"
    claimed = finished_run["robust"] + 5
    subs = _submit(tmp_path / "subs", finished_run["run"], clean_acc=f"{finished_run['clean']:.2f}", reported=f"{claimed:.2f}")
    with pytest.raises(ValueError, match=r"claim rejected: worst-case robust accuracy .* claimed, .* re-evaluated here "
                                         r"\(pgd20 on 60 examples\): 5.00 points above"):
        build_leaderboard(None, tmp_path / "lb", subs, verify=True)
    assert not (tmp_path / "lb").exists()


def test_verify_evaluates_an_l2_claim_in_l2(finished_run: Dict[str, Any], tmp_path: Path) -> None:
    """An L2 entry of an L-inf-trained ticket is re-evaluated in L2 at the entry's budget: the honest claim stands,
    one 5 points above is rejected (it was refused as a budget mismatch before, whatever it claimed)."""
    spec = read_spec(finished_run["run"]).resolve()
    ticket = load_finished_ticket(spec, finished_run["run"])
    with tempfile.TemporaryDirectory() as scratch:
        results = evaluate_run(dataclasses.replace(ticket, run_dir=Path(scratch)), n_eval=60, norm="L2", eps=0.5)
    clean, robust = 100 * results[0].clean_acc, 100 * min(r.robust_acc for r in results)
    assert clean - robust > 5, "the tiny ticket must leave room for a false claim"
    claims = {"threat_model": "L2", "eps": "0.5", "clean_acc": f"{clean:.2f}"}
    subs = _submit(tmp_path / "subs", finished_run["run"], reported=f"{robust:.2f}", **claims)
    build_leaderboard(None, tmp_path / "lb", subs, verify=True)
    board = pd.read_csv(tmp_path / "lb" / "leaderboard.csv")
    assert list(board["threat_model"]) == ["L2"] and list(board["source"]) == ["submitted, verified here"]
    assert board["robust_acc"].iloc[0] == pytest.approx(robust, abs=0.01)
    inflated = _submit(tmp_path / "inflated", finished_run["run"], reported=f"{robust + 5:.2f}", **claims)
    with pytest.raises(ValueError, match="claim rejected: worst-case robust accuracy"):
        build_leaderboard(None, tmp_path / "lb2", inflated, verify=True)


@pytest.mark.parametrize("ticket, message", [(None, "needs a 'ticket' field"), ("../elsewhere", "points outside")])
def test_verify_needs_a_ticket_inside_the_folder(ticket: Any, message: str, tmp_path: Path) -> None:
    subs = tmp_path / "subs"
    subs.mkdir()
    entry = submission() if ticket is None else submission(ticket=ticket)
    (subs / "entry.json").write_text(json.dumps(entry))
    with pytest.raises(ValueError, match=message):
        build_leaderboard(None, tmp_path / "lb", subs, verify=True)


def test_a_forged_manifest_deletes_nothing_outside_what_the_board_wrote(csv_path: Path, tmp_path: Path) -> None:
    """Issue 33: a manifest line naming runs.csv (or any file the board did not write) never deletes it."""
    out = tmp_path / "lb"
    entries = out / "entries"
    entries.mkdir(parents=True)
    mine = entries / "mine.json"
    mine.write_text("{}")
    # Old format (absolute paths), a path leading out, and a correct hash of a file the tool did not write.
    (entries / MANIFEST).write_text(f"{csv_path.resolve()}\n{file_sha256(csv_path)}  ../../{csv_path.name}\n"
                                    f"{file_sha256(csv_path)}  {csv_path.resolve()}\n{file_sha256(mine)}  other.json\n")
    before = csv_path.read_bytes()
    assert main(["leaderboard", str(csv_path), "--out", str(out)]) == 0
    assert csv_path.read_bytes() == before and mine.exists()
    # What the board did write, and still holds the content it wrote, is pruned when no longer selected.
    assert main(["leaderboard", str(csv_path), "--where", "dataset=mnist", "--out", str(out)]) == 0
    assert len(list(entries.rglob("*.json"))) == 3  # 2 mnist entries + mine.json
    assert mine.exists() and csv_path.read_bytes() == before


def test_an_entry_edited_after_writing_is_not_deleted(csv_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "lb"
    assert main(["leaderboard", str(csv_path), "--out", str(out)]) == 0
    edited = sorted((out / "entries").rglob("*.json"))
    fm = [p for p in edited if "fashion-mnist" in str(p)]
    fm[0].write_text(fm[0].read_text() + " ")
    assert main(["leaderboard", str(csv_path), "--where", "dataset=mnist", "--out", str(out)]) == 0
    assert fm[0].exists() and not fm[1].exists()


def test_the_board_never_overwrites_its_input(csv_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "lb"
    out.mkdir()
    rows = out / "leaderboard.csv"
    rows.write_bytes(csv_path.read_bytes())
    assert main(["leaderboard", str(rows), "--out", str(out)]) == 2
    assert "--out" in capsys.readouterr().err and rows.read_bytes() == csv_path.read_bytes()
    assert not (out / "entries").exists()
