"""The ``bench`` command line: one parser with every subcommand registered in :data:`bench.commands.COMMANDS`.

Flags of ``bench run`` are generated from :class:`bench.spec.RunSpec`; bad
input prints one line to stderr and exits with code 2.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import os
import sys
from typing import NoReturn, Optional, Sequence

from bench.commands import COMMANDS, command_summaries
from bench.core.allocator import keep_freed_memory
from bench.core.errors import TrainingDivergedError
from bench.core.progress import progress

__all__ = ["build_parser", "main", "summary_parser"]

# oneDNN primitives cached per input shape (CPU). Early-stopping PGD shrinks its
# batch at every step, so the default cache (1024 primitives) filled with one
# entry per shape and held ~200 MB more by the third epoch of the default run;
# 64 entries cost no measurable speed. Read by oneDNN at its first primitive.
ONEDNN_CACHE_CAPACITY = "64"


class OneLineErrorParser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line on stderr (exit code 2), like every other bad input."""

    def error(self, message: str) -> NoReturn:
        """Print ``<prog>: error: <message>`` and exit 2."""
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def package_version() -> str:
    """The installed distribution's version ('unknown' when run from a plain checkout)."""
    try:
        return importlib.metadata.version("robust-tickets")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _top_parser() -> argparse.ArgumentParser:
    """The top-level parser without subcommands."""
    parser = OneLineErrorParser(prog="bench", description="Benchmark harness for robust tickets.")
    parser.add_argument("--version", action="version", version=f"bench (robust-tickets) {package_version()}")
    return parser


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every registered subcommand."""
    parser = _top_parser()
    # Commands without bars have no --no-progress flag; the switch is read for every command.
    parser.set_defaults(no_progress=False)
    sub = parser.add_subparsers(dest="command", required=True)
    for _name, entry in COMMANDS.items():
        entry.obj(sub)
    return parser


def summary_parser() -> argparse.ArgumentParser:
    """The top-level parser with each subcommand's name and help only (nothing imported: ``bench --help`` is fast)."""
    parser = _top_parser()
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in command_summaries().items():
        sub.add_parser(name, help=help_text)
    return parser


def _say(message: str) -> None:
    """One line on stderr, starting at the left edge even over a progress bar's remains on a terminal."""
    clear = "\r\x1b[K" if sys.stderr.isatty() else ""
    print(f"{clear}{message}", file=sys.stderr)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``bench`` console script: Ctrl-C at any moment, imports included, is one line."""
    try:
        return _main(argv)
    except KeyboardInterrupt:
        _say("bench: interrupted; finished work is kept, rerun the same command to resume")
        return 130


def _main(argv: Optional[Sequence[str]] = None) -> int:
    """Parse the command line (importing the commands) and run the command."""
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", ONEDNN_CACHE_CAPACITY)
    # Freed tensors stay in the process (no page fault per new activation): bench/core/allocator.py.
    keep_freed_memory()
    words = list(sys.argv[1:] if argv is None else argv)
    # Top-level help, --version, no or an unknown command: answered from the sources, before torch is imported.
    if not words or words[0] not in command_summaries():
        summary_parser().parse_args(words)
    parser = build_parser()
    args = parser.parse_args(words)
    try:
        with progress(not args.no_progress):
            code = args.func(args)
    except TrainingDivergedError as exc:
        _say(f"bench: run failed: {exc}")
        return 1
    except ValueError as exc:
        _say(f"bench: error: {exc}")
        return 2
    except OSError as exc:
        # An output path that is a file, a read-only folder, a full disk: one line naming the path.
        where = f" {exc.filename}" if exc.filename else ""
        _say(f"bench: error: cannot use{where}: {exc.strerror or exc}")
        return 2
    return int(code or 0)
