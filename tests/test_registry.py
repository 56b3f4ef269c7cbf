"""Registries: duplicates raise, unknown names list the choices, every entry is described."""
from __future__ import annotations

import pytest

from bench.attacks import ATTACKS
from bench.cli import registry_listing
from bench.data import DATASETS
from bench.models import MODELS
from bench.registry import Registry
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
