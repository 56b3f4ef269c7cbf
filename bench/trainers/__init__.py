"""Training losses: one registry (:data:`TRAINERS`), one file per trainer (Madry PGD-AT, TRADES, clean)."""
from bench.trainers.base import TRAINERS, Trainer, TrainSettings

__all__ = ["TRAINERS", "TrainSettings", "Trainer"]
