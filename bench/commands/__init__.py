"""The ``bench`` subcommands: one module each, registered in :data:`COMMANDS`.

A module defines ``def add(sub: argparse._SubParsersAction) -> None`` that
adds its parser and sets ``func`` (returning the exit code), and calls
``COMMANDS.add(name, add)`` at import. The registry imports every module of
this package on first use, so a new subcommand is one file here; another
distribution adds one through the ``robust_tickets.commands`` entry-point group.
"""
import argparse
import ast
from pathlib import Path
from typing import Callable, Dict

from bench.core.registry import Registry, entry_point_origin, plugin_entry_points

# Entry-point group of commands added by other distributions.
COMMAND_GROUP = "robust_tickets.commands"
COMMANDS: Registry[Callable[[argparse._SubParsersAction], None]] = Registry("command", plugins=("bench.commands",), entry_points=COMMAND_GROUP)


def add_progress_flag(parser: argparse.ArgumentParser) -> None:
    """``--no-progress`` for a command that shows progress bars (the CLI runs the command inside its switch)."""
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bars, inner ones included (they are off by themselves when stderr is not "
                             "a terminal)")


def command_summaries() -> Dict[str, str]:
    """Each subcommand's name and one-line help, read from this package's sources without importing them.

    ``bench --help`` and ``bench --version`` use this, so they answer without
    importing torch; a module's ``sub.add_parser("name", help="...")`` call is
    what is read (tests check it agrees with the imported registry).
    """
    found: Dict[str, str] = {}
    for path in sorted(Path(__file__).parent.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            # sub.add_parser("<name>", help="<one line>")
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "add_parser"
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "sub"
                    and node.args and isinstance(node.args[0], ast.Constant)):
                help_text = next((k.value.value for k in node.keywords
                                  if k.arg == "help" and isinstance(k.value, ast.Constant)), "")
                found[str(node.args[0].value)] = str(help_text)
    # Commands of plugins: their entry points' names, read from the distributions' metadata (nothing imported).
    for ep in plugin_entry_points(COMMAND_GROUP):
        found.setdefault(ep.name, f"a command of {entry_point_origin(ep)}")
    return dict(sorted(found.items()))
