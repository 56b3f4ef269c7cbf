"""The "add a method / an attack / a trainer" examples of docs/architecture.md work as written."""
from __future__ import annotations

import re
import sys
import types
from pathlib import Path
from typing import Any, Dict, Iterator

import pytest

from bench.attacks import ATTACKS, make_attack
from bench.harness import run_spec
from bench.spec import METHODS, RunSpec
from bench.trainers import TRAINERS

DOC = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"


@pytest.fixture
def examples() -> Iterator[Dict[str, Any]]:
    """Execute every Python block of the architecture doc; unregister what they registered afterwards."""
    METHODS.discover()
    ATTACKS.discover()
    TRAINERS.discover()
    # A module of its own, as a newcomer's file would be (typing resolves annotations through it).
    module = types.ModuleType("docs_architecture_examples")
    sys.modules[module.__name__] = module
    namespace: Dict[str, Any] = module.__dict__
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    assert len(blocks) == 3
    try:
        for block in blocks:
            exec(compile(block, str(DOC), "exec"), namespace)  # noqa: S102 - the project's own documentation
        yield namespace
    finally:
        METHODS.remove("my-method")
        ATTACKS.remove("my-attack")
        TRAINERS.remove("my-trainer")
        sys.modules.pop(module.__name__, None)


def test_documented_extensions_register_and_run(examples: Dict[str, Any], tmp_path: Path, tiny_spec_kwargs: Dict[str, Any]) -> None:
    assert "my-method" in METHODS and "my-attack" in ATTACKS and "my-trainer" in TRAINERS
    assert make_attack("my-attack:steps=3", 0.1).settings()["steps"] == 3
    with pytest.raises(ValueError, match="unknown my-method scope 'row'"):
        RunSpec(**{**tiny_spec_kwargs, "method": "my-method", "hparams": {"scope": "row"}})
    spec = RunSpec(**{**tiny_spec_kwargs, "method": "my-method", "trainer": "my-trainer", "sparsity": 0.5,
                      "hparams": {"scope": "global"}})
    rows = run_spec(spec, tmp_path, show=False)
    assert set(rows["method"]) == {"my-method"}
    assert abs(float(rows["measured_sparsity"].iloc[0]) - 0.5) < 0.01
