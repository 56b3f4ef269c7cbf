"""A small decorator registry, one per family (methods, attacks, models, datasets)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Generic, Iterator, List, Tuple, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered object with its name and one-line description."""

    name: str
    obj: T
    description: str


class Registry(Generic[T]):
    """Maps names to objects; registering a name twice raises."""

    def __init__(self, family: str) -> None:
        self.family = family
        self._entries: Dict[str, Entry[T]] = {}

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

    def get(self, name: str) -> T:
        """Return the object registered as ``name``; unknown names list the choices."""
        if name not in self._entries:
            raise ValueError(
                f"unknown {self.family} {name!r}; choices: {', '.join(self.names())}"
            )
        return self._entries[name].obj

    def names(self) -> List[str]:
        """All registered names, sorted."""
        return sorted(self._entries)

    def items(self) -> Iterator[Tuple[str, Entry[T]]]:
        """(name, entry) pairs, sorted by name."""
        for name in self.names():
            yield name, self._entries[name]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)
