"""Extra ``bench`` subcommands: each module here registers itself in ``bench.cli.COMMANDS``.

A module defines ``def add(sub: argparse._SubParsersAction) -> None`` that adds
its parser and sets ``func``, and calls ``COMMANDS.add(name, add)`` at import.
"""
