"""Keep freed memory inside the process instead of handing it back to the OS after every tensor.

glibc's allocator serves blocks above a threshold (128 KiB at start, adapting
up to 32 MiB) with a fresh ``mmap`` and trims the heap's top as soon as it is
freed, so every activation tensor of every PGD step is new memory and each of
its pages costs a page fault when first written. On the 2-core development
machine that was 0.9-1.3 million faults in 16 train steps and 3 PGD-20 runs
of ``benchmarks/allocator.py``, which ran 1.20x faster with 0.07-0.17
million (docs/performance.md, section 7). :func:`keep_freed_memory` fixes the
``mmap`` threshold at the ceiling of glibc's own adaptive one and keeps a pad
of free memory (256 MiB) at the heap's top; the arithmetic is untouched (same numbers, bit for bit).

It is called by the ``bench`` command and by every sweep worker (local
``--jobs`` processes and Ray tasks). Nothing is changed where the C library is
not glibc, or where the user tunes the allocator already (any ``MALLOC_*``
variable set, ``GLIBC_TUNABLES`` naming malloc, or another allocator
preloaded with ``LD_PRELOAD``); ``BENCH_KEEP_FREED_MEMORY=0`` switches it off.
"""
from __future__ import annotations

import ctypes
import os
import platform
from typing import Mapping, Optional

# mallopt parameters (glibc's malloc.h).
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3
# Blocks below this come from the heap: the ceiling of glibc's adaptive threshold on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX).
MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024
# Free memory kept at the top of the heap instead of being trimmed (and faulted in again by the next tensor).
TOP_PAD_BYTES = 256 * 1024 * 1024
# Prefix of the environment variables through which a user tunes glibc's allocator; any one set: leave it alone.
USER_TUNING_PREFIX = "MALLOC_"
# Variables whose value mentions "malloc" when the allocator is tuned (glibc tunables) or replaced (jemalloc, tcmalloc).
MENTION_VARS = ("GLIBC_TUNABLES", "LD_PRELOAD")
# Set to 0 to keep glibc's defaults.
SWITCH_VAR = "BENCH_KEEP_FREED_MEMORY"


def _glibc() -> Optional[ctypes.CDLL]:
    """This process's glibc, or ``None`` on another C library or OS."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") else None


def keep_freed_memory(environ: Optional[Mapping[str, str]] = None) -> bool:
    """Tune glibc's allocator to reuse freed memory (see the module docstring); True when it was applied.

    Idempotent; cheap enough to call at the start of every process that runs attacks or training.
    """
    env = os.environ if environ is None else environ
    # The user's own choice wins: switched off, or the allocator tuned or replaced by them.
    if env.get(SWITCH_VAR, "1") == "0" or any(name.startswith(USER_TUNING_PREFIX) for name in env):
        return False
    if any("malloc" in env.get(name, "") for name in MENTION_VARS):
        return False
    libc = _glibc()
    if libc is None:
        return False
    # Both settings: a raised threshold alone still faults on every trim of the heap's top (True only if both took).
    threshold_set = bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
    pad_set = bool(libc.mallopt(M_TOP_PAD, TOP_PAD_BYTES))
    return threshold_set and pad_set
