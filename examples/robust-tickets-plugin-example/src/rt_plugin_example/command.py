"""``bench hello-plugin``: a subcommand added by a plugin (it lists the methods the registry sees)."""
from __future__ import annotations

import argparse

from bench.spec import METHODS


def add(sub: argparse._SubParsersAction) -> None:
    """Register ``bench hello-plugin``."""
    p = sub.add_parser("hello-plugin", help="say which methods this installation has (plugin example)")

    def run(args: argparse.Namespace) -> int:
        print("methods: " + ", ".join(METHODS.names()))
        return 0

    p.set_defaults(func=run)
