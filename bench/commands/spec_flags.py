"""``bench run`` flags generated from :class:`RunSpec` and every method's hyperparameters; specs from flags."""
from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any, Dict, List

from bench.config import build_dataclass, choice_names, field_types, load_yaml
from bench.spec import METHODS, RunSpec


def _type_name(tp: Any) -> str:
    """Readable type for --help."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return getattr(args[0] if args else tp, "__name__", str(tp))


def _text(value: Any) -> str:
    """A default as a user types it: tuples comma-separated."""
    return ",".join(str(v) for v in value) if isinstance(value, tuple) else str(value)


def add_spec_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per RunSpec field and per method hyperparameter (defaults suppressed; choices listed)."""
    types = field_types(RunSpec)
    group = parser.add_argument_group("run spec (also settable in --config YAML)")
    for f in dataclasses.fields(RunSpec):
        if f.name == "hparams":
            continue
        default = _text(f.default)
        choices = f.metadata.get("choices")
        group.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, default=argparse.SUPPRESS,
                           choices=choice_names(choices) if choices is not None else None,
                           metavar=_type_name(types[f.name]).upper(),
                           help=f"{f.metadata['help']} [default: {default}]".replace("%", "%%")
                                + (f"; choices: {', '.join(choice_names(choices))}" if choices is not None else ""))
    # Method hyperparameters: one flag per name, labelled with every method that has it.
    owners: Dict[str, List[str]] = {}
    first: Dict[str, Any] = {}
    for name, entry in METHODS.items():
        for hf in dataclasses.fields(entry.obj.Hparams):
            owners.setdefault(hf.name, []).append(name)
            first.setdefault(hf.name, (hf, field_types(entry.obj.Hparams)[hf.name]))
    hp_group = parser.add_argument_group("method hyperparameters (YAML: under 'hparams:')")
    for hp_name, (hf, tp) in first.items():
        choices = hf.metadata.get("choices")
        hp_group.add_argument(f"--{hp_name.replace('_', '-')}", dest=f"hp__{hp_name}", default=argparse.SUPPRESS,
                              metavar=_type_name(tp).upper(),
                              help=f"{hf.metadata.get('help', hp_name)} [{', '.join(owners[hp_name])}; "
                                   f"default: {_text(hf.default)}]".replace("%", "%%")
                                   + (f"; choices: {', '.join(choice_names(choices))}" if choices is not None else ""))


def spec_from_args(args: argparse.Namespace) -> RunSpec:
    """YAML preset (if any) overridden by explicit flags; unknown keys are errors."""
    data: Dict[str, Any] = dict(load_yaml(args.config)) if getattr(args, "config", None) else {}
    raw_hp = data.pop("hparams", None) or {}
    if not isinstance(raw_hp, dict):
        raise ValueError(f"hparams for {data.get('method', 'rst')!r} must be a mapping of hyperparameters, got {raw_hp!r}")
    hp = dict(raw_hp)
    spec_names = {f.name for f in dataclasses.fields(RunSpec)}
    for key, value in vars(args).items():
        if key.startswith("hp__"):
            hp[key[4:]] = value
        elif key in spec_names:
            data[key] = value
    if hp:
        method = str(data.get("method", "rst"))
        data["hparams"] = build_dataclass(METHODS.get(method).Hparams, hp, f"{method} hyperparameter")
    return RunSpec.from_dict(data)
