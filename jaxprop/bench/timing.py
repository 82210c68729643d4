"""Timing: compile once (timed on its own), warm up, then time each call to completion."""

from __future__ import annotations

import statistics
import time
from typing import Callable, NamedTuple

import jax


class Timing(NamedTuple):
    """Seconds per call: ``median``, ``min``, ``max`` over the repeats; ``compile_s`` or None."""

    median: float
    min: float
    max: float
    compile_s: float | None = None


def summarize(times: list[float], compile_s: float | None = None) -> Timing:
    return Timing(statistics.median(times), min(times), max(times), compile_s)


def compile_jax(fn: Callable, *args, donate_argnums=()) -> tuple[Callable, float]:
    """``jax.jit(fn).lower(*args).compile()``; returns the executable and the compile seconds."""
    lowered = jax.jit(fn, donate_argnums=donate_argnums).lower(*args)
    start = time.perf_counter()
    compiled = lowered.compile()
    return compiled, time.perf_counter() - start


def time_calls(call: Callable[[], object], *, repeats: int, warmup: int, sync=None) -> list[float]:
    """Run ``call()`` ``warmup`` times, then time ``repeats`` calls, each waited on by ``sync``.

    ``sync(result)`` blocks until the result exists (``jax.block_until_ready`` by default).
    """
    sync = sync or jax.block_until_ready
    for _ in range(warmup):
        sync(call())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        sync(call())
        times.append(time.perf_counter() - start)
    return times


def time_interleaved(calls, syncs, *, repeats: int, warmups) -> list[list[float]]:
    """Warm each ``calls[i]`` up ``warmups[i]`` times, then time them in rounds: one call of each
    per round, ``repeats`` rounds. A busy or throttling machine then slows every contender
    alike, so ratios measured in one run stay fair."""
    for call, sync, warmup in zip(calls, syncs, warmups):
        for _ in range(warmup):
            sync(call())
    times = [[] for _ in calls]
    for _ in range(repeats):
        for call, sync, out in zip(calls, syncs, times):
            start = time.perf_counter()
            sync(call())
            out.append(time.perf_counter() - start)
    return times


def peak_bytes(device) -> int | None:
    """``peak_bytes_in_use`` from ``device.memory_stats()`` (a high-water mark since the process
    started); None where the backend does not report it (CPU)."""
    try:
        stats = device.memory_stats()
    except Exception:  # noqa: BLE001 - some backends raise instead of returning None
        return None
    return None if not stats else stats.get("peak_bytes_in_use")
