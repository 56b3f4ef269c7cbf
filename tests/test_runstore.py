"""The run store (issue 32): methods and tools ask it for a run's spec, meta, ticket and sibling runs."""
from __future__ import annotations

import ast
import dataclasses
import shutil
from pathlib import Path
from typing import Any, Dict

import pytest

from bench.harness import run_spec
from bench.methods.runstore import RunStore
from bench.spec import RunSpec

ROOT = Path(__file__).resolve().parent.parent
# Functions that name a run folder's files or read them: a method asks the store instead.
RUN_FILE_CALLS = {"run_dir", "runs_root", "out_of_run", "spec", "meta", "ticket", "status", "read_spec", "read_meta",
                  "load_ticket"}


def test_the_store_finds_a_finished_run_by_spec_and_nothing_else(tmp_path: Path, tiny_spec_kwargs: Dict[str, Any]) -> None:
    spec = RunSpec(**{**tiny_spec_kwargs, "sparsity": 0.5}).resolve()
    run_spec(spec, tmp_path, show=False)
    store = RunStore(tmp_path)
    assert store.has_ticket(spec) and store.spec(spec.run_id).canonical() == spec.canonical()
    assert store.meta(spec.run_id)["measured_sparsity"] == pytest.approx(0.5, abs=0.01)
    assert not store.ticket(spec.run_id).training
    assert RunStore.of_run(store.folder(spec.run_id)) == store == RunStore.of_stages(tmp_path / "stages")
    # Another spec has no ticket, even when its folder holds a copy of this run's files.
    other = dataclasses.replace(spec, seed=1)
    assert not store.has_ticket(other)
    shutil.copytree(store.folder(spec.run_id), store.folder(other.run_id))
    assert not store.has_ticket(other)


def run_file_calls(path: Path) -> list:
    """Calls in ``path`` of ``paths.<run file>`` or of the ticket readers."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "paths" \
                and func.attr in RUN_FILE_CALLS:
            found.append(f"paths.{func.attr} (line {node.lineno})")
        if isinstance(func, ast.Name) and func.id in {"read_spec", "read_meta", "load_ticket"}:
            found.append(f"{func.id} (line {node.lineno})")
    return found


@pytest.mark.parametrize("path", sorted(p.relative_to(ROOT).as_posix() for pkg in ("tickets", "baselines")
                                        for p in (ROOT / pkg).glob("*.py")))
def test_no_method_builds_a_run_folder_path(path: str) -> None:
    """A method file finds other runs through RunStore, never by building their folders or reading their files."""
    assert run_file_calls(ROOT / path) == []
