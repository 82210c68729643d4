"""Timing: each implementation timed undisturbed, in rounds that alternate between them.

On a few cores, libraries disturb each other: after a call, OpenBLAS's (NumPy's) and OpenMP's
(PyTorch's) worker threads keep spinning for a while, and XLA's thread pool then fights them for
the cores (on 2 cores that doubled XLA's times). So every implementation that is not JAX runs in
its own **worker process** (:class:`Worker`), JAX runs in this process (:class:`InProcess`), and
after every timed call the process that made it waits until its threads are idle again
(:func:`quiet`) before anyone else runs. Rounds alternate between the implementations
(:func:`time_rounds`), so a machine that slows down over time slows all of them alike.
``isolation="shared"`` (:class:`Shared`) runs everything in this process with no waiting: the old
method, kept to show the difference (benchmarks/README.md).

A JAX call is compiled first (:func:`compile_jax`, timed on its own), warmed up, then timed call
by call with ``block_until_ready``.
"""

from __future__ import annotations

import json
import os
import pickle
import statistics
import subprocess
import sys
import time
from typing import Callable, NamedTuple

import jax

from jaxprop.device import memory


class Timing(NamedTuple):
    """Seconds per call: ``median``, ``min``, ``max`` over the repeats; ``compile_s`` or None."""

    median: float
    min: float
    max: float
    compile_s: float | None = None


def summarize(times: list[float], compile_s: float | None = None) -> Timing:
    return Timing(statistics.median(times), min(times), max(times), compile_s)


def compile_jax(fn: Callable, *args, donate_argnums=(), options=None) -> tuple[Callable, float]:
    """``jax.jit(fn).lower(*args).compile(options)``; returns the executable and the compile
    seconds."""
    lowered = jax.jit(fn, donate_argnums=donate_argnums).lower(*args)
    start = time.perf_counter()
    compiled = lowered.compile(options)
    return compiled, time.perf_counter() - start


def quiet(*, window: float = 0.005, busy: float = 0.1, timeout: float = 2.0) -> float:
    """Wait until this process uses less than ``busy`` of one core over ``window`` seconds (its
    BLAS, OpenMP and XLA threads have gone to sleep); returns the seconds waited (at most
    ``timeout``). The calling thread sleeps meanwhile, so what is measured is the others."""
    start = time.perf_counter()
    while True:
        cpu0, t0 = time.process_time(), time.perf_counter()
        time.sleep(window)
        used = (time.process_time() - cpu0) / (time.perf_counter() - t0)
        waited = time.perf_counter() - start
        if used < busy or waited >= timeout:
            return waited


def time_calls(call: Callable[[], object], *, repeats: int, warmup: int,
               sync=None) -> list[float]:
    """Run ``call()`` ``warmup`` times, then time ``repeats`` calls, each waited on by ``sync``.

    For one library in one process.

    Args:
      call: the work to time, called with no arguments.
      repeats: the number of timed calls.
      warmup: the number of untimed calls first.
      sync: called on each call's result to wait for it (``jax.block_until_ready`` by default).

    Returns:
      the seconds of each timed call, ``repeats`` of them.
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
    """Calls of ONE process timed in rounds, one call of each per round, no waiting between them.

    What ``isolation="shared"`` amounts to; fine among JAX calls, or on an accelerator. Every
    call is warmed up first (its own ``warmups`` entry), then the rounds run.

    Args:
      calls: the calls to time, each called with no arguments.
      syncs: one per call: called on its result to wait for it (``None``:
        ``jax.block_until_ready``).
      repeats: the number of rounds (timed calls of each).
      warmups: one per call: its number of untimed calls first.

    Returns:
      one list per call, in the order of ``calls``: the seconds of each of its timed calls.
    """
    for call, sync, warmup in zip(calls, syncs, warmups):
        time_calls(call, repeats=0, warmup=warmup, sync=sync)
    times = [[] for _ in calls]
    for _ in range(repeats):
        for call, sync, out in zip(calls, syncs, times):
            out.extend(time_calls(call, repeats=1, warmup=0, sync=sync))
    return times


class InProcess:
    """Runs calls in this process (JAX), waiting for :func:`quiet` after each timed one."""

    process = "this"

    def __init__(self):
        self.jobs: dict[str, tuple[Callable, Callable]] = {}
        self.settle = 0.0  # the longest wait for quiet

    def add(self, name: str, call: Callable, sync: Callable | None = None) -> str:
        self.jobs[name] = (call, sync or jax.block_until_ready)
        return name

    def warm(self, name: str, n: int) -> None:
        """``n`` untimed calls, then a wait for :func:`quiet` (as a worker's warm-up does)."""
        call, sync = self.jobs[name]
        time_calls(call, repeats=0, warmup=n, sync=sync)
        quiet()

    def time(self, name: str, calls: int = 1) -> float:
        call, sync = self.jobs[name]
        t = block_time(call, sync, calls)
        self.settle = max(self.settle, quiet())
        return t

    def drop(self, name: str) -> None:
        self.jobs.pop(name, None)


class Shared(InProcess):
    """The old method: every library in this process, no waiting between calls."""

    process = "shared"

    def warm(self, name: str, n: int) -> None:
        call, sync = self.jobs[name]
        time_calls(call, repeats=0, warmup=n, sync=sync)

    def time(self, name: str, calls: int = 1) -> float:
        call, sync = self.jobs[name]
        return block_time(call, sync, calls)

    def setup(self, name: str, factory: str, **kwargs) -> str:
        from jaxprop.bench.jobs import FACTORIES

        call, sync = FACTORIES[factory](**kwargs)
        return self.add(name, call, sync)


class Worker:
    """A worker process (``python -m jaxprop.bench.worker``) that builds and times calls from
    :data:`jaxprop.bench.jobs.FACTORIES`; after each timed call it waits for :func:`quiet`
    before answering. ``env`` adds environment variables (set before its libraries load)."""

    process = "worker"

    def __init__(self, env: dict | None = None):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jaxprop.bench.worker"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, env={**os.environ, **(env or {})})
        self.settle = 0.0
        self.pid = self._ask("pid")

    def _ask(self, command: str, *args, **kwargs):
        pickle.dump((command, args, kwargs), self.proc.stdin)
        self.proc.stdin.flush()
        try:
            ok, value = pickle.load(self.proc.stdout)
        except EOFError:
            raise RuntimeError(f"benchmark worker {self.proc.args} died") from None
        if not ok:
            raise RuntimeError(f"benchmark worker: {value}")
        return value

    def setup(self, name: str, factory: str, **kwargs) -> str:
        """Build job ``name`` in the worker: ``FACTORIES[factory](**kwargs)``."""
        self._ask("setup", name, factory, **kwargs)
        return name

    def warm(self, name: str, n: int) -> None:
        self._ask("warm", name, n)

    def time(self, name: str, calls: int = 1) -> float:
        seconds, settle = self._ask("time", name, calls)
        self.settle = max(self.settle, settle)
        return seconds

    def drop(self, name: str) -> None:
        self._ask("drop", name)

    def info(self, what: str):
        """The worker's answer to ``what`` (a key of :data:`jaxprop.bench.jobs.INFO`)."""
        return self._ask("info", what)

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self._ask("close")
            except (RuntimeError, BrokenPipeError, OSError):
                pass
            self.proc.wait(timeout=10)


class Contender(NamedTuple):
    """One implementation in a cell: who runs job ``job`` (a runner above), how many untimed
    calls first."""

    runner: object
    job: str
    warmup: int


# Each timed sample is a block of back-to-back calls lasting at least this long (one call for
# anything slower), timed as a whole: the per-call time of a steady loop, with the threads
# awake, and well above the clock's resolution.
MIN_BLOCK_S = 0.05


def time_rounds(contenders: list[Contender], repeats: int,
                min_block: float = MIN_BLOCK_S) -> list[list[float]]:
    """Warm every contender up and size its block (calls per sample, see ``MIN_BLOCK_S``),
    then ``repeats`` rounds of one timed block each, in turn, the order reversed every other
    round (ABBA: no contender always runs right after another library's sample); seconds per
    call, in the contenders' order."""
    blocks = []
    for c in contenders:
        c.runner.warm(c.job, c.warmup)
        once = c.runner.time(c.job, 1)
        blocks.append(max(1, min(10_000, int(min_block / max(once, 1e-7)) + 1)))
    times = [[] for _ in contenders]
    turns = list(zip(contenders, blocks, times, strict=True))
    for r in range(repeats):
        for c, calls, out in turns if r % 2 == 0 else turns[::-1]:
            out.append(c.runner.time(c.job, calls))
    return times


def block_time(call: Callable, sync: Callable, calls: int) -> float:
    """Seconds per call over ``calls`` back-to-back calls, the last one waited on (each is
    waited on too: JAX's calls on one device run in order, NumPy's and torch's on CPU are
    synchronous)."""
    start = time.perf_counter()
    for _ in range(calls):
        sync(call())
    return (time.perf_counter() - start) / calls


def _user_env(env: dict | None) -> dict:
    """This process's environment without ``PYTHONDONTWRITEBYTECODE``, plus ``env`` (where a
    value is None, without that variable): a new Python process then uses the bytecode cache,
    as a user's does (see :func:`fresh_process`)."""
    merged = {**os.environ, "PYTHONDONTWRITEBYTECODE": None, **(env or {})}
    return {k: v for k, v in merged.items() if v is not None}


def fresh_process(code: str, *, env: dict | None = None, cwd=None, timeout: float = 600) -> dict:
    """Run ``code`` in a new Python process; it prints one JSON line starting with ``RESULT ``,
    which is returned as a dict. ``env`` adds variables (None: removes one); ``cwd`` is the
    process's working directory.

    The process runs with Python's default bytecode cache, as a user's does: a
    ``PYTHONDONTWRITEBYTECODE`` of the benchmark's own environment (set on some CI machines)
    would recompile every module of jaxprop on every start (30 ms of ``jaxprop train``)."""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=_user_env(env), cwd=cwd, timeout=timeout)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
    if out.returncode != 0 or not lines:
        tail = (out.stderr or out.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"benchmark subprocess failed: {' / '.join(tail)}")
    return json.loads(lines[-1][len("RESULT "):])


def command_seconds(argv: list[str], *, env: dict | None = None, cwd=None,
                    timeout: float = 600) -> float:
    """Wall seconds of the command ``argv`` run to its exit (a new Python process from its
    start: what a user waits for), in the same environment as :func:`fresh_process`."""
    t0 = time.perf_counter()
    out = subprocess.run(argv, capture_output=True, text=True, env=_user_env(env), cwd=cwd,
                         timeout=timeout)
    seconds = time.perf_counter() - t0
    if out.returncode != 0:
        tail = (out.stderr or out.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"benchmark command failed: {' / '.join(tail)}")
    return seconds


def peak_bytes(device) -> int | None:
    """``peak_bytes_in_use`` of :func:`jaxprop.device.memory` (a high-water mark since the
    process started); None where the backend does not report it (CPU)."""
    stats = memory(device)
    return None if stats is None else stats.get("peak_bytes_in_use")
