"""A small registry, one per family (methods, attacks, trainers, models, datasets, commands).

A registry owns its family's names, descriptions and discovery: given plugin
packages, the first lookup imports every module in them once (each module
registers what it defines), so a new method, attack, trainer or command is
one file. Registering a name twice raises.
"""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from typing import Callable, Dict, Generic, Iterator, List, Sequence, Tuple, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered object with its name and one-line description."""

    name: str
    obj: T
    description: str


class Registry(Generic[T]):
    """Maps names to objects; registering a name twice raises; plugin packages are imported lazily, once."""

    def __init__(self, family: str, plugins: Sequence[str] = ()) -> None:
        self.family = family
        self.plugins = tuple(plugins)
        self._entries: Dict[str, Entry[T]] = {}
        self._discovered = not self.plugins

    def discover(self) -> None:
        """Import every module of the plugin packages (once; each module registers itself)."""
        if self._discovered:
            return
        # Mark first: plugin modules register while they are being imported.
        self._discovered = True
        for pkg_name in self.plugins:
            pkg = importlib.import_module(pkg_name)
            for info in pkgutil.iter_modules(pkg.__path__):
                importlib.import_module(f"{pkg_name}.{info.name}")

    def register(self, name: str, description: str = "") -> Callable[[T], T]:
        """Decorator that registers ``obj`` under ``name``."""

        def decorator(obj: T) -> T:
            self.add(name, obj, description)
            return obj

        return decorator

    def add(self, name: str, obj: T, description: str = "") -> None:
        """Register ``obj`` under ``name`` (no decorator)."""
        if name in self._entries:
            raise ValueError(f"duplicate {self.family} name {name!r}")
        if not description:
            doc = (getattr(obj, "__doc__", None) or "").strip()
            description = doc.splitlines()[0] if doc else ""
        self._entries[name] = Entry(name, obj, description)

    def remove(self, name: str) -> None:
        """Unregister ``name`` (tests that register a temporary entry clean up with this)."""
        self._entries.pop(name, None)

    def get(self, name: str) -> T:
        """Return the object registered as ``name``; unknown names list the choices."""
        self.discover()
        if name not in self._entries:
            raise ValueError(
                f"unknown {self.family} {name!r}; choices: {', '.join(self.names())}"
            )
        return self._entries[name].obj

    def names(self) -> List[str]:
        """All registered names, sorted."""
        self.discover()
        return sorted(self._entries)

    def items(self) -> Iterator[Tuple[str, Entry[T]]]:
        """(name, entry) pairs, sorted by name."""
        for name in self.names():
            yield name, self._entries[name]

    def __contains__(self, name: object) -> bool:
        self.discover()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        self.discover()
        return len(self._entries)
