"""Progress bars: every bar of the package comes from :func:`bar`, which obeys ``--no-progress`` and stays off when
stderr is not a terminal (a log file, CI, a pipe).

tqdm reads its own switch (``TQDM_DISABLE``) once, at import, so a command cannot turn bars off through it; the
switch here is a context variable that a command sets for the duration of its work (:func:`progress`), as
``torch.no_grad`` scopes gradient recording: nothing outlives the ``with`` block.
"""
from __future__ import annotations

import contextlib
from contextvars import ContextVar
from typing import Any, Iterator

from tqdm.auto import tqdm

__all__ = ["bar", "progress", "progress_enabled"]

_ENABLED: ContextVar[bool] = ContextVar("bench_progress_enabled", default=True)


@contextlib.contextmanager
def progress(enabled: bool) -> Iterator[None]:
    """Bars on (default) or off for the code inside the block."""
    token = _ENABLED.set(enabled)
    try:
        yield
    finally:
        _ENABLED.reset(token)


def progress_enabled() -> bool:
    """Whether bars may show here (they still stay off when stderr is not a terminal)."""
    return _ENABLED.get()


def bar(*args: Any, disable: bool = False, **kwargs: Any) -> Any:
    """A tqdm bar; off when ``disable``, inside ``progress(False)``, or when its stream is not a terminal."""
    # tqdm's disable=None means: off unless the stream is a terminal.
    return tqdm(*args, disable=True if disable or not _ENABLED.get() else None, **kwargs)
