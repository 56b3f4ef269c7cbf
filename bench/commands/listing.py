"""``bench list``: every method, dataset, architecture, attack, trainer, executor and command with a one-line
description, and the plugin each came from when it is not built in."""
from __future__ import annotations

import argparse
from typing import Any, Tuple

import torch

from bench.attacks import ATTACKS
from bench.commands import COMMANDS, command_summaries
from bench.core.registry import BUILT_IN, Entry, Registry
from bench.core.results import format_eps
from bench.data import DATASETS, dataset_info
from bench.nn.masking import prunable_layers
from bench.nn.models import MODELS, ModelConfig, build_model
from bench.spec import METHODS
from bench.sweep.executors.base import EXECUTORS
from bench.trainers import TRAINERS

# The input shape the architectures' prunable weights are counted for in `bench list`.
COUNT_DATASET = "cifar10"


def prunable_weights(arch: str, dataset: str = COUNT_DATASET, width: float = 1.0) -> int:
    """Prunable weights (conv + linear) of ``arch`` at ``width`` for ``dataset``'s inputs, counted on the meta device."""
    info = dataset_info(dataset)
    with torch.device("meta"):
        model = build_model(arch, ModelConfig(info.in_channels, info.num_classes, info.image_size, info.mean, info.std, width))
    return sum(layer.weight.numel() for _name, layer in prunable_layers(model))


def origin(entry: Entry[Any]) -> str:
    """Where an entry comes from, shown for a plugin's entries (built-in ones say nothing)."""
    return "" if entry.origin == BUILT_IN else f"  [{entry.origin}]"


def registry_listing() -> str:
    """Every registry entry with its one-line description; datasets with sizes and eps, architectures with sizes."""
    # Methods, with the granularities beyond weights that they prune at (--granularity).
    lines = ["methods:"]
    for name, entry in METHODS.items():
        extra = [g for g in entry.obj.granularities if g != "weight"]
        grains = f" [--granularity {', '.join(['weight'] + extra)}]" if extra else ""
        lines.append(f"  {name:<16} {entry.description}{grains}{origin(entry)}")
    # Datasets: full train/test images, shape and the default L-inf budget.
    lines.append("datasets:                    train / test   shape     eps")
    for name, entry in DATASETS.items():
        info = dataset_info(name)
        shape = f"{info.in_channels}x{info.image_size}x{info.image_size}"
        sizes = f"{'yours':>7} / {'yours':<7}" if info.from_folder else f"{info.train_size:>7,} / {info.test_size:<7,}"
        lines.append(f"  {name:<16} {sizes} {shape:<9} {format_eps(info.default_eps):<6} {entry.description}{origin(entry)}")
    # Architectures: prunable weights at width 1 on CIFAR-10 inputs.
    lines.append(f"architectures:    prunable weights at width 1 ({COUNT_DATASET} inputs)")
    lines += [f"  {name:<16} {prunable_weights(name):>12,}  {entry.description}{origin(entry)}" for name, entry in MODELS.items()]
    registries: Tuple[Tuple[str, Registry[Any]], ...] = (("attacks", ATTACKS), ("trainers", TRAINERS), ("executors", EXECUTORS))
    for title, reg in registries:
        lines.append(f"{title}:")
        lines += [f"  {name:<16} {entry.description}{origin(entry)}" for name, entry in reg.items()]
    # Commands: their one-line help (a command's registered object is the function that adds its parser).
    helps = command_summaries()
    lines.append("commands:")
    for name, command in COMMANDS.items():
        text = helps.get(name, command.description)
        lines.append(f"  {name:<16} {text}{origin(command) if command.origin not in text else ''}")
    return "\n".join(lines)


def add(sub: argparse._SubParsersAction) -> None:
    """Register ``bench list``."""
    p = sub.add_parser("list", help="list methods, datasets, architectures, attacks and trainers")

    def run(args: argparse.Namespace) -> int:
        print(registry_listing())
        return 0

    p.set_defaults(func=run)


COMMANDS.add("list", add)
