"""Paired comparison of two tickets: McNemar's exact test on per-example robust flags.

Two tickets evaluated on the same test examples with the same attack give, per
example, a pair of robust flags. Only the discordant pairs say anything about
which is more robust: ``b`` examples only ticket A survives, ``c`` only B
survives. Under the null hypothesis of equal robust accuracy each discordant
example is A's with probability 1/2, so the exact two-sided p-value is
``min(1, 2 * P[Binomial(b + c, 1/2) <= min(b, c)])`` (McNemar's exact test).
Accuracies that differ by a few points on a few hundred examples are often
not significant; that is what this tells apart.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from scipy.stats import binom

from bench.core.results import AttackResult
from bench.data import resolve_source
from bench.external import is_external_run, load_external_run
from bench.harness import evaluate_run, load_finished_ticket
from bench.methods import get_method
from bench.methods.ticket import read_spec

# Spec fields two tickets must share for their flags to be paired: the same test examples and threat model.
PAIRED_FIELDS = ("dataset", "data_source", "num_classes", "image_size", "eps")


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value for ``b`` and ``c`` discordant pairs (1.0 when there are none)."""
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be >= 0, got {b}, {c}")
    if b + c == 0:
        return 1.0
    return float(min(1.0, 2.0 * binom.cdf(min(b, c), b + c, 0.5)))


@dataclass(frozen=True)
class Comparison:
    """One attack's paired comparison of tickets A and B on their first ``n`` common examples."""

    attack: str
    scope: str
    n: int
    robust_a: float
    robust_b: float
    only_a: int
    only_b: int
    p_value: float

    def significant(self, level: float) -> bool:
        """Whether the accuracies differ at ``level`` (two-sided)."""
        return self.p_value < level


def compare_flags(attack: str, scope: str, flags_a: torch.Tensor, flags_b: torch.Tensor) -> Comparison:
    """The comparison of two per-example robust-flag vectors (bool), on their common prefix."""
    n = min(len(flags_a), len(flags_b))
    a, b = flags_a[:n].bool(), flags_b[:n].bool()
    only_a, only_b = int((a & ~b).sum()), int((b & ~a).sum())
    return Comparison(attack, scope, n, float(a.float().mean()) if n else 0.0, float(b.float().mean()) if n else 0.0,
                      only_a, only_b, mcnemar_exact(only_a, only_b))


@dataclass(frozen=True)
class Paired:
    """One side of a comparison: what must match for examples to pair, its attacks, and how to evaluate it."""

    facts: Dict[str, Any]
    attacks: Tuple[str, ...]
    evaluate: Callable[[Sequence[str], Optional[int]], List[AttackResult]]


def paired_side(run_dir: Path, data_root: Optional[str]) -> Paired:
    """A finished ticket's run folder or an external model's evaluation folder, ready to compare."""
    if is_external_run(run_dir):
        run = load_external_run(run_dir, data_root)
        s = run.spec
        facts = {"dataset": s.dataset, "data_source": resolve_source(s.dataset, s.data_source),
                 "num_classes": s.num_classes, "image_size": s.image_size, "eps": s.eps_value}
        return Paired(facts, s.attacks, lambda attacks, n: run.evaluate(attacks, n))
    spec = read_spec(run_dir)
    if get_method(spec.method).randomized:
        raise ValueError(f"{run_dir} is a randomised ticket ({spec.method}): its per-example outcomes are "
                         "probabilities over inference draws, not the 0/1 flags McNemar's test pairs")
    resolved = spec.resolve()
    ticket = load_finished_ticket(spec, run_dir, data_root)
    return Paired({name: getattr(resolved, name) for name in PAIRED_FIELDS}, spec.eval_attacks,
                  lambda attacks, n: evaluate_run(ticket, attacks=attacks, n_eval=n))


def compare_runs(run_a: Path, run_b: Path, attacks: Optional[Sequence[str]] = None, n_eval: Optional[int] = None,
                 data_root: Optional[str] = None) -> List[Comparison]:
    """Evaluate both finished runs (tickets or external models; from their caches where done) and compare each
    shared attack's flags."""
    side_a, side_b = paired_side(run_a, data_root), paired_side(run_b, data_root)
    for name in PAIRED_FIELDS:
        va, vb = side_a.facts[name], side_b.facts[name]
        if va != vb:
            raise ValueError(f"{run_a} and {run_b} differ in {name} ({va} vs {vb}): their examples cannot be paired")
    shared = [a for a in side_a.attacks if a in side_b.attacks] if attacks is None else list(attacks)
    if not shared:
        raise ValueError(f"{run_a} and {run_b} share no attack (theirs: {', '.join(side_a.attacks)} and "
                         f"{', '.join(side_b.attacks)}); give --attacks")
    results = [{r.attack: r for r in side.evaluate(shared, n_eval)} for side in (side_a, side_b)]
    out = []
    # The spec's attacks, then their worst case when both have it.
    for name in [*shared, "worst_case"]:
        ra, rb = results[0].get(name), results[1].get(name)
        if ra is None or rb is None:
            continue
        scope = ra.scope if ra.scope == rb.scope else f"{ra.scope} / {rb.scope}"
        out.append(compare_flags(name, scope, ra.robust, rb.robust))
    return out


def comparison_table(rows: Sequence[Comparison], level: float, label_a: str, label_b: str) -> str:
    """A Markdown table of the comparisons, with the test and level stated under it."""
    lines = [f"| attack | scope | n | robust {label_a} | robust {label_b} | only {label_a} | only {label_b} | p | "
             f"differ at {level:g} |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.attack} | {r.scope} | {r.n} | {r.robust_a:.4f} | {r.robust_b:.4f} | {r.only_a} | {r.only_b} "
                     f"| {r.p_value:.3g} | {'yes' if r.significant(level) else 'no'} |")
    lines.append("")
    lines.append(f"McNemar's exact test (two-sided) on the per-example robust flags of the same examples; "
                 f"'only X': examples only X survives; level {level:g}.")
    return "\n".join(lines)
