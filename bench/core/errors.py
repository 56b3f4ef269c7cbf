"""Exceptions the command line tells apart (a leaf module: importing it imports nothing heavy)."""
from __future__ import annotations


class TrainingDivergedError(RuntimeError):
    """The loss became NaN/inf or exploded."""
