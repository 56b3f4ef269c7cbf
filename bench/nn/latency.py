"""Measured CPU latency of a ticket as stored, of its compacted copy and of the dense network, and the speedup.

Each network runs on CPU copies in eval mode under ``torch.inference_mode``
on random inputs of the dataset's shape at batch 1 and batch 128: two
warm-up calls, then timed calls (``time.perf_counter``) until at least
:data:`MIN_REPEATS` calls and :data:`MIN_SECONDS` have passed or
:data:`MAX_REPEATS` calls; the figure is the median in milliseconds. The
speedup is the dense network's median over the compacted copy's, both made
of plain layers (:func:`bench.nn.compaction.dense_twin`), so it measures what
pruning removes, not the masking's own cost. The thread count is recorded:
latencies are comparable only between runs with the same threads on the
same machine.
"""
from __future__ import annotations

import copy
import statistics
import time
from typing import Any, Dict, Sequence

import torch
import torch.nn as nn

from bench.nn.compaction import compacted, dense_twin, describe, state_bytes
from bench.nn.cost import model_cost, performed_macs

BATCHES = (1, 128)
WARMUP = 2
MIN_REPEATS = 5
MAX_REPEATS = 50
MIN_SECONDS = 0.5


@torch.inference_mode()
def median_ms(model: nn.Module, input_shape: Sequence[int], batch: int, seed: int = 0) -> float:
    """Median wall time in milliseconds of ``model`` on a CPU batch of ``batch`` random inputs."""
    x = torch.rand(batch, *input_shape, generator=torch.Generator().manual_seed(seed))
    for _ in range(WARMUP):
        model(x)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < MAX_REPEATS and (len(times) < MIN_REPEATS or time.perf_counter() - start < MIN_SECONDS):
        t0 = time.perf_counter()
        model(x)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def model_latency(model: nn.Module, input_shape: Sequence[int]) -> Dict[str, Any]:
    """Latency of a network as given (a model made elsewhere, with no masks to compact) at each of
    :data:`BATCHES` (CPU, the current threads)."""
    stored = copy.deepcopy(model).cpu().eval()
    with torch.random.fork_rng(devices=[]):
        return {"threads": torch.get_num_threads(), "compaction": None,
                **{f"stored_b{batch}_ms": median_ms(stored, input_shape, batch) for batch in BATCHES}}


def ticket_latency(model: nn.Module, input_shape: Sequence[int]) -> Dict[str, Any]:
    """Latency of the ticket as stored, its compacted copy and the dense twin at each of :data:`BATCHES`, the
    speedups, and the compacted copy's kind, layers, parameters, MACs and bytes (CPU, the current threads)."""
    stored = copy.deepcopy(model).cpu().eval()
    # The random number generators are left as they were (a random switch draws a candidate per forward call).
    with torch.random.fork_rng(devices=[]):
        compact = compacted(stored, input_shape)
        dense = dense_twin(stored) if compact is not None else None
        out: Dict[str, Any] = {"threads": torch.get_num_threads(), "compaction": None if compact is None else compact.kind}
        for batch in BATCHES:
            out[f"stored_b{batch}_ms"] = median_ms(stored, input_shape, batch)
            if compact is not None and dense is not None:
                out[f"compacted_b{batch}_ms"] = median_ms(compact.model, input_shape, batch)
                out[f"dense_b{batch}_ms"] = median_ms(dense, input_shape, batch)
                out[f"speedup_b{batch}"] = out[f"dense_b{batch}_ms"] / out[f"compacted_b{batch}_ms"]
    if compact is not None:
        cost = model_cost(compact.model, input_shape)
        out.update({"compacted_layers": describe(compact.model), "compacted_params": cost["params"],
                    "compacted_macs": performed_macs(compact.model, input_shape), "compacted_bytes": state_bytes(compact.model)})
    return out
