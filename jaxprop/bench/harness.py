"""The harness the workloads share: runners, the roofline, cells timed in rounds, records.

A **cell** is one (workload, dtype, batch, width) and every implementation measured on it; each
implementation is an :class:`Entry` and becomes one record (``RECORD_KEYS``). The ratio columns
compare records of the same cell: ``vs_numpy`` is NumPy's time / this time (how many times
faster than NumPy), ``vs_jax_grad`` is ``jax.grad``'s time / this time on the same device and
variant, ``vs_torch`` PyTorch's likewise (in cells that ask for it). ``tokens_per_s`` is
filled in for sequence workloads (an :class:`Entry` with ``tokens``).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from jaxprop.bench.timing import (
    Contender, InProcess, Shared, Worker, compile_jax, peak_bytes, summarize, time_rounds,
)

IMPLS = ("numpy", "jaxprop", "jax.grad", "torch")


def has_torch() -> bool:
    """Whether torch is installed (found, not imported: only the worker process imports it)."""
    return importlib.util.find_spec("torch") is not None


def installed_impls() -> tuple[str, ...]:
    """``IMPLS`` without torch when torch is not installed: the default implementations."""
    return tuple(i for i in IMPLS if i != "torch" or has_torch())
DTYPES = ("float32", "bfloat16")
ISOLATION = ("process", "shared")
RECORD_KEYS = (
    "workload", "impl", "variant", "device", "dtype", "batch", "width", "median_s", "min_s",
    "max_s", "compile_s", "samples_per_s", "gflops", "roofline_ratio", "vs_numpy",
    "vs_jax_grad", "process", "peak_bytes", "tokens_per_s", "vs_torch",
)
# What a target measures (the words after its cell in the target's name); the units of targets.
VS_NUMPY, VS_JAX_GRAD, ROOFLINE = "vs NumPy", "vs jax.grad", "roofline"
TARGET_UNITS = ("x", "share", "s")


def target(name: str, value: float, goal: float, unit: str = "x") -> dict:
    """A target as measured in one run: ``{"target", "value", "goal", "unit", "met"}``.

    Every ratio reads one way: ``"x"``, a speed-up, the other's time / jaxprop's (> 1:
    jaxprop is faster), and ``"share"``, jaxprop's GFLOP/s / the best matmul's, are met at
    ``>= goal``; ``"s"``, seconds, is met at ``<= goal``.
    """
    if unit not in TARGET_UNITS:
        raise ValueError(f"unknown target unit {unit!r}; known: {', '.join(TARGET_UNITS)}")
    met = value <= goal if unit == "s" else value >= goal
    return {"target": name, "value": round(value, 3), "goal": goal, "unit": unit, "met": met}


# A step (one gradient) with fewer FLOPs than this is overhead-bound, not matmul-bound: its
# roofline column shows n/a instead of a meaningless percentage.
ROOFLINE_MIN_STEP_FLOPS = 1e7


@dataclasses.dataclass(frozen=True)
class Config:
    """What to run, and how big. ``quick()`` gives the tiny smoke-test sizes."""

    workloads: tuple[str, ...] = ()  # () : the default list (see workloads.DEFAULT_WORKLOADS)
    impls: tuple[str, ...] = dataclasses.field(default_factory=installed_impls)
    dtypes: tuple[str, ...] = DTYPES
    backends: tuple[str, ...] | None = None  # None: every JAX backend present
    repeats: int = 7
    warmup: int = 2
    fresh: int = 3  # fresh processes per first-call figure
    isolation: str = "process"
    matmul_precision: str = "highest"  # float32 matmuls on GPU/TPU are true float32
    xor_epochs: int = 10_000
    population: int = 1000
    mlp_sizes: tuple[int, ...] = (784, 1024, 1024, 10)
    mlp_batch: int = 512
    widths: tuple[int, ...] = (128, 256, 512, 1024, 2048, 4096)
    batches: tuple[int, ...] = (1, 4, 16, 64, 256, 1024, 4096)
    digits_epochs: int = 15
    roofline_sizes: tuple[int, ...] = (1024, 2048)
    dp_devices: tuple[int, ...] = (1, 2, 4)
    dp_batch: int = 4096
    # --sizes/--activation/--output-activation/--loss/--batch: the "custom" workload
    custom_sizes: tuple[int, ...] | None = None
    custom_activation: str = "relu"
    custom_output_activation: str | None = None
    custom_loss: str = "mse"
    custom_batch: int = 64
    # the gpu workload (jaxprop/bench/gpu.py): precision policies, widths and batch
    precisions: tuple[str, ...] = ("highest", "f32", "bf16")
    gpu_widths: tuple[int, ...] = (1024, 4096, 8192)
    gpu_batch: int = 4096
    # the cnn workload (jaxprop/bench/cnn.py): side x side x 1 images
    cnn_side: int = 28
    cnn_batch: int = 256
    cnn_channels: tuple[int, int] = (32, 64)
    cnn_dense: int = 128
    # the gpt workload (workloads.gpt): jp.gpt's sizes, batch of token sequences
    gpt_vocab: int = 96
    gpt_blocks: int = 4
    gpt_features: int = 256
    gpt_heads: int = 4
    gpt_context: int = 128
    gpt_batch: int = 16
    quick_run: bool = False

    def quick(self) -> "Config":
        return dataclasses.replace(
            self, repeats=min(self.repeats, 3), warmup=1, fresh=min(self.fresh, 1),
            xor_epochs=200, population=16, mlp_sizes=(64, 128, 128, 10), mlp_batch=32,
            widths=(32, 64),
            batches=(1, 16), digits_epochs=2, roofline_sizes=(512,), dp_devices=(1, 2),
            dp_batch=64, gpu_widths=(32, 64), gpu_batch=16, cnn_side=12, cnn_batch=8,
            cnn_channels=(4, 8), cnn_dense=16, gpt_vocab=11, gpt_blocks=1, gpt_features=16,
            gpt_heads=2, gpt_context=8, gpt_batch=4, quick_run=True,
        )


class Entry(NamedTuple):
    """One implementation in a cell: its labels, who runs which job, and what a call does.

    ``flops``/``samples`` (and ``tokens`` for sequence models) are per call; ``per`` divides the
    times (a call of ``per`` epochs reported per epoch); ``step_flops`` decides whether the
    roofline applies; ``fixed`` is an already measured list of seconds (fresh processes) instead
    of a job.
    """

    impl: str
    variant: str
    device: str
    runner: object = None
    job: str | None = None
    warmup: int = 1
    compile_s: float | None = None
    flops: float | None = None
    samples: float | None = None
    step_flops: float | None = None
    per: int = 1
    peak: Callable | None = None
    fixed: list | None = None
    tokens: float | None = None


def fill_ratios(recs: list[dict], *, vs_torch: bool = False) -> None:
    """Fill in the ratio columns of one cell's records, in place: ``vs_numpy`` (every row but
    NumPy's and the matmul's, when the cell has a NumPy row), ``vs_jax_grad`` and, with
    ``vs_torch``, ``vs_torch`` (jaxprop's rows, against the row of that impl on the same device
    and variant)."""
    numpy = next((r for r in recs if r["impl"] == "numpy"), None)
    refs = {"vs_jax_grad": "jax.grad", **({"vs_torch": "torch"} if vs_torch else {})}
    for r in recs:
        if numpy is not None and r is not numpy and r["impl"] != "matmul":
            r["vs_numpy"] = numpy["median_s"] / r["median_s"]
        if r["impl"] != "jaxprop":
            continue
        for key, impl in refs.items():
            ref = next((g for g in recs if g["impl"] == impl and g["device"] == r["device"]
                        and g["variant"] == r["variant"]), None)
            if ref is not None:
                r[key] = ref["median_s"] / r["median_s"]


def jax_devices(backends=None) -> dict[str, jax.Device]:
    """``{"cpu:0": device, "gpu:0": device, ...}``: the first device of every backend present."""
    out = {}
    for backend in backends or ("cpu", "gpu", "tpu"):
        try:
            devices = jax.devices(backend)
        except RuntimeError:
            continue
        if devices:
            out[f"{backend}:0"] = devices[0]
    return out


class Harness:
    """Times cells (:meth:`cell`) and collects their ``records``; ``log(str)`` reports progress.

    What every workload is given (:class:`jaxprop.bench.workloads.Bench` adds the table of
    workloads). JAX runs in this process; NumPy and torch in worker processes
    (``isolation="process"``) or here too (``"shared"``, the old method). Call :meth:`close` (or
    use ``with``) to stop the workers.
    """

    def __init__(self, config: Config, log: Callable[[str], None] = lambda _: None):
        if config.isolation not in ISOLATION:
            raise ValueError(f"isolation must be one of {ISOLATION}, got {config.isolation!r}")
        self.config, self.log = config, log
        self.devices = jax_devices(config.backends)
        self.records: list[dict] = []
        self.notes: list[str] = []
        self.jax = Shared() if config.isolation == "shared" else InProcess()
        self._workers: dict[str, object] = {}
        self._peaks: dict[tuple[str, str], float] = {}
        self._supported: dict[tuple, bool] = {}
        self._jobs = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        for w in self._workers.values():
            if isinstance(w, Worker):
                w.close()
        self._workers.clear()

    def settle(self) -> float:
        """The longest wait for :func:`~jaxprop.bench.timing.quiet` of any runner so far."""
        return max([self.jax.settle] + [getattr(w, "settle", 0.0)
                                        for w in self._workers.values()])

    # -- runners ------------------------------------------------------------------------------

    def has(self, impl: str) -> bool:
        return impl in self.config.impls

    def library(self, name: str):
        """The runner for ``"numpy"`` or ``"torch"``: its own worker process, or this one."""
        if name not in self._workers:
            if self.config.isolation == "shared":
                if name == "torch":  # torch's OpenMP threads must sleep next to XLA's pool
                    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
                self._workers[name] = self.jax
            else:
                self._workers[name] = Worker()
        return self._workers[name]

    def job(self, runner, factory: str, **kwargs) -> str:
        """Set up a NumPy/torch job from ``worker.FACTORIES`` on ``runner``; its name."""
        self._jobs += 1
        return runner.setup(f"job{self._jobs}", factory, **kwargs)

    def jax_job(self, call: Callable, sync: Callable | None = None) -> str:
        self._jobs += 1
        return self.jax.add(f"job{self._jobs}", call, sync)

    def torch_devices(self) -> list[tuple[str, str]]:
        """``(name, torch device)`` for torch's rows: those of the JAX rows' devices (what
        ``--backends`` chose) that torch has."""
        runner = self.library("torch")
        if isinstance(runner, Worker):
            found = runner.info("torch-devices")
        else:
            from jaxprop.bench import torch_impl

            found = torch_impl.devices()
        return [(name, dev) for name, dev in found if name in self.devices]

    def precision(self, dtype: str):
        return jax.default_matmul_precision(
            self.config.matmul_precision if dtype == "float32" else "default")

    def supports(self, dev, dtype) -> bool:
        """Whether ``dev`` runs a matmul in ``dtype`` (False, with a note, where it cannot)."""
        key = (dev.platform, dtype)
        if key not in self._supported:
            try:
                a = jax.device_put(jnp.ones((8, 8), dtype), dev)
                jax.block_until_ready(jax.jit(jnp.matmul)(a, a))
                self._supported[key] = True
            except Exception as e:  # noqa: BLE001 - any failure means "not supported here"
                self.notes.append(f"{dtype} skipped on {dev.platform}: {type(e).__name__}")
                self._supported[key] = False
        return self._supported[key]

    # -- the roofline -------------------------------------------------------------------------

    def peak(self, dname: str, dtype: str) -> float | None:
        """The best matmul rate (GFLOP/s) measured on ``dname`` in ``dtype``: large square
        products timed like everything else (recorded as ``roofline`` rows the first time), at
        their fastest sample."""
        key = (dname, dtype)
        if key not in self._peaks:
            dev = self.devices.get(dname)
            if dev is None or not self.supports(dev, dtype):
                self._peaks[key] = None
                return None
            entries = []
            for n in self.config.roofline_sizes:
                ka, kb = jax.random.split(jax.random.key(7))
                a = jax.device_put(jax.random.normal(ka, (n, n), jnp.dtype(dtype)), dev)
                b = jax.device_put(jax.random.normal(kb, (n, n), jnp.dtype(dtype)), dev)
                with self.precision(dtype):
                    mm, c = compile_jax(
                        lambda a, b: jnp.matmul(a, b, preferred_element_type=jnp.float32), a, b)
                entries.append(Entry("matmul", f"{n}x{n} @ {n}x{n}", dname, self.jax,
                                     self.jax_job(lambda mm=mm, a=a, b=b: mm(a, b)),
                                     self.config.warmup, c, flops=2.0 * n ** 3,
                                     step_flops=2.0 * n ** 3))
            recs = self.cell("roofline", dtype, None, None, entries, roofline=False)
            # the best rate: each size's fastest sample, so noise can only lower the reference
            best = max(r["gflops"] * r["median_s"] / r["min_s"] for r in recs)
            for r in recs:
                r["roofline_ratio"] = r["gflops"] / best
            self._peaks[key] = best
        return self._peaks[key]

    # -- cells --------------------------------------------------------------------------------

    def cell(self, workload: str, dtype: str, batch, width, entries: list[Entry], *,
             roofline: bool = True, vs_torch: bool = False) -> list[dict]:
        """Time ``entries`` in alternating rounds, then add one record each to ``records``.

        Entries with ``fixed`` times are already measured; the ratio columns are filled in.

        Args:
          workload: the workload's name, the records' ``workload`` column.
          dtype: the dtype measured (``"float32"``, ``"bfloat16"``), the ``dtype`` column.
          batch: the batch size, the ``batch`` column (or ``None``).
          width: the width, the ``width`` column (or ``None``).
          entries: the implementations measured on this cell, one :class:`Entry` each.
          roofline: fill in ``roofline_ratio`` from the device's best matmul rate
            (:meth:`peak`) for entries on a JAX device.
          vs_torch: fill in ``vs_torch`` too (its column fits the 80 columns of a cell without
            NumPy, not the MLP tables').

        Returns:
          the cell's records, one per entry, in the order of ``entries``.
        """
        timed = [e for e in entries if e.fixed is None]
        times = time_rounds([Contender(e.runner, e.job, e.warmup) for e in timed],
                            self.config.repeats)
        by_entry = dict(zip(map(id, timed), times))
        recs = []
        for e in entries:
            ts = [t / e.per for t in (e.fixed if e.fixed is not None else by_entry[id(e)])]
            timing = summarize(ts, e.compile_s)
            peak = self.peak(e.device, dtype) if roofline and e.device in self.devices else None
            recs.append(self._record(workload, e, dtype, batch, width, timing, peak))
        for e in timed:
            e.runner.drop(e.job)
        fill_ratios(recs, vs_torch=vs_torch)
        self.records.extend(recs)
        return recs

    def _record(self, workload, e: Entry, dtype, batch, width, timing, peak) -> dict:
        flops = e.flops / e.per if e.flops else None
        gflops = flops / timing.median / 1e9 if flops else None
        applies = e.step_flops is not None and e.step_flops >= ROOFLINE_MIN_STEP_FLOPS
        process = "fresh" if e.fixed is not None else (
            "this" if e.runner is self.jax else getattr(e.runner, "process", "worker"))
        if self.config.isolation == "shared" and e.fixed is None:
            process = "shared"
        rec = dict(
            workload=workload, impl=e.impl, variant=e.variant, device=e.device, dtype=dtype,
            batch=batch, width=width, median_s=timing.median, min_s=timing.min,
            max_s=timing.max, compile_s=timing.compile_s,
            samples_per_s=e.samples / e.per / timing.median if e.samples else None,
            gflops=gflops,
            roofline_ratio=gflops / peak if gflops and peak and applies else None,
            vs_numpy=None, vs_jax_grad=None, process=process,
            peak_bytes=e.peak() if e.peak else None,
            tokens_per_s=e.tokens / e.per / timing.median if e.tokens else None, vs_torch=None,
        )
        self.log(f"{workload} {e.impl} ({e.variant}) {e.device} {dtype} batch {batch} "
                 f"width {width}: {timing.median * 1e3:.3f} ms")
        return rec

    def jax_peak(self, dname: str) -> Callable:
        dev = self.devices[dname]
        return lambda: peak_bytes(dev)
