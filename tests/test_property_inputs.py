"""Issue 33, made systematic: generated values at every flag of ``bench run`` and generated garbage at every file
reader. The promise: a bad input is a ``ValueError`` (the CLI's one line and exit 2) or argparse's exit 2, never
another exception; a good one gives a spec whose run id can be computed."""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any, Callable, List

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.cli import build_parser
from bench.commands.security import check_args
from bench.commands.spec_flags import spec_from_args
from bench.core.config import load_yaml
from bench.core.results import read_rows
from bench.evaluation.security import MAX_FMN_STEPS, MAX_GRID_POINTS, eps_grid
from bench.methods.ticket import read_meta, read_spec
from bench.reporting.entries import load_entry


def run_flags() -> List[str]:
    """Every option of ``bench run`` that takes a value (spec fields and every method's hyperparameters)."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    run = sub.choices["run"]
    return sorted(opt for action in run._actions for opt in action.option_strings
                  if opt.startswith("--") and action.nargs != 0 and opt not in ("--config", "--out", "--data-root"))


FLAGS = run_flags()
PARSER = build_parser()
# Values a person (or a fuzzer) might type: numbers of every size, special floats, words, fractions, lists.
VALUES = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["nan", "inf", "-inf", "1e300", "1e-300", "8/255", "1/0", "", " ", "0", "-1", "true", "none",
                     "rst", "pgd20,cw20", ",,", "a" * 300, "\x00", "../../etc/passwd", "10**400", "0x10"]),
    st.text(max_size=40),
)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(flag=st.sampled_from(FLAGS), value=VALUES, method=st.sampled_from(["rst", "alth", "hydra", "lwm", "r2s",
                                                                            "random", "dense-at"]))
def test_every_run_flag_takes_any_value_or_refuses_it_cleanly(flag: str, value: str, method: str) -> None:
    """argparse's exit 2 or a ValueError; a spec that builds has a run id."""
    words = ["run", "--method", method, flag, value]
    try:
        args = PARSER.parse_args(words)
    except SystemExit as exc:
        assert exc.code == 2
        return
    try:
        spec = spec_from_args(args)
    except ValueError:
        return
    assert len(spec.resolve().run_id) == 12


def garbage_files() -> st.SearchStrategy[bytes]:
    """Random bytes, broken text, JSON and YAML shapes, huge and deep documents."""
    return st.one_of(
        st.binary(max_size=300),
        st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
        st.sampled_from([b"", b"[]", b"{}", b"null", b"[1,2]", b'{"a": NaN}', b"\xff\xfe\x00", b"a,b\n1,2,3\n",
                         b"run_id,attack\n" + b"x" * 200_000 + b",pgd20\n", b"[" * 50_000 + b"]" * 50_000,
                         b"a: &a [1]\nb: [*a, *a]\n", b"1: 2\nnull: 3\n", b"run_id,attack,run_id\n1,2,3\n"]),
        st.dictionaries(st.text(max_size=10), st.one_of(st.integers(), st.floats(), st.text(max_size=10), st.none()),
                        max_size=6).map(lambda d: json.dumps(d).encode()),
    )


def _entry(path: Path) -> Any:
    return load_entry(path)


READERS: List[Callable[[Path], Any]] = [read_rows, lambda p: load_yaml(str(p)), _entry,
                                        lambda p: read_meta(p.parent), lambda p: read_spec(p.parent)]
NAMES = {0: "runs.csv", 1: "c.yaml", 2: "entry.json", 3: "meta.json", 4: "spec.json"}


@pytest.mark.parametrize("index", sorted(NAMES), ids=[NAMES[i] for i in sorted(NAMES)])
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=garbage_files())
def test_every_file_reader_refuses_garbage_with_a_value_error(index: int, content: bytes, tmp_path: Path) -> None:
    """Each reader returns or raises ValueError naming the file; no other exception escapes."""
    path = tmp_path / NAMES[index]
    path.write_bytes(content)
    try:
        READERS[index](path)
    except ValueError as exc:
        assert NAMES[index] in str(exc) or str(tmp_path) in str(exc), str(exc)


SECURITY_FLAGS = ["--steps", "--n-eval", "--grid-points", "--grid-span"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(flag=st.sampled_from(SECURITY_FLAGS), value=VALUES)
def test_every_security_flag_takes_any_value_or_refuses_it_cleanly(flag: str, value: str) -> None:
    """``bench security`` (not reachable in the first round): argparse's exit 2 or a ValueError before any ticket
    is loaded; accepted settings make a finite grid of at most MAX_GRID_POINTS + 1 budgets."""
    try:
        args = PARSER.parse_args(["security", "RUN", flag, value])
    except SystemExit as exc:
        assert exc.code == 2
        return
    try:
        check_args(args)
    except ValueError:
        return
    grid = eps_grid(0.1, args.grid_points, args.grid_span)
    assert len(grid) <= MAX_GRID_POINTS + 1 and all(math.isfinite(e) for e in grid)
    assert 1 <= args.steps <= MAX_FMN_STEPS
