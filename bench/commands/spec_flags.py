"""``bench run`` flags generated from :class:`RunSpec` and every method's hyperparameters; specs from flags."""
from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any, Dict, List

from bench.core.config import build_dataclass, choice_names, field_types, load_yaml
from bench.spec import METHODS, RunSpec

# The method of a spec that names none.
DEFAULT_METHOD = str(RunSpec.__dataclass_fields__["method"].default)


def _type_name(tp: Any) -> str:
    """Readable type for --help."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return getattr(args[0] if args else tp, "__name__", str(tp))


def _text(value: Any) -> str:
    """A default as a user types it: tuples comma-separated."""
    return ",".join(str(v) for v in value) if isinstance(value, tuple) else str(value)


def add_spec_flags(parser: argparse.ArgumentParser, hparams: bool = True) -> None:
    """One flag per RunSpec field and (with ``hparams``, hidden) per method hyperparameter (defaults suppressed;
    choices listed)."""
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
    # Method hyperparameters: every method's flags are parsed (a flag of another method is then named as such),
    # but only the chosen method's show, with its own defaults (method_flag_help).
    for hp_name in hparam_owners() if hparams else ():
        parser.add_argument(f"--{hp_name.replace('_', '-')}", dest=f"hp__{hp_name}", default=argparse.SUPPRESS,
                            help=argparse.SUPPRESS)


def hparam_owners() -> Dict[str, List[str]]:
    """Each hyperparameter name and the methods that have it."""
    owners: Dict[str, List[str]] = {}
    for name, entry in METHODS.items():
        for hf in dataclasses.fields(entry.obj.Hparams):
            owners.setdefault(hf.name, []).append(name)
    return owners


def add_method_flags(parser: argparse.ArgumentParser, method: str) -> None:
    """``method``'s hyperparameter flags, with its defaults, as ``--help`` shows them."""
    hparams = METHODS.get(method).Hparams
    types = field_types(hparams)
    group = parser.add_argument_group(f"{method} hyperparameters (YAML: under 'hparams:')")
    for hf in dataclasses.fields(hparams):
        choices = hf.metadata.get("choices")
        group.add_argument(f"--{hf.name.replace('_', '-')}", dest=f"hp__{hf.name}", default=argparse.SUPPRESS,
                           metavar=_type_name(types[hf.name]).upper(),
                           help=f"{hf.metadata.get('help', hf.name)} [default: {_text(hf.default)}]".replace("%", "%%")
                                + (f"; choices: {', '.join(choice_names(choices))}" if choices is not None else ""))


def chosen_method(args: argparse.Namespace) -> str:
    """The method a ``bench run`` command line asks for: ``--method``, else its ``--config``'s, else the default."""
    if "method" in vars(args):
        return str(args.method)
    data = load_yaml(args.config) if getattr(args, "config", None) else {}
    method = data.get("method") if isinstance(data, dict) else None
    return str(method) if method is not None else DEFAULT_METHOD


def check_method_flags(args: argparse.Namespace, method: str) -> None:
    """A hyperparameter flag of another method is an error that names the method(s) it belongs to."""
    if method not in METHODS.names():
        return
    own = {hf.name for hf in dataclasses.fields(METHODS.get(method).Hparams)}
    owners = hparam_owners()
    for key in vars(args):
        name = key[4:] if key.startswith("hp__") else None
        if name is not None and name not in own:
            raise ValueError(f"--{name.replace('_', '-')} is a flag of {', '.join(owners[name])}, not of {method} "
                             f"(bench run --method {method} --help lists its flags)")


def spec_from_args(args: argparse.Namespace) -> RunSpec:
    """YAML preset (if any) overridden by explicit flags; unknown keys are errors."""
    data: Dict[str, Any] = dict(load_yaml(args.config)) if getattr(args, "config", None) else {}
    raw_hp = data.pop("hparams", None) or {}
    if not isinstance(raw_hp, dict):
        raise ValueError(f"hparams for {data.get('method', 'rst')!r} must be a mapping of hyperparameters, got {raw_hp!r}")
    hp = dict(raw_hp)
    check_method_flags(args, str(args.method) if "method" in vars(args) else str(data.get("method", DEFAULT_METHOD)))
    spec_names = {f.name for f in dataclasses.fields(RunSpec)}
    for key, value in vars(args).items():
        if key.startswith("hp__"):
            hp[key[4:]] = value
        elif key in spec_names:
            data[key] = value
    if hp:
        method = str(data.get("method", DEFAULT_METHOD))
        owner = METHODS.get(method)
        data["hparams"] = build_dataclass(owner.Hparams, owner.current_hparams(hp), f"{method} hyperparameter")
    return RunSpec.from_dict(data)
