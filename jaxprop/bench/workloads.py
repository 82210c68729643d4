"""The workloads: ``WORKLOADS`` maps each name to a function ``(bench) -> None`` that measures
every selected implementation and adds records to ``bench`` (a :class:`~jaxprop.bench.harness.
Harness`; :class:`Bench` is the harness that runs them by name). Add a workload by adding an
entry (``WORKLOADS["conv"] = conv``).

Implementations: ``numpy`` (:mod:`jaxprop.bench.numpy_baseline`), ``jaxprop`` (the hand-written
gradient, trained through the library's one training step: ``jp.fit``, ``jp.fit_population``,
``make_train_step``), ``jax.grad`` (the same step with ``grad_fn`` = ``jax.value_and_grad`` of
the same forward and loss) and ``torch`` (PyTorch autograd, eager). Every JAX row reports its
compile time; ``variant`` says what was timed (``jp.fit`` = repeated calls of the public API,
``first jp.fit call`` = a fresh Python process, ...).
"""

from __future__ import annotations

import sys
import tempfile
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxprop as jp
from jaxprop.bench import cnn as cnn_workload
from jaxprop.bench import gpu as gpu_workload
from jaxprop.bench import numpy_baseline as nb
from jaxprop.bench.flops import mlp_flops, step_flops
from jaxprop.bench.harness import Config, Entry, Harness
from jaxprop.bench.steps import grad_fn_for, jax_entries
from jaxprop.bench.timing import command_seconds, fresh_process
from jaxprop.core.losses import get_loss
from jaxprop.data import xor as xor_data

def _np_params(params):
    return nb.from_jaxprop(params)


# --------------------------------------------------------------------------------------------
# XOR: the classic program, through jp.fit, a fresh process's first call, and `jaxprop train`

XOR_LR = 0.1

FIRST_FIT = """
import json, time
import jax, numpy as np, optax
import jaxprop as jp
from jaxprop.data import xor
{cache}
x, t = (a.astype(np.float32) for a in xor())
model = jp.mlp([2, 4, 1], "sigmoid", "sigmoid", init="normal")
opt = optax.sgd({lr})
key = jax.block_until_ready(jax.random.key(0))  # JAX's backend starts before the clock
jp.fit, jp.fit_population  # jaxprop's names import on first use: imports before the clock too
t0 = time.perf_counter()
{call}
jax.block_until_ready(out)
print("RESULT " + json.dumps({{"seconds": time.perf_counter() - t0, "compile_s": compile_s}}))
"""
FIT_CALL = ("params, history = jp.fit(model, 'sse_half', opt, (x, t), epochs={epochs}, key=key)"
            "\nout, compile_s = params, history.compile_time")
POPULATION_CALL = ("out = jp.fit_population(model, 'sse_half', opt, (x, t), n={n}, "
                   "epochs={epochs}, key=key).final_loss\ncompile_s = None")
CLI_TRAIN = """
import json, tempfile, time
t0 = time.perf_counter()
import jax
jax.devices()
t1 = time.perf_counter()
from jaxprop.cli import main
with tempfile.TemporaryDirectory() as d:
    rc = main(["train", "--out", d + "/run", "--no-plots", "--epochs", "{epochs}"])
    compile_s = json.load(open(d + "/run/metrics.json"))["compile_time"]
print("RESULT " + json.dumps({{"seconds": time.perf_counter() - t1, "rc": rc,
                              "compile_s": compile_s, "jax_import_s": t1 - t0}}))
"""


def _fresh(bench, code: str, env=None) -> tuple[list[float], float | None]:
    """Seconds of ``bench.config.fresh`` fresh processes running ``code``, and the median
    compile seconds they report."""
    results = [fresh_process(code, env=env) for _ in range(bench.config.fresh)]
    compiles = [r["compile_s"] for r in results if r.get("compile_s") is not None]
    return [r["seconds"] for r in results], (float(np.median(compiles)) if compiles else None)


def _command(bench, argv: list[str], env: dict) -> list[float]:
    """Wall seconds of ``bench.config.fresh`` runs of ``python -m jaxprop ARGV --out DIR`` (a
    new folder each), from the process's start to its exit."""
    times = []
    with tempfile.TemporaryDirectory(prefix="jaxprop-bench-cli-") as d:
        for i in range(bench.config.fresh):
            times.append(command_seconds([sys.executable, "-m", "jaxprop", *argv, "--out",
                                          f"{d}/run{i}"], env=env, cwd=d))
    return times


def _xor_start():
    model = jp.mlp([2, 4, 1], "sigmoid", "sigmoid", init="normal")
    x, t = (a.astype(np.float32) for a in xor_data())
    return model, x, t, model.init(jax.random.key(0))


def _fit_entries(bench, model, loss, opt, x, t, params, work, variants, **fit_kw):
    """``jp.fit`` rows, hand-written and ``jax.grad``, on every device, one per variant
    (``{name: extra fit options}``); each compiled by a first call."""
    entries = []
    for impl in ("jaxprop", "jax.grad"):
        if not bench.has(impl):
            continue
        for dname, dev in bench.devices.items():
            xd, td, pd = jax.device_put((x, t, params), dev)
            key = jax.device_put(jax.random.key(0), dev)
            for variant, extra in variants.items():
                def call(g=grad_fn_for(impl, model, loss), extra=extra, xd=xd, td=td, pd=pd,
                         key=key):
                    return jp.fit(model, loss, opt, (xd, td), key=key, params=pd, grad_fn=g,
                                  **fit_kw, **extra)

                _, history = call()  # compiles
                entries.append(Entry(impl, variant, dname, bench.jax, bench.jax_job(call),
                                     bench.config.warmup, history.compile_time, **work,
                                     peak=bench.jax_peak(dname)))
    return entries


def _numpy_xor(bench, params, x, t, epochs) -> Entry:
    runner = bench.library("numpy")
    job = bench.job(runner, "numpy-xor", params=_np_params(params), x=x, t=t, lr=XOR_LR,
                    epochs=epochs)
    return Entry("numpy", "classic loop", "cpu:0", runner, job, 1,
                 flops=epochs * mlp_flops([2, 4, 1], 4), samples=4 * epochs,
                 step_flops=mlp_flops([2, 4, 1], 4))


def xor(bench) -> None:
    """2-4-1 sigmoid, ``sse_half``, gradient descent lr 0.1, 10,000 full-batch epochs, from the
    same weights: NumPy's classic loop, ``jp.fit`` (hand-written and ``jax.grad``), torch; then
    the first ``jp.fit`` call of a fresh process (without and with the compilation cache) and
    ``jaxprop train``'s wall time after JAX's import."""
    cfg = bench.config
    epochs = cfg.xor_epochs
    model, x, t, params = _xor_start()
    step = mlp_flops([2, 4, 1], 4)
    work = dict(flops=epochs * step, samples=4 * epochs, step_flops=step)
    entries = [_numpy_xor(bench, params, x, t, epochs)] if bench.has("numpy") else []
    entries += _fit_entries(bench, model, "sse_half", optax.sgd(XOR_LR), x, t, params, work,
                            {"jp.fit": {}}, epochs=epochs)
    if bench.has("torch"):
        runner = bench.library("torch")
        for dname, tdev in bench.torch_devices():
            job = bench.job(runner, "torch-xor", params=_np_params(params), x=x, t=t,
                            lr=XOR_LR, epochs=epochs, device=tdev)
            entries.append(Entry("torch", "eager loop", dname, runner, job, 1, **work))
    if bench.has("jaxprop") and cfg.fresh:
        call = FIT_CALL.format(epochs=epochs)
        cold, c_cold = _fresh(bench, FIRST_FIT.format(cache="", lr=XOR_LR, call=call))
        entries.append(Entry("jaxprop", "first jp.fit call", "cpu:0", compile_s=c_cold,
                             fixed=cold, **work))
        with _cache_dir() as d:
            code = FIRST_FIT.format(cache=f"jp.enable_compilation_cache({d!r})", lr=XOR_LR,
                                    call=call)
            fresh_process(code)  # fills the cache
            warm, c_warm = _fresh(bench, code)
            entries.append(Entry("jaxprop", "first jp.fit call, compilation cache", "cpu:0",
                                 compile_s=c_warm, fixed=warm, **work))
            env = {"JAXPROP_COMPILATION_CACHE": d}
            fresh_process(CLI_TRAIN.format(epochs=epochs), env=env)
            cli, c_cli = _fresh(bench, CLI_TRAIN.format(epochs=epochs), env=env)
            entries.append(Entry("jaxprop", "jaxprop train (after JAX import)", "cpu:0",
                                 compile_s=c_cli, fixed=cli, **work))
            whole = _command(bench, ["train", "--no-plots", "--epochs", str(epochs)], env)
            entries.append(Entry("jaxprop", "jaxprop train (whole command)", "cpu:0",
                                 fixed=whole, **work))
    bench.cell("xor", "float32", 4, 4, entries)


class _cache_dir:
    """A temporary folder for a persistent compilation cache."""

    def __enter__(self):
        self._tmp = tempfile.TemporaryDirectory(prefix="jaxprop-bench-cache-")
        return self._tmp.name

    def __exit__(self, *exc):
        self._tmp.cleanup()


def xor_population(bench) -> None:
    """``population`` XOR networks (10,000 epochs each) by ``jp.fit_population`` against ONE
    NumPy network, timed in the same rounds; and the first call of a fresh process."""
    cfg = bench.config
    n, epochs = cfg.population, cfg.xor_epochs
    model, x, t, params = _xor_start()
    step = mlp_flops([2, 4, 1], 4)
    entries = [_numpy_xor(bench, params, x, t, epochs)] if bench.has("numpy") else []
    work = dict(flops=n * epochs * step, samples=4 * n * epochs, step_flops=step)
    opt = optax.sgd(XOR_LR)
    for impl in ("jaxprop", "jax.grad"):
        if not bench.has(impl):
            continue
        for dname, dev in bench.devices.items():
            xd, td = jax.device_put((x, t), dev)
            key = jax.device_put(jax.random.key(0), dev)

            def call(g=grad_fn_for(impl, model, "sse_half"), xd=xd, td=td, key=key):
                return jp.fit_population(model, "sse_half", opt, (xd, td), n=n, epochs=epochs,
                                         key=key, grad_fn=g).final_loss

            t0 = time.perf_counter()
            call()  # compiles; a population's compile time is this first call's
            first = time.perf_counter() - t0
            entries.append(Entry(impl, "jp.fit_population", dname, bench.jax,
                                 bench.jax_job(call), cfg.warmup, first, **work,
                                 peak=bench.jax_peak(dname)))
    if bench.has("jaxprop") and cfg.fresh:
        code = FIRST_FIT.format(cache="", lr=XOR_LR,
                                call=POPULATION_CALL.format(n=n, epochs=epochs))
        times, _ = _fresh(bench, code)
        entries.append(Entry("jaxprop", "first jp.fit_population call", "cpu:0", fixed=times,
                             **work))
    bench.cell("xor-population", "float32", 4 * n, 4, entries)


# --------------------------------------------------------------------------------------------
# MLP gradients and Adam steps


def _mlp_data(sizes, batch, loss="softmax_cross_entropy", seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, sizes[0])).astype(np.float32)
    if get_loss(loss).categorical:
        t = np.eye(sizes[-1], dtype=np.float32)[rng.integers(0, sizes[-1], batch)]
    elif get_loss(loss).input_range == (0, 1) or loss == "bce_with_logits":
        t = rng.integers(0, 2, (batch, sizes[-1])).astype(np.float32)
    else:
        t = rng.standard_normal((batch, sizes[-1])).astype(np.float32)
    return x, t


def mlp_cell(bench, workload: str, sizes, batch: int, dtype: str, *, step: str = "grad",
             activation: str = "relu", output_activation: str = "identity",
             loss: str = "softmax_cross_entropy", model=None) -> list[dict]:
    """Every implementation on one network, batch and dtype: a gradient or an Adam step.

    ``x: (batch, sizes[0])`` from N(0, 1); ``t: (batch, sizes[-1])`` random targets that suit
    ``loss``. NumPy runs only the float32 gradient; NumPy and torch only ``jp.mlp``'s network
    with activations and a loss they know.

    Args:
      bench: the :class:`~jaxprop.bench.harness.Harness` that times the cell and keeps its
        records.
      workload: the workload's name, the records' ``workload`` column.
      sizes: the layer widths, input first.
      batch: examples per step.
      dtype: the working dtype (``"float32"``, ``"bfloat16"``); devices that cannot run a matmul
        in it are skipped.
      step: ``"grad"`` for one gradient, ``"adam"`` for an Adam training step (learning rate
        1e-3).
      activation: the hidden layers' activation name.
      output_activation: the output layer's activation name.
      loss: the loss name.
      model: a model that replaces ``jp.mlp(sizes, ...)`` (it must take ``sizes[0]`` inputs and
        give ``sizes[-1]`` outputs); then only the JAX implementations run, and its FLOPs are
        the traced count (:func:`~jaxprop.bench.flops.step_flops`), not ``mlp_flops``.

    Returns:
      the cell's records (:meth:`~jaxprop.bench.harness.Harness.cell`).
    """
    cfg = bench.config
    x, t = _mlp_data(sizes, batch, loss)
    own = model is None
    if own:
        model = jp.mlp(list(sizes), activation, output_activation, dtype=jnp.dtype(dtype))
    params0 = model.init(jax.random.key(0))
    flops = mlp_flops(sizes, batch) if own else step_flops(
        model, params0, model.init_with_state(jax.random.key(0))[1], x)
    work = dict(flops=flops, samples=batch, step_flops=flops)
    acts = [activation] * (len(sizes) - 2) + [output_activation]
    entries = []
    np_ok = own and all(a in nb.ACTIVATIONS for a in acts) and loss in nb.LOSSES
    if bench.has("numpy") and dtype == "float32" and step == "grad" and np_ok:
        runner = bench.library("numpy")
        job = bench.job(runner, "numpy-grad", sizes=list(sizes), activation=activation,
                        output_activation=output_activation, loss=loss,
                        params=_np_params(params0), x=x, t=t)
        entries.append(Entry("numpy", "gradient", "cpu:0", runner, job, cfg.warmup, **work))
    entries += jax_entries(bench, model, loss, params0, x, t, dtype, step,
                           skip=lambda dev: not bench.supports(dev, dtype), **work)
    if bench.has("torch") and own and np_ok:
        runner = bench.library("torch")
        for dname, tdev in bench.torch_devices():
            job = bench.job(runner, "torch-mlp", step=step, params=_np_params(params0),
                            acts=acts, loss=loss, x=x, t=t, dtype=dtype, device=tdev)
            # torch's first calls per shape are slow (oneDNN kernel set-up): warm up longer
            entries.append(Entry("torch", "gradient" if step == "grad" else "adam step", dname,
                                 runner, job, max(cfg.warmup, 8), **work))
    return bench.cell(workload, dtype, batch, sizes[1] if len(sizes) > 2 else sizes[-1],
                      entries)


def mlp(bench) -> None:
    """784-1024-1024-10 relu, softmax cross-entropy, batch 512: gradient and Adam step."""
    cfg = bench.config
    for dtype in cfg.dtypes:
        mlp_cell(bench, "mlp-grad", cfg.mlp_sizes, cfg.mlp_batch, dtype, step="grad")
        mlp_cell(bench, "mlp-adam", cfg.mlp_sizes, cfg.mlp_batch, dtype, step="adam")


def width_sweep(bench) -> None:
    """Gradient of 784-w-w-10 for w in ``widths``, batch 512."""
    cfg = bench.config
    d_in, d_out = cfg.mlp_sizes[0], cfg.mlp_sizes[-1]
    for dtype in cfg.dtypes:
        for w in cfg.widths:
            mlp_cell(bench, "width-sweep", (d_in, w, w, d_out), cfg.mlp_batch, dtype)


def batch_sweep(bench) -> None:
    """Gradient of 784-1024-1024-10 for every batch in ``batches``."""
    cfg = bench.config
    for dtype in cfg.dtypes:
        for b in cfg.batches:
            mlp_cell(bench, "batch-sweep", cfg.mlp_sizes, b, dtype)


def custom(bench) -> None:
    """The network of ``--sizes/--activation/--output-activation/--loss/--batch``."""
    cfg = bench.config
    if not cfg.custom_sizes:
        raise ValueError("the custom workload needs --sizes, e.g. --sizes 1,32,32,1")
    loss = get_loss(cfg.custom_loss)
    out = cfg.custom_output_activation or (
        "sigmoid" if loss.input_range == (0, 1) else "identity")
    for dtype in cfg.dtypes:
        mlp_cell(bench, "custom", cfg.custom_sizes, cfg.custom_batch, dtype,
                 activation=cfg.custom_activation, output_activation=out, loss=loss.name)


# --------------------------------------------------------------------------------------------
# Digits: the whole training step, per epoch


def train_digits(bench) -> None:
    """``jaxprop train --dataset digits``'s run (64-64-64-10 relu, softmax cross-entropy, Adam
    3e-3, batch 64 with a ragged last batch): seconds per epoch of ``jp.fit`` (its automatic
    compile options, and XLA's full optimisation), of ``jax.grad`` + optax in the same scan, and
    of PyTorch's eager loop."""
    from jaxprop import data

    cfg = bench.config
    ds = data.load("digits", seed=0)
    # the (n, 8, 8, 1) images as rows of 64 pixels (jaxprop train's Flatten, done once here)
    x = ds.x_train.reshape(len(ds.x_train), -1).astype(np.float32)
    t = ds.y_train.astype(np.float32)
    sizes, batch, epochs, lr = [64, 64, 64, 10], 64, cfg.digits_epochs, 3e-3
    model = jp.mlp(sizes, "relu", "identity")
    params = model.init(jax.random.key(0))
    n = x.shape[0]
    work = dict(flops=epochs * mlp_flops(sizes, n), samples=epochs * n,
                step_flops=mlp_flops(sizes, batch), per=epochs)
    variants = {"jp.fit": {}, "jp.fit, full optimisation": {"compiler_options": None}}
    entries = _fit_entries(bench, model, "softmax_cross_entropy", optax.adam(lr), x, t, params,
                           work, variants, epochs=epochs, batch_size=batch, log_every=epochs)
    if bench.has("torch"):
        runner = bench.library("torch")
        for dname, tdev in bench.torch_devices():
            job = bench.job(runner, "torch-epochs", params=_np_params(params),
                            acts=["relu", "relu", "identity"], loss="softmax_cross_entropy",
                            x=x, t=t, lr=lr, batch_size=batch, epochs=epochs, device=tdev)
            entries.append(Entry("torch", "eager loop", dname, runner, job, 1, **work))
    bench.cell("train-digits", "float32", batch, 64, entries)


# --------------------------------------------------------------------------------------------
# Data parallel: one step on 1, 2, 4 simulated CPU devices (each in its own process)

DATA_PARALLEL = """
import json, statistics, time
import jax
import jaxprop as jp
model = jp.mlp([64, 512, 512, 10], activation="tanh", output_activation="identity")
params = model.init(jax.random.key(0))
x = jax.random.normal(jax.random.key(1), ({batch}, 64))
t = jax.nn.one_hot(jax.random.randint(jax.random.key(2), ({batch},), 0, 10), 10)
dp = jp.make_data_parallel_step(model, "softmax_cross_entropy", 0.05)
x, t = jp.shard_batch(dp.mesh, x, t)
p, s = dp.init(params)
t0 = time.perf_counter()
p, s, v = jax.block_until_ready(dp.step(p, s, x, t))
first = time.perf_counter() - t0
times = []
for _ in range({repeats}):
    t0 = time.perf_counter()
    p, s, v = jax.block_until_ready(dp.step(p, s, x, t))
    times.append(time.perf_counter() - t0)
print("RESULT " + json.dumps({{"times": times, "first_s": first,
                              "devices": len(jax.devices())}}))
"""


def data_parallel(bench) -> None:
    """A data parallel training step (64-512-512-10 tanh, SGD, batch 4096) on 1, 2 and 4
    simulated CPU devices, each count in its own process (threads of one machine sharing its
    cores: this measures the overhead, not the speed-up of real devices)."""
    cfg = bench.config
    if not bench.has("jaxprop"):
        return
    sizes = [64, 512, 512, 10]
    entries = []
    for d in cfg.dp_devices:
        env = {"XLA_FLAGS": f"--xla_force_host_platform_device_count={d}",
               "JAX_PLATFORMS": "cpu"}
        r = fresh_process(DATA_PARALLEL.format(batch=cfg.dp_batch, repeats=cfg.repeats),
                          env=env)
        entries.append(Entry("jaxprop", f"data parallel step, {r['devices']} devices", "cpu:0",
                             compile_s=r["first_s"], fixed=r["times"],
                             flops=mlp_flops(sizes, cfg.dp_batch), samples=cfg.dp_batch,
                             step_flops=mlp_flops(sizes, cfg.dp_batch)))
    bench.cell("data-parallel", "float32", cfg.dp_batch, 512, entries)


def cnn(bench) -> None:
    """The CNN gradient workload (:mod:`jaxprop.bench.cnn`)."""
    cnn_workload.run(bench)


# --------------------------------------------------------------------------------------------
# GPT: a training step of a small decoder-only transformer on token ids

GPT_LOSS = "sparse_softmax_cross_entropy"


def gpt_setup(cfg):
    """The gpt workload's model and data: ``jp.gpt(cfg.gpt_vocab, blocks=cfg.gpt_blocks,
    features=cfg.gpt_features, heads=cfg.gpt_heads, context=cfg.gpt_context)``, random ids
    ``x, t: (cfg.gpt_batch, cfg.gpt_context)`` (int32; every token's target random too).

    Returns:
      ``(model, x, t)``.
    """
    model = jp.gpt(cfg.gpt_vocab, blocks=cfg.gpt_blocks, features=cfg.gpt_features,
                   heads=cfg.gpt_heads, context=cfg.gpt_context)
    rng = np.random.default_rng(0)
    x, t = (rng.integers(0, cfg.gpt_vocab, (cfg.gpt_batch, cfg.gpt_context)).astype(np.int32)
            for _ in range(2))
    return model, x, t


def gpt(bench) -> None:
    """One Adam training step (lr 1e-3) of ``jp.gpt`` (4 blocks, 256 features, 4 heads, context
    128, a vocabulary of 96) on a batch of 16 sequences, ``sparse_softmax_cross_entropy`` over
    every token: the hand-written backward (``make_train_step``), ``jax.grad`` of the same
    forward and loss in the same step, and PyTorch (the same network and weights, plain torch
    ops, ``torch.optim.Adam``) on the same devices. Tokens/s is ``batch x context`` per step;
    GFLOP/s count 3x the traced forward pass (:func:`~jaxprop.bench.flops.step_flops`)."""
    cfg = bench.config
    model, x, t = gpt_setup(cfg)
    params0, state0 = model.init_with_state(jax.random.key(0))
    flops = step_flops(model, params0, state0, x)
    work = dict(flops=flops, samples=x.shape[0], step_flops=flops, tokens=x.size)
    entries = jax_entries(bench, model, GPT_LOSS, params0, x, t, "float32", "adam", **work)
    if bench.has("torch"):
        runner = bench.library("torch")
        params = jax.tree.map(np.asarray, params0)
        for dname, tdev in bench.torch_devices():
            job = bench.job(runner, "torch-gpt", params=params, heads=cfg.gpt_heads, x=x, t=t,
                            device=tdev)
            # torch's first calls per shape are slow (oneDNN kernel set-up): warm up longer
            entries.append(Entry("torch", "adam step", dname, runner, job, max(cfg.warmup, 4),
                                 **work))
    bench.cell("gpt", "float32", x.shape[0], cfg.gpt_features, entries, vs_torch=True)


def gpu(bench) -> None:
    """The GPU rows (:mod:`jaxprop.bench.gpu`): the MLP gradient at widths 1024, 4096 and 8192
    per precision policy, on accelerators (or the CPU when ``--backends cpu`` names it)."""
    torch_impl = None
    if bench.has("torch"):
        from jaxprop.bench import torch_impl
    bench.records.extend(gpu_workload.run_rows(bench.config, bench.devices, log=bench.log,
                                               torch_impl=torch_impl, notes=bench.notes))


WORKLOADS: dict[str, Callable] = {
    "xor": xor,
    "xor-population": xor_population,
    "mlp": mlp,
    "width-sweep": width_sweep,
    "batch-sweep": batch_sweep,
    "train-digits": train_digits,
    "data-parallel": data_parallel,
    "custom": custom,
    "cnn": cnn,
    "gpu": gpu,
    "gpt": gpt,
}
# What `jaxprop bench` runs when no --workloads are given (custom: when --sizes is).
DEFAULT_WORKLOADS = ("xor", "xor-population", "mlp", "width-sweep", "batch-sweep",
                     "train-digits", "data-parallel", "cnn", "gpu", "gpt")


def workload_names(config, names=None) -> tuple[str, ...]:
    """The workloads to run: ``names``, else ``config.workloads``, else the defaults
    (``custom`` alone when custom sizes are given); unknown names raise ``ValueError``."""
    names = names or config.workloads or (("custom",) if config.custom_sizes
                                          else DEFAULT_WORKLOADS)
    unknown = [n for n in names if n not in WORKLOADS]
    if unknown:
        raise ValueError(f"unknown workload {', '.join(unknown)}; known: {', '.join(WORKLOADS)}")
    return tuple(names)


class Bench(Harness):
    """The :class:`~jaxprop.bench.harness.Harness` with the table of workloads: ``run(names)``
    runs them and collects ``records``."""

    def run(self, names=None) -> list[dict]:
        """Run the workloads ``names`` (default: ``config.workloads``, else the defaults);
        returns ``records``."""
        for name in workload_names(self.config, names):
            WORKLOADS[name](self)
        return self.records


def compare(model, loss, x, t, *, impls=("jaxprop", "jax.grad"), step: str = "grad",
            repeats: int = 7, warmup: int = 2, isolation: str = "process") -> list[dict]:
    """Benchmark your own ``model`` (any :class:`~jaxprop.Model`) on ``(x, t)``.

    The hand-written gradient against ``jax.grad`` (``step="adam"``: a whole Adam training step),
    with the roofline of this machine, on the CPU. ``x: (batch, *in_shape)``; the dtype of ``x``
    is the working dtype. GFLOP/s count 3x the traced forward pass per example
    (:func:`~jaxprop.bench.flops.step_flops`: matmuls and convolutions exactly).

    Args:
      model: the model, built with its input shape (``model.init(key)`` must work).
      loss: a loss name or :class:`~jaxprop.Loss`.
      x: the inputs.
      t: the targets.
      impls: the implementations to time: ``"jaxprop"`` and/or ``"jax.grad"``.
      step: ``"grad"`` for one gradient, ``"adam"`` for an Adam training step.
      repeats: timed rounds.
      warmup: untimed calls of each implementation first.
      isolation: ``"process"`` or ``"shared"`` (:mod:`jaxprop.bench.timing`).

    Returns:
      the records (see ``RECORD_KEYS``; the ``roofline`` rows included); print them with
      :func:`jaxprop.bench.report.print_table`.
    """
    x, t = np.asarray(x), np.asarray(t)
    dtype = str(x.dtype)
    config = Config(impls=tuple(impls), dtypes=(dtype,), repeats=repeats, warmup=warmup,
                    isolation=isolation, backends=("cpu",))
    with Bench(config) as bench:
        loss = get_loss(loss)
        cell = _user_cell(bench, model, loss, x, t, dtype, step)
    return bench.records if cell else []


def _user_cell(bench, model, loss, x, t, dtype, step):
    params0 = model.init(jax.random.key(0))  # (refuses a model with state)
    flops = step_flops(model, params0, model.init_with_state(jax.random.key(0))[1], x)
    entries = jax_entries(bench, model, loss, params0, x, t, dtype, step, flops=flops,
                          samples=x.shape[0], step_flops=flops)
    return bench.cell("your model", dtype, x.shape[0], None, entries)
