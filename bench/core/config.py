"""Typed dataclass configuration: fields with help and choices, coercion, YAML, unknown keys as errors.

A leaf module (no torch, no other ``bench`` module): the run spec, method
hyperparameters, attack settings and sweep files all build dataclasses here.
"""
from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import field, fields
from pathlib import Path
from typing import Any, Collection, Dict, Mapping, Optional, Set, Type, TypeVar

import yaml

T = TypeVar("T")


def spec_field(default: Any, help: str, *, choices: Optional[Collection[str]] = None, **metadata: Any) -> Any:
    """A dataclass field with a help text and, optionally, the allowed values.

    ``choices`` is a tuple of strings or a registry (anything supporting ``in``
    and ``names()``); it feeds argparse and :func:`check_choices`.
    """
    meta: Dict[str, Any] = {"help": help, **metadata}
    if choices is not None:
        meta["choices"] = choices
    return field(default=default, metadata=meta)


def choice_names(choices: Collection[str]) -> list[str]:
    """The allowed values of a field, in their listed order (a registry lists its names)."""
    names = getattr(choices, "names", None)
    return list(names()) if callable(names) else list(choices)


def check_choices(obj: Any, what: str = "") -> None:
    """Raise ``ValueError`` naming the field when a field with ``choices`` holds another value."""
    for f in fields(obj):
        choices = f.metadata.get("choices")
        if choices is None:
            continue
        value = getattr(obj, f.name)
        if value not in choices:
            label = f"{what} {f.name}".strip()
            raise ValueError(f"unknown {label} {value!r}; choices: {', '.join(choice_names(choices))}")


def field_types(cls: Type[Any]) -> Dict[str, Any]:
    """Resolved type annotations of a dataclass."""
    return typing.get_type_hints(cls)


def _fraction(text: str) -> float:
    """``a/b`` as a number (eps is written 8/255 in the field and in this tool's help)."""
    top, _, bottom = text.partition("/")
    denominator = float(bottom)
    if denominator == 0:
        raise ValueError("division by zero")
    return float(top) / denominator


def coerce(value: Any, tp: Any, name: str) -> Any:
    """Convert a YAML/CLI value to the annotated type, with a clear error."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    # Optional[X]: 'none', 'null' and '' mean None.
    if origin is typing.Union and type(None) in args:
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "")):
            return None
        inner = [a for a in args if a is not type(None)][0]
        return coerce(value, inner, name)
    # Tuples: comma-separated text or a list, items as stripped strings.
    if origin is tuple:
        if not isinstance(value, (str, list, tuple)):
            raise ValueError(f"{name}: expected a comma-separated list, got {value!r}")
        items = value.split(",") if isinstance(value, str) else list(value)
        return tuple(str(i).strip() for i in items if str(i).strip())
    # true/false are not numbers (YAML `epochs: true`).
    if tp in (int, float) and isinstance(value, bool):
        raise ValueError(f"{name}: cannot read {value!r} as {tp.__name__}")
    try:
        if tp is bool:
            if isinstance(value, str):
                if value.lower() in ("true", "yes", "1"):
                    return True
                if value.lower() in ("false", "no", "0"):
                    return False
                raise ValueError
            return bool(value)
        if tp is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if tp is float:
            number = _fraction(value) if isinstance(value, str) and "/" in value else float(value)
            # No setting is infinite or NaN: an inf step size returned NaN points (issue 33).
            if not math.isfinite(number):
                raise ValueError(f"{name}: must be a finite number, got {value!r}")
            return number
        if tp is str:
            return str(value)
    except (TypeError, ValueError, OverflowError) as exc:
        if str(exc).startswith(f"{name}:"):
            raise
        raise ValueError(f"{name}: cannot read {value!r} as {getattr(tp, '__name__', tp)}") from None
    return value


def build_dataclass(cls: Type[T], data: Mapping[str, Any], what: str, raw: Collection[str] = ("hparams",)) -> T:
    """Instantiate ``cls`` from ``data``; unknown keys raise ``ValueError``; ``raw`` keys pass uncoerced."""
    if not isinstance(data, Mapping):
        raise ValueError(f"{what} must be a mapping, got {type(data).__name__}")
    names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(map(str, data)) - names)
    if unknown:
        raise ValueError(f"unknown {what} key(s): {', '.join(unknown)}; allowed: {', '.join(sorted(names))}")
    types = field_types(cls)
    kwargs = {k: (v if k in raw else coerce(v, types[k], k)) for k, v in data.items()}
    return cls(**kwargs)


def non_default(obj: Any) -> Dict[str, Any]:
    """The fields of a dataclass instance that differ from their defaults."""
    return {f.name: getattr(obj, f.name) for f in fields(obj)
            if f.default is not dataclasses.MISSING and getattr(obj, f.name) != f.default}


def load_yaml(path: str) -> Dict[str, Any]:
    """Read a YAML preset with the safe loader; it must be a mapping."""
    # Only regular files: a FIFO with no writer would block forever.
    if Path(path).exists() and not Path(path).is_dir() and not Path(path).is_file():
        raise ValueError(f"config {path} is not a regular file (a pipe, socket or device)")
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
        # Aliases are expanded on loading: bound the expanded size first (an alias bomb is a few lines).
        nodes = _expanded_nodes(yaml.compose(text, Loader=yaml.SafeLoader), {}, set())
        if nodes > MAX_YAML_NODES:
            raise ValueError(f"config {path} expands to {nodes:.3g} YAML nodes through its aliases (more than "
                             f"{MAX_YAML_NODES:,}); write it out without nested aliases")
        data = yaml.safe_load(text)
    except FileNotFoundError:
        raise ValueError(f"config file not found: {path}") from None
    except IsADirectoryError:
        raise ValueError(f"config {path} is a directory, not a YAML file") from None
    except UnicodeDecodeError:
        raise ValueError(f"config {path} is not a text file (not UTF-8)") from None
    except OSError as exc:
        raise ValueError(f"cannot read config {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"config {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    except RecursionError:
        raise ValueError(f"config {path} is nested too deeply to be a config") from None
    if data is None:
        raise ValueError(f"config {path} is empty: give at least one spec field (or leave out --config)")
    if not isinstance(data, dict):
        raise ValueError(f"config {path} must be a YAML mapping of spec fields")
    _check_keys(data, f"config {path}")
    return data


# The most YAML nodes a config may expand to through aliases.
MAX_YAML_NODES = 100_000


def _expanded_nodes(node: Optional[yaml.Node], memo: Dict[int, int], active: Set[int]) -> int:
    """Nodes of ``node`` with every alias expanded (a recursive alias counts as unbounded)."""
    if node is None:
        return 0
    key = id(node)
    if key in memo:
        return memo[key]
    if key in active:
        return MAX_YAML_NODES + 1
    active.add(key)
    if isinstance(node, yaml.MappingNode):
        size = 1 + sum(_expanded_nodes(k, memo, active) + _expanded_nodes(v, memo, active) for k, v in node.value)
    elif isinstance(node, yaml.SequenceNode):
        size = 1 + sum(_expanded_nodes(item, memo, active) for item in node.value)
    else:
        size = 1
    active.discard(key)
    memo[key] = size
    return size


def _check_keys(data: Any, where: str) -> None:
    """Every mapping key must be text (``{1: 2, null: 3}`` names no field)."""
    if isinstance(data, dict):
        for key, value in data.items():
            if not isinstance(key, str):
                raise ValueError(f"{where}: key {key!r} is not a name (every key must be text)")
            _check_keys(value, f"{where}: {key}")
    elif isinstance(data, list):
        for item in data:
            _check_keys(item, where)
