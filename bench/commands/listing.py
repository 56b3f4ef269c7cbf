"""``bench list``: every method, dataset, architecture, attack and trainer with a one-line description."""
from __future__ import annotations

import argparse

from bench.attacks import ATTACKS
from bench.commands import COMMANDS
from bench.data import DATASETS
from bench.models import MODELS
from bench.spec import METHODS
from bench.trainers import TRAINERS


def registry_listing() -> str:
    """Every registry entry with its one-line description."""
    lines = []
    for title, reg in (("methods", METHODS), ("datasets", DATASETS), ("architectures", MODELS), ("attacks", ATTACKS),
                       ("trainers", TRAINERS)):
        lines.append(f"{title}:")
        lines += [f"  {name:<16} {entry.description}" for name, entry in reg.items()]
    return "\n".join(lines)


def add(sub: argparse._SubParsersAction) -> None:
    """Register ``bench list``."""
    p = sub.add_parser("list", help="list methods, datasets, architectures, attacks and trainers")

    def run(args: argparse.Namespace) -> int:
        print(registry_listing())
        return 0

    p.set_defaults(func=run)


COMMANDS.add("list", add)
