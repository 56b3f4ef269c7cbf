"""The attack registry: named presets of attack classes, with settings overridable in the name.

Registered names are presets (``pgd20``, ``cw20``, ``autoattack``...). Any
field of the preset's attack class can be overridden in the name itself,
``base:key=value:key=value`` (lists joined with ``+``), e.g.
``pgd:steps=50:restarts=5`` or ``autoattack-custom:attacks=apgd-ce+square``;
so the CLI's comma-separated ``--attacks`` list can carry any setting.
Every module of :mod:`bench.attacks` registers its presets; the registry
imports them on first use, so a new attack is one file there.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any, List, Mapping, Tuple, Type

from bench.attacks.base import Attack
from bench.core.config import coerce
from bench.core.io import mix_seed
from bench.core.registry import Registry


@dataclass(frozen=True)
class AttackPreset:
    """A registered attack: its class and default settings; call with ``eps`` and overrides."""

    cls: Type[Attack]
    defaults: Mapping[str, Any] = field(default_factory=dict)

    def __call__(self, eps: float, **overrides: Any) -> Attack:
        names = {f.name for f in dataclasses.fields(self.cls)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise ValueError(f"{self.cls.__name__} has no setting(s) {', '.join(unknown)}; "
                             f"choices: {', '.join(sorted(names - {'eps', 'norm'}))}")
        return self.cls(eps, **{**self.defaults, **overrides})

    def with_text_overrides(self, pairs: List[str], name: str) -> "AttackPreset":
        """A preset with ``key=value`` strings applied (typed from the class's fields)."""
        types = typing.get_type_hints(self.cls)
        names = {f.name for f in dataclasses.fields(self.cls)}
        values = dict(self.defaults)
        for pair in pairs:
            key, sep, raw = pair.partition("=")
            if not sep or not key:
                raise ValueError(f"attack {name!r}: expected key=value after ':', got {pair!r}")
            if key in ("eps", "norm"):
                raise ValueError(f"attack {name!r}: {key} comes from the run spec (--{key}), not the attack name")
            if key not in names:
                raise ValueError(f"attack {name!r}: unknown setting {key!r}; choices: {', '.join(sorted(names - {'eps', 'norm'}))}")
            values[key] = coerce(raw.replace("+", ","), types[key], f"attack {name!r} {key}")
        return AttackPreset(self.cls, values)


class AttackRegistry(Registry[AttackPreset]):
    """The attack registry; ``get`` also resolves ``base:key=value`` names."""

    def get(self, name: str) -> AttackPreset:
        """The preset ``name``, with any ``:key=value`` overrides applied and checked."""
        base, *pairs = name.split(":")
        preset = super().get(base)
        if not pairs:
            return preset
        resolved = preset.with_text_overrides(pairs, name)
        # Build once with a unit budget so bad values fail now, not mid-evaluation.
        resolved(1.0)
        return resolved


ATTACKS = AttackRegistry("attack", plugins=("bench.attacks",), entry_points="robust_tickets.attacks")


def make_attack(name: str, eps: float, **overrides: Any) -> Attack:
    """Instantiate registered attack ``name`` (``base:key=value`` allowed) at budget ``eps``."""
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    return ATTACKS.get(name)(eps, **overrides)


def attack_norms(name: str) -> Tuple[str, ...]:
    """The threat models attack ``name`` (``base:key=value`` allowed) can run in."""
    return tuple(ATTACKS.get(name).cls.norms)


def attack_for_run(name: str, eps: float, run_seed: int, norm: str = "Linf") -> Attack:
    """The attack ``name`` as a run evaluates it, in the threat model ``norm``: a seed given in the name is
    honoured; otherwise the seed is derived from the run seed and the name, so two attacks of one run never share
    a random start."""
    preset = ATTACKS.get(name)
    seed = int(preset.defaults["seed"]) if "seed" in preset.defaults else mix_seed(run_seed, "attack", name) % (2**31)
    # L-inf is every attack's default (and not named, so its settings and caches are those of before norms).
    return preset(eps, seed=seed, **({"norm": norm} if norm != "Linf" else {}))
