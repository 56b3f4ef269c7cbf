"""A small registry, one per family (methods, attacks, trainers, models, datasets, executors, commands).

A registry owns its family's names, descriptions and discovery: given plugin
packages, the first lookup imports every module in them once (each module
registers what it defines), so a new method, attack, trainer or command is
one file. Registering a name twice raises.

Other distributions add entries through a Python entry-point group
(``robust_tickets.methods``, ``robust_tickets.attacks``, ...): an entry point
names a module (imported, so that it registers) or an object (registered
under the entry point's name). A plugin that fails to load is one line on
stderr naming it; everything built in still works. Each entry records where
it comes from (``built in`` or the plugin's distribution).
"""
from __future__ import annotations

import importlib
import importlib.metadata
import pkgutil
import sys
from dataclasses import dataclass
from types import ModuleType
from typing import Callable, Dict, Generic, Iterator, List, Sequence, Tuple, TypeVar

T = TypeVar("T")

# The origin of entries registered by this project's own modules.
BUILT_IN = "built in"


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered object with its name, one-line description and origin."""

    name: str
    obj: T
    description: str
    origin: str = BUILT_IN


def plugin_entry_points(group: str) -> List[importlib.metadata.EntryPoint]:
    """The installed entry points of ``group``, sorted by name (read from the distributions' metadata: nothing is
    imported)."""
    if not group:
        return []
    return sorted(importlib.metadata.entry_points(group=group), key=lambda ep: (ep.name, ep.value))


def entry_point_origin(ep: importlib.metadata.EntryPoint) -> str:
    """``plugin <distribution> (<module:object>)``."""
    dist = ep.dist.name if ep.dist is not None else "?"
    return f"plugin {dist} ({ep.value})"


class Registry(Generic[T]):
    """Maps names to objects; registering a name twice raises; plugin packages and entry points are loaded lazily,
    once."""

    def __init__(self, family: str, plugins: Sequence[str] = (), entry_points: str = "") -> None:
        self.family = family
        self.plugins = tuple(plugins)
        self.entry_points = entry_points
        self._entries: Dict[str, Entry[T]] = {}
        self._discovered = not self.plugins and not self.entry_points
        self._origin = BUILT_IN

    def discover(self) -> None:
        """Import every module of the plugin packages, then load the entry points (once; each module registers
        itself)."""
        if self._discovered:
            return
        # Mark first: plugin modules register while they are being imported.
        self._discovered = True
        for pkg_name in self.plugins:
            pkg = importlib.import_module(pkg_name)
            for info in pkgutil.iter_modules(pkg.__path__):
                importlib.import_module(f"{pkg_name}.{info.name}")
        for ep in plugin_entry_points(self.entry_points):
            self._load(ep)

    def _load(self, ep: importlib.metadata.EntryPoint) -> None:
        """Load one entry point: a module registers what it defines, an object is registered under the entry
        point's name (unless loading it registered that name already). A failure is one line on stderr."""
        self._origin = entry_point_origin(ep)
        before = set(self._entries)
        try:
            obj = ep.load()
            # An object is registered under the entry point's name, unless importing it registered that name.
            if not isinstance(obj, ModuleType) and not (ep.name in self._entries and ep.name not in before):
                self.add(ep.name, obj)
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not break the built-in entries
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            print(f"bench: warning: {self.family} plugin {ep.name!r} ({self._origin}) failed to load, skipped: "
                  f"{type(exc).__name__}: {text}", file=sys.stderr)
        finally:
            self._origin = BUILT_IN

    def register(self, name: str, description: str = "") -> Callable[[T], T]:
        """Decorator that registers ``obj`` under ``name``."""

        def decorator(obj: T) -> T:
            self.add(name, obj, description)
            return obj

        return decorator

    def add(self, name: str, obj: T, description: str = "") -> None:
        """Register ``obj`` under ``name`` (no decorator)."""
        if name in self._entries:
            raise ValueError(f"duplicate {self.family} name {name!r} ({self._entries[name].origin} has it)")
        if not description:
            doc = (getattr(obj, "__doc__", None) or "").strip()
            description = doc.splitlines()[0] if doc else ""
        self._entries[name] = Entry(name, obj, description, self._origin)

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

    def entry(self, name: str) -> Entry[T]:
        """The entry registered as ``name`` (its description and origin too)."""
        self.get(name)
        return self._entries[name]

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
