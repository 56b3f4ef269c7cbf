"""The allocator setting that keeps freed memory in the process: fewer page faults, same numbers, wired in."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest
import torch

from bench import cli
from bench.core import allocator
from bench.core.allocator import SWITCH_VAR, keep_freed_memory
from bench.sweep.executors import local, ray_executor

glibc_only = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                                reason="the setting exists only in glibc")


def huge_pages_always() -> bool:
    """Transparent huge pages on every mapping: the default heap then faults per 2 MiB, too few to count on."""
    path = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    return path.exists() and "[always]" in path.read_text()


# A child process: the setting (or not), then the page faults of 60 rounds of 20 MB tensors written and freed,
# and the values computed from them (the allocator must not change numbers).
CHILD = """
import json, resource
from bench.core.allocator import keep_freed_memory
applied = keep_freed_memory()
import torch
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
def work():
    a = torch.empty(5_000_000).fill_(1.5)
    b = torch.linspace(0, 1, 5_000_000)
    return float((a * b).sum())
for _ in range(5):
    work()
f0 = faults()
values = [work() for _ in range(60)]
print(json.dumps({"applied": applied, "faults": faults() - f0, "values": values}))
"""


def child_run(switch: str) -> Dict[str, object]:
    """Run :data:`CHILD` with ``BENCH_KEEP_FREED_MEMORY=switch`` and no user tuning of malloc."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k not in ("LD_PRELOAD", "GLIBC_TUNABLES")}
    out = subprocess.run([sys.executable, "-c", CHILD], env={**env, SWITCH_VAR: switch}, check=True,
                         capture_output=True, text=True).stdout
    result: Dict[str, object] = json.loads(out.strip().splitlines()[-1])
    return result


@glibc_only
@pytest.mark.skipif(huge_pages_always(), reason="transparent huge pages 'always': default-heap faults are too few to count")
def test_freed_tensors_are_reused_without_page_faults() -> None:
    """glibc's defaults fault in every new 20 MB tensor's pages (trimmed heap top); the setting reuses them."""
    default, tuned = child_run("0"), child_run("1")
    assert (default["applied"], tuned["applied"]) == (False, True)
    # 60 rounds of three 20 MB tensors (~4 900 pages each) by default; at most a one-off growth with the setting.
    assert int(default["faults"]) > 20_000  # type: ignore[call-overload]
    assert int(tuned["faults"]) < int(default["faults"]) / 20  # type: ignore[call-overload]
    assert tuned["values"] == default["values"]


@pytest.mark.parametrize("env", [
    {SWITCH_VAR: "0"},
    {"MALLOC_TOP_PAD_": "1"},
    {"MALLOC_ARENA_MAX": "2"},
    {"MALLOC_MMAP_MAX_": "0"},
    {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1"},
    {"LD_PRELOAD": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"},
])
def test_the_users_own_choice_is_left_alone(env: Dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Switched off, tuned by the user or another allocator preloaded: mallopt is never called."""
    calls: List[int] = []

    class FakeLibc:
        def mallopt(self, param: int, value: int) -> int:
            calls.append(param)
            return 1

    monkeypatch.setattr(allocator, "_glibc", lambda: FakeLibc())
    assert keep_freed_memory(env) is False
    assert calls == []
    # Unrelated preloads and tunables do not count as tuning the allocator.
    assert keep_freed_memory({"LD_PRELOAD": "/usr/lib/libfaketime.so", "GLIBC_TUNABLES": "glibc.cpu.hwcaps=-AVX"}) is True
    assert calls == [allocator.M_MMAP_THRESHOLD, allocator.M_TOP_PAD]


def test_no_glibc_means_no_change(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(allocator, "_glibc", lambda: None)
    assert keep_freed_memory({}) is False


def test_every_process_that_computes_applies_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """The ``bench`` command, each ``--jobs`` worker and each Ray task call it before any work."""
    calls: List[str] = []
    monkeypatch.setattr(cli, "keep_freed_memory", lambda: calls.append("cli") or True)
    monkeypatch.setattr(local, "keep_freed_memory", lambda: calls.append("local") or True)
    monkeypatch.setattr(ray_executor, "keep_freed_memory", lambda: calls.append("ray") or True)
    threads = torch.get_num_threads()
    try:
        with pytest.raises(SystemExit):
            cli.main(["list", "--help"])
        local._init_worker(threads)
        assert ray_executor.run_in_worker("job", threads, lambda job: f"ran {job}") == "ran job"  # type: ignore[arg-type]
    finally:
        torch.set_num_threads(threads)
    assert calls == ["cli", "local", "ray"]
