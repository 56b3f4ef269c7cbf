"""The ``bench`` subcommands: one module each, registered in :data:`COMMANDS`.

A module defines ``def add(sub: argparse._SubParsersAction) -> None`` that
adds its parser and sets ``func`` (returning the exit code), and calls
``COMMANDS.add(name, add)`` at import. The registry imports every module of
this package on first use, so a new subcommand is one file here.
"""
import argparse
from typing import Callable

from bench.registry import Registry

COMMANDS: Registry[Callable[[argparse._SubParsersAction], None]] = Registry("command", plugins=("bench.commands",))
