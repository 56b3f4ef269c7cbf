"""Registries: duplicates raise, unknown names list the choices, every entry is described."""
from __future__ import annotations

import builtins
from pathlib import Path

import pytest

from bench.attacks import ATTACKS
from bench.commands.listing import registry_listing
from bench.core.registry import Registry
from bench.data import DATASETS
from bench.nn.models import MODELS
from bench.spec import METHODS


def test_duplicate_name_raises() -> None:
    reg: Registry[int] = Registry("thing")
    reg.add("a", 1, "first")
    with pytest.raises(ValueError, match="duplicate thing name 'a'"):
        reg.add("a", 2, "second")


def test_unknown_name_lists_choices() -> None:
    reg: Registry[int] = Registry("thing")
    reg.add("b", 1, "x")
    reg.add("a", 2, "y")
    with pytest.raises(ValueError, match="unknown thing 'c'; choices: a, b"):
        reg.get("c")


def test_decorator_returns_object_and_uses_docstring() -> None:
    reg: Registry = Registry("thing")

    @reg.register("f")
    def f() -> None:
        """Does f."""

    assert reg.get("f") is f
    assert dict(reg.items())["f"].description == "Does f."


@pytest.mark.parametrize("registry", [METHODS, DATASETS, MODELS, ATTACKS], ids=lambda r: r.family)
def test_every_entry_has_description_and_is_listed(registry: Registry) -> None:
    listing = registry_listing()
    assert len(registry) > 0
    for name, entry in registry.items():
        assert entry.description, f"{registry.family} {name} has no description"
        assert name in listing


def test_plugins_are_discovered_once_on_first_lookup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A registry imports its plugin packages lazily and only once (each module registers itself)."""
    pkg = tmp_path / "toy_plugins_once"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "one.py").write_text("import builtins\nbuiltins.TOY_REG.add('one', 1, 'first')\nbuiltins.TOY_IMPORTS += 1\n")
    (pkg / "two.py").write_text("import builtins\nbuiltins.TOY_REG.add('two', 2, 'second')\nbuiltins.TOY_IMPORTS += 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    reg: Registry[int] = Registry("toy", plugins=("toy_plugins_once",))
    monkeypatch.setattr(builtins, "TOY_REG", reg, raising=False)
    monkeypatch.setattr(builtins, "TOY_IMPORTS", 0, raising=False)
    assert builtins.TOY_IMPORTS == 0  # type: ignore[attr-defined]
    assert reg.names() == ["one", "two"]
    assert reg.get("two") == 2 and "one" in reg and len(reg) == 2
    assert builtins.TOY_IMPORTS == 2  # type: ignore[attr-defined]
