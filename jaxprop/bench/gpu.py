"""The ``gpu`` workload: the MLP gradient at GPU sizes in each precision policy.

For every selected accelerator (and the CPU only when ``--backends`` names it), every precision
policy of ``config.precisions`` (:mod:`jaxprop.train.precision`: ``highest`` = true float32,
``f32`` = the backend's default matmul precision, TF32 on an H100, ``bf16`` = float32 params
with bfloat16 computation and a float32 loss) and every width ``w`` of ``config.gpu_widths``,
one cell times, in interleaved rounds:

* ``matmul``: a ``(batch, w) @ (w, w)`` matmul in the policy's compute dtype and matmul
  precision (float32 accumulation), the rate the gradient is compared to (``roofline``);
* ``jaxprop``: the hand-written gradient of 784-w-w-10 relu + softmax cross-entropy under the
  policy (the training step's own :meth:`~jaxprop.train.precision.Precision.wrap`);
* ``jax.grad``: ``jax.value_and_grad`` of the same forward under the same policy;
* ``torch``: the same network with PyTorch autograd (``allow_tf32`` for ``f32``, ``autocast``
  to bfloat16 for ``bf16``) on the same device, when torch is installed and has it.

``numpy`` (float32, on the host) is timed once per width, on its own (it is 100x slower than
a GPU; one call where it takes over 1e11 FLOPs, else up to 3; its row's ``dtype`` says
``float32``). The ``dtype`` column of the other rows names the
precision policy.
"""

from __future__ import annotations

import contextlib
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

import jaxprop as jp
from jaxprop.bench import numpy_baseline as nb
from jaxprop.bench.flops import mlp_flops
from jaxprop.bench.harness import RECORD_KEYS, ROOFLINE, VS_JAX_GRAD, fill_ratios, target
from jaxprop.bench.steps import autodiff_grad_fn
from jaxprop.bench.timing import compile_jax, peak_bytes, summarize, time_calls, time_interleaved
from jaxprop.train.precision import get_precision

WORKLOAD = "gpu-mlp"
LOSS = "softmax_cross_entropy"
IN_DIM, OUT_DIM = 784, 10


def selected_devices(config, devices: dict) -> dict:
    """The devices this workload runs on: every accelerator of ``devices``, and the CPU only
    when ``config.backends`` names it (GPU sizes take minutes per cell on a CPU)."""
    explicit = set(config.backends or ())
    return {name: dev for name, dev in devices.items()
            if dev.platform != "cpu" or "cpu" in explicit}


def run_rows(config, devices: dict, *, log: Callable[[str], None] = lambda _: None,
             torch_impl=None, notes: list | None = None) -> list[dict]:
    """Every cell of the workload; returns its records (``RECORD_KEYS``).

    Args:
      config: the benchmark ``Config`` (``precisions``, ``gpu_widths``, ``gpu_batch``,
        ``impls``, ``repeats``, ``warmup``, ``backends``).
      devices: ``{"gpu:0": device, ...}``, the benchmark's devices.
      log: progress lines.
      torch_impl: :mod:`jaxprop.bench.torch_impl` when torch rows are wanted, else ``None``.
      notes: a list that receives a note when nothing runs.

    Returns:
      the records, in the order timed.
    """
    chosen = selected_devices(config, devices)
    if not chosen:
        if notes is not None:
            notes.append("gpu workload skipped: no GPU/TPU here (name --backends cpu to run "
                         "it on the CPU)")
        return []
    records = []
    for width in config.gpu_widths:
        sizes = (IN_DIM, width, width, OUT_DIM)
        data = _data(sizes, config.gpu_batch)
        if "numpy" in config.impls:
            records.append(_numpy_row(config, sizes, data, log))
        for dname, dev in chosen.items():
            for precision in config.precisions:
                records += _cell(config, sizes, data, dname, dev, precision, log, torch_impl)
    return records


def _data(sizes, batch):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, sizes[0])).astype(np.float32)
    t = np.eye(sizes[-1], dtype=np.float32)[rng.integers(0, sizes[-1], batch)]
    model = jp.mlp(list(sizes), "relu", "identity")
    return model, model.init(jax.random.key(0)), x, t


def _record(impl, device, dtype, batch, width, timing, *, flops, roofline=None, peak=None,
            samples=True):
    gflops = flops / timing.median / 1e9
    # every RECORD_KEY: the report groups rows by (workload, variant, device, dtype)
    return {k: None for k in RECORD_KEYS} | dict(
        workload=WORKLOAD, impl=impl, variant="gradient", device=device, dtype=dtype,
        batch=batch, width=width, process="this",
        median_s=timing.median, min_s=timing.min, max_s=timing.max, compile_s=timing.compile_s,
        samples_per_s=batch / timing.median if samples else None, gflops=gflops,
        roofline_ratio=gflops / roofline if roofline else None, peak_bytes=peak,
    )


def _numpy_row(config, sizes, data, log):
    model, params, x, t = data
    net = nb.NumpyMLP(list(sizes), "relu", "identity", LOSS)
    p = nb.from_jaxprop(params)
    # seconds per call at GPU sizes on a host: one timed call is enough for its magnitude
    repeats = 1 if mlp_flops(sizes, len(x)) > 1e11 else min(config.repeats, 3)
    times = time_calls(lambda: net.loss_and_grad(p, x, t), repeats=repeats, warmup=0,
                       sync=lambda _: None)
    rec = _record("numpy", "cpu:0", "float32", len(x), sizes[1], summarize(times),
                  flops=mlp_flops(sizes, len(x)))
    log(f"{WORKLOAD} numpy host width {sizes[1]}: {rec['median_s'] * 1e3:.1f} ms")
    return rec


def _gradient(impl, model, policy):
    """``(params, x, t) -> (loss, grads)`` under ``policy``, hand-written or by jax.grad."""
    loss = policy.loss(jp.get_loss(LOSS))
    inner = jp.loss_grad_state_fn(model, loss) if impl == "jaxprop" \
        else autodiff_grad_fn(model, loss)
    wrapped = policy.wrap(inner)
    return lambda params, x, t: wrapped(params, None, x, t)[:2]


def _matmul(dev, policy, batch, width):
    dtype = policy.compute_dtype or jnp.float32
    ka, kb = jax.random.split(jax.random.key(7))
    a = jax.device_put(jax.random.normal(ka, (batch, width), dtype), dev)
    b = jax.device_put(jax.random.normal(kb, (width, width), dtype), dev)
    with policy.matmul():
        mm, c = compile_jax(lambda a, b: jnp.matmul(a, b, preferred_element_type=jnp.float32),
                            a, b)
    return (lambda: mm(a, b)), c


def _torch_call(torch_impl, tnet, xt, tt, policy, tdev):
    import torch

    device_type = "cuda" if tdev.startswith("cuda") else "cpu"
    bf16 = policy.compute_dtype == jnp.bfloat16
    tf32 = policy.matmul_precision is None and not bf16  # what JAX's default does on a GPU

    def call():
        if device_type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = tf32
        ctx = torch.autocast(device_type, dtype=torch.bfloat16) if bf16 \
            else contextlib.nullcontext()
        with ctx:
            return tnet.loss_and_grad(xt, tt)

    return call


def _cell(config, sizes, data, dname, dev, precision, log, torch_impl):
    """One (device, precision, width) cell: matmul, jaxprop, jax.grad and torch, interleaved;
    returns their records, each with the ratio to the cell's matmul rate."""
    model, params0, x, t = data
    policy = get_precision(precision)
    batch, width = len(x), sizes[1]
    runs = []  # (impl, call, sync, warm-up calls, compile seconds, peak-bytes function)
    call, c = _matmul(dev, policy, batch, width)
    runs.append(("matmul", call, jax.block_until_ready, config.warmup, c,
                 lambda: peak_bytes(dev)))
    params, xd, td = jax.device_put((params0, x, t), dev)
    for impl in ("jaxprop", "jax.grad"):
        if impl in config.impls:
            compiled, c = compile_jax(_gradient(impl, model, policy), params, xd, td)
            runs.append((impl, lambda f=compiled: f(params, xd, td), jax.block_until_ready,
                         config.warmup, c, lambda: peak_bytes(dev)))
    if torch_impl is not None:
        for tname, tdev in torch_impl.devices():
            if tname != dname:
                continue
            tnet = torch_impl.TorchMLP(nb.from_jaxprop(params0), ["relu", "relu", "identity"],
                                       LOSS, device=tdev, dtype="float32")
            xt, tt = tnet.to_tensor(x), tnet.to_tensor(t)
            torch_impl.reset_peak(tdev)
            runs.append(("torch", _torch_call(torch_impl, tnet, xt, tt, policy, tdev),
                         torch_impl.sync(tdev), max(config.warmup, 3), None,
                         lambda tdev=tdev: torch_impl.peak_bytes(tdev)))
    times = time_interleaved([r[1] for r in runs], [r[2] for r in runs],
                             repeats=config.repeats, warmups=[r[3] for r in runs])
    timings = [summarize(ts, r[4]) for ts, r in zip(times, runs)]
    roofline = 2 * batch * width * width / timings[0].median / 1e9
    records = []
    for (impl, *_, peak), timing in zip(runs, timings):
        is_mm = impl == "matmul"
        records.append(_record(
            impl, dname, policy.name, batch, width, timing,
            flops=2 * batch * width * width if is_mm else mlp_flops(sizes, batch),
            roofline=roofline, peak=peak(), samples=not is_mm))
        log(f"{WORKLOAD} {impl} {dname} {policy.name} width {width}: "
            f"{timing.median * 1e3:.3f} ms")
    fill_ratios(records)  # the table's speed-up column (no NumPy row in a cell)
    return records


def targets(records) -> list[dict]:
    """The GPU targets, as measured in this run: hand-written at least as fast as jax.grad in
    every cell (speed-up >= 1); bf16 >= 50% of the same-run bf16 matmul rate at width >= 4096."""
    out = []
    rows = [r for r in records if r["workload"] == WORKLOAD]
    for hand in (r for r in rows if r["impl"] == "jaxprop"):
        cell = dict(device=hand["device"], dtype=hand["dtype"], width=hand["width"])
        tag = f"{WORKLOAD} {hand['dtype']} {hand['device']} width {hand['width']}"
        auto = next((r for r in rows if r["impl"] == "jax.grad"
                     and all(r[k] == v for k, v in cell.items())), None)
        if auto is not None:
            out.append(target(f"{tag}: {VS_JAX_GRAD}", auto["median_s"] / hand["median_s"], 1.0))
        if hand["dtype"] == "bf16" and hand["width"] >= 4096 and hand["roofline_ratio"]:
            out.append(target(f"{tag}: {ROOFLINE}", hand["roofline_ratio"], 0.5, "share"))
    return out
