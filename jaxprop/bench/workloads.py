"""The workloads: each measures every selected implementation on every device and dtype.

A cell is one (workload, impl, device, dtype, batch, width) and becomes one record (see
``RECORD_KEYS``). Implementations:

* ``numpy``: :class:`~jaxprop.bench.numpy_baseline.NumpyMLP` (CPU, float32; Python loops);
* ``jaxprop``: the hand-written gradient, :func:`jaxprop.loss_and_grad_fn`;
* ``jax.grad``: ``jax.value_and_grad`` of ``loss.value(model.apply(p, x), t)``, the same forward;
* ``torch``: the same MLP with PyTorch autograd (CPU, and CUDA when available), when installed;
* ``matmul``: the roofline, a ``(batch, width) @ (width, width)`` JAX matmul of the same dtype on
  the same device (bfloat16 inputs accumulate in float32 via ``preferred_element_type``).

The ``cnn`` workload (a small CNN's gradient, with a NumPy im2col baseline) lives in
:mod:`jaxprop.bench.cnn`.

JAX cells are compiled once with ``jax.jit(...).lower(...).compile()`` (timed apart), warmed
up, then timed call by call with ``block_until_ready``. Whole XOR training loops run inside
``lax.scan``; Adam steps donate their params and optimiser state.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxprop as jp
from jaxprop.bench import cnn
from jaxprop.bench import numpy_baseline as nb
from jaxprop.bench.timing import (
    compile_jax, peak_bytes, summarize, time_interleaved,
)

WORKLOADS = ("xor", "xor-population", "mlp", "width-sweep", "batch-sweep", "cnn", "gpu")
IMPLS = ("numpy", "jaxprop", "jax.grad", "torch")
DTYPES = ("float32", "bfloat16")
RECORD_KEYS = (
    "workload", "impl", "device", "dtype", "batch", "width", "median_s", "min_s", "max_s",
    "compile_s", "samples_per_s", "gflops", "roofline_ratio", "peak_bytes",
)


@dataclasses.dataclass(frozen=True)
class Config:
    """What to run, and how big. ``quick()`` gives the tiny smoke-test sizes."""

    workloads: tuple[str, ...] = WORKLOADS
    impls: tuple[str, ...] = IMPLS
    dtypes: tuple[str, ...] = DTYPES
    backends: tuple[str, ...] | None = None  # None: every JAX backend present
    repeats: int = 7
    warmup: int = 2
    matmul_precision: str = "highest"  # float32 matmuls on GPU/TPU are true float32
    xor_epochs: int = 10_000
    population: int = 1000
    mlp_sizes: tuple[int, ...] = (784, 1024, 1024, 10)
    mlp_batch: int = 512
    widths: tuple[int, ...] = (128, 256, 512, 1024, 2048, 4096)
    batches: tuple[int, ...] = (1, 4, 16, 64, 256, 1024, 4096)
    # the gpu workload (jaxprop/bench/gpu.py): precision policies, widths and batch
    precisions: tuple[str, ...] = ("highest", "f32", "bf16")
    gpu_widths: tuple[int, ...] = (1024, 4096, 8192)
    gpu_batch: int = 4096
    cnn_side: int = 28  # the CNN workload (jaxprop/bench/cnn.py): side x side x 1 images
    cnn_batch: int = 256
    cnn_channels: tuple[int, int] = (32, 64)
    cnn_dense: int = 128

    def quick(self) -> "Config":
        return dataclasses.replace(
            self, repeats=min(self.repeats, 3), warmup=1, xor_epochs=200, population=16,
            mlp_sizes=(64, 128, 128, 10), mlp_batch=32, widths=(32, 64), batches=(1, 16),
            gpu_widths=(32, 64), gpu_batch=16,
            cnn_side=12, cnn_batch=8, cnn_channels=(4, 8), cnn_dense=16,
        )


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


def n_weights(sizes) -> int:
    """Number of weights (not biases) of an MLP with layer sizes ``sizes``."""
    return sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))


def _gd_train(grad_fn, *, lr, epochs):
    """Full-batch gradient descent for ``epochs`` epochs inside one ``lax.scan``."""

    def train(params, x, t):
        def epoch(p, _):
            value, g = grad_fn(p, x, t)
            return jax.tree.map(lambda w, d: w - lr * d, p, g), value

        params, values = jax.lax.scan(epoch, params, length=epochs)
        return params, values[-1]

    return train


def _adam_step(grad_fn, lr=1e-3):
    opt = optax.adam(lr)

    def step(params, opt_state, x, t):
        value, g = grad_fn(params, x, t)
        updates, opt_state = opt.update(g, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    return opt, step


class Bench:
    """Runs the workloads of ``config`` and collects ``records``; ``log(str)`` reports progress."""

    def __init__(self, config: Config, log: Callable[[str], None] = lambda _: None):
        self.config, self.log = config, log
        self.devices = jax_devices(config.backends)
        self.records: list[dict] = []
        self.notes: list[str] = []
        self._supported: dict[tuple, bool] = {}
        self.torch = None
        if "torch" in config.impls:
            from jaxprop.bench import torch_impl  # raises ImportError when torch is missing

            self.torch = torch_impl

    # -- helpers ----------------------------------------------------------------------------

    def _has(self, impl):
        return impl in self.config.impls

    def _precision(self, dtype):
        return jax.default_matmul_precision(
            self.config.matmul_precision if dtype == "float32" else "default"
        )

    def _record(self, workload, impl, device, dtype, batch, width, timing, *,
                samples, flops, roofline=None, peak=None):
        gflops = flops / timing.median / 1e9 if flops else None
        rec = dict(
            workload=workload, impl=impl, device=device, dtype=dtype, batch=batch, width=width,
            median_s=timing.median, min_s=timing.min, max_s=timing.max,
            compile_s=timing.compile_s,
            samples_per_s=samples / timing.median if samples else None,
            gflops=gflops,
            roofline_ratio=gflops / roofline if gflops and roofline else None,
            peak_bytes=peak,
        )
        self.records.append(rec)
        self.log(f"{workload} {impl} {device} {dtype} batch {batch} width {width}: "
                 f"{timing.median * 1e3:.3f} ms")
        return rec

    def _supports(self, dev, dtype) -> bool:
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

    def _matmul(self, dev, dtype, batch, width):
        """The roofline: a ``(batch, width) @ (width, width)`` matmul, compiled for ``dev``."""
        ka, kb = jax.random.split(jax.random.key(7))
        a = jax.device_put(jax.random.normal(ka, (batch, width), jnp.dtype(dtype)), dev)
        b = jax.device_put(jax.random.normal(kb, (width, width), jnp.dtype(dtype)), dev)
        with self._precision(dtype):
            mm, c = compile_jax(
                lambda a, b: jnp.matmul(a, b, preferred_element_type=jnp.float32), a, b
            )
        return (lambda: mm(a, b)), c

    # -- XOR --------------------------------------------------------------------------------

    def xor(self, population: int | None = None):
        """2-4-1 sigmoid, sum-of-squares, lr 0.1, full-batch GD for ``xor_epochs`` epochs.

        With ``population``: that many networks trained at once (``jax.vmap`` over the whole
        compiled training loop), against one NumPy network timed in the same rounds.
        """
        cfg = self.config
        name = "xor-population" if population else "xor"
        n = population or 1
        epochs = cfg.xor_epochs
        model = jp.mlp([2, 4, 1], "sigmoid", "sigmoid", init="normal")
        x, t = nb.XOR_X.astype(np.float32), nb.XOR_T.astype(np.float32)
        start = nb.from_jaxprop(model.init(jax.random.key(0)))
        runs = []  # (impl, device name, networks, call, sync, warm-up calls, compile s, peak)

        if self._has("numpy"):
            net = nb.NumpyMLP([2, 4, 1], "sigmoid", "sigmoid", "sse_half")
            runs.append(("numpy", "cpu:0", 1, lambda: net.train(start, x, t, lr=0.1,
                                                                epochs=epochs),
                         lambda _: None, 1, None, lambda: None))
        for impl in ("jaxprop", "jax.grad"):
            if not self._has(impl):
                continue
            train = _gd_train(self._grad_fn(impl, model, "sse_half"), lr=0.1, epochs=epochs)
            for dname, dev in self.devices.items():
                keys = jax.random.split(jax.random.key(0), n)
                if population:
                    params, train_fn = jax.vmap(model.init)(keys), jax.vmap(train, (0, None, None))
                else:
                    params, train_fn = model.init(keys[0]), train
                params, xd, td = jax.device_put((params, x, t), dev)
                with self._precision("float32"):
                    compiled, c = compile_jax(train_fn, params, xd, td)
                runs.append((impl, dname, n, lambda f=compiled, a=(params, xd, td): f(*a),
                             jax.block_until_ready, cfg.warmup, c,
                             lambda dev=dev: peak_bytes(dev)))
        if self.torch is not None and not population:
            for dname, tdev in self.torch.devices():
                net_t = self.torch.TorchMLP(start, ["sigmoid", "sigmoid"], "sse_half",
                                            device=tdev, dtype="float32")
                xt, tt = net_t.to_tensor(x), net_t.to_tensor(t)
                runs.append(("torch", dname, 1,
                             lambda m=net_t, a=xt, b=tt: m.sgd_train(a, b, lr=0.1, epochs=epochs),
                             self.torch.sync(tdev), 1, None, lambda: None))

        times = time_interleaved([r[3] for r in runs], [r[4] for r in runs],
                                 repeats=cfg.repeats, warmups=[r[5] for r in runs])
        nw = n_weights([2, 4, 1])
        for (impl, dname, nets, *_, c, peak), ts in zip(runs, times):
            self._record(name, impl, dname, "float32", 4 * nets, 4, summarize(ts, c),
                         samples=4 * nets * epochs, flops=6 * 4 * nets * nw * epochs,
                         peak=peak())

    def _grad_fn(self, impl, model, loss):
        if impl == "jaxprop":
            return jp.loss_and_grad_fn(model, loss)
        loss = jp.get_loss(loss)
        return jax.value_and_grad(lambda p, x, t: loss.value(model.apply(p, x), t))

    # -- MLP: 784-width-width-10 relu, softmax cross-entropy ---------------------------------

    def mlp_cell(self, workload, sizes, batch, dtype, *, step="grad"):
        """Every implementation, and each device's matmul roofline, on one network size, batch
        and dtype (``step``: ``grad`` or ``adam``), timed in interleaved rounds."""
        cfg = self.config
        width = sizes[1]
        flops = 6 * batch * n_weights(sizes)
        rng = np.random.default_rng(0)
        x = rng.standard_normal((batch, sizes[0])).astype(np.float32)
        t = np.eye(sizes[-1], dtype=np.float32)[rng.integers(0, sizes[-1], batch)]
        model = jp.mlp(list(sizes), "relu", "identity", dtype=jnp.dtype(dtype))
        params0 = model.init(jax.random.key(0))
        jax_sync = jax.block_until_ready
        # (impl, device name, call, sync, warm-up calls, compile seconds, peak-bytes function)
        runs = []

        if self._has("numpy") and dtype == "float32" and step == "grad":
            net = nb.NumpyMLP(sizes, "relu", "identity", "softmax_cross_entropy")
            p = nb.from_jaxprop(params0)
            runs.append(("numpy", "cpu:0", lambda: net.loss_and_grad(p, x, t), lambda _: None,
                         cfg.warmup, None, lambda: None))

        for dname, dev in self.devices.items():
            if not self._supports(dev, dtype):
                continue
            call, c = self._matmul(dev, dtype, batch, width)
            runs.append(("matmul", dname, call, jax_sync, cfg.warmup, c,
                         lambda dev=dev: peak_bytes(dev)))
            for impl in ("jaxprop", "jax.grad"):
                if self._has(impl):
                    call, c = self._jax_step(impl, model, params0, x, t, dtype, dev, step)
                    runs.append((impl, dname, call, jax_sync, cfg.warmup, c,
                                 lambda dev=dev: peak_bytes(dev)))

        if self.torch is not None:
            for dname, tdev in self.torch.devices():
                acts = ["relu"] * (len(sizes) - 2) + ["identity"]
                tnet = self.torch.TorchMLP(nb.from_jaxprop(params0), acts,
                                           "softmax_cross_entropy", device=tdev, dtype=dtype)
                xt, tt = tnet.to_tensor(x), tnet.to_tensor(t)
                call = (lambda m=tnet, a=xt, b=tt: m.loss_and_grad(a, b)) \
                    if step == "grad" else tnet.adam_step_fn(xt, tt)
                self.torch.reset_peak(tdev)
                # torch's first calls per shape are slow (oneDNN kernel set-up): warm up longer
                runs.append(("torch", dname, call, self.torch.sync(tdev), max(cfg.warmup, 8),
                             None, lambda tdev=tdev: self.torch.peak_bytes(tdev)))

        times = time_interleaved([r[2] for r in runs], [r[3] for r in runs],
                                 repeats=cfg.repeats, warmups=[r[4] for r in runs])
        timings = [summarize(ts, r[5]) for ts, r in zip(times, runs)]
        roofline = {r[1]: 2 * batch * width * width / tm.median / 1e9
                    for r, tm in zip(runs, timings) if r[0] == "matmul"}
        for (impl, dname, *_, peak), timing in zip(runs, timings):
            if impl == "matmul":
                self._record(workload, impl, dname, dtype, batch, width, timing, samples=None,
                             flops=2 * batch * width * width, roofline=roofline[dname],
                             peak=peak())
            else:
                self._record(workload, impl, dname, dtype, batch, width, timing, samples=batch,
                             flops=flops, roofline=roofline.get(dname), peak=peak())

    def _jax_step(self, impl, model, params0, x, t, dtype, dev, step):
        """A compiled gradient (or Adam step, params and state donated) as a no-argument call."""
        grad_fn = self._grad_fn(impl, model, "softmax_cross_entropy")
        params, xd, td = jax.device_put((params0, x.astype(dtype), t.astype(dtype)), dev)
        with self._precision(dtype):
            if step == "grad":
                compiled, c = compile_jax(grad_fn, params, xd, td)
                return (lambda: compiled(params, xd, td)), c
            opt, adam = _adam_step(grad_fn)
            params = jax.tree.map(jnp.copy, params)  # donated below: never params0's buffers
            state = [params, jax.device_put(opt.init(params), dev)]
            compiled, c = compile_jax(adam, *state, xd, td, donate_argnums=(0, 1))

        def call():
            state[0], state[1], value = compiled(state[0], state[1], xd, td)
            return value, state

        return call, c

    def mlp(self):
        cfg = self.config
        for dtype in cfg.dtypes:
            self.mlp_cell("mlp-grad", cfg.mlp_sizes, cfg.mlp_batch, dtype, step="grad")
            self.mlp_cell("mlp-adam", cfg.mlp_sizes, cfg.mlp_batch, dtype, step="adam")

    def width_sweep(self):
        cfg = self.config
        d_in, d_out = cfg.mlp_sizes[0], cfg.mlp_sizes[-1]
        for dtype in cfg.dtypes:
            for w in cfg.widths:
                self.mlp_cell("width-sweep", (d_in, w, w, d_out), cfg.mlp_batch, dtype)

    def batch_sweep(self):
        cfg = self.config
        for dtype in cfg.dtypes:
            for b in cfg.batches:
                self.mlp_cell("batch-sweep", cfg.mlp_sizes, b, dtype)

    def gpu(self):
        from jaxprop.bench import gpu

        self.records += gpu.run_rows(self.config, self.devices, log=self.log,
                                     torch_impl=self.torch, notes=self.notes)

    def run(self) -> list[dict]:
        steps = {
            "xor": self.xor,
            "xor-population": lambda: self.xor(population=self.config.population),
            "mlp": self.mlp,
            "width-sweep": self.width_sweep,
            "batch-sweep": self.batch_sweep,
            "gpu": self.gpu,
            "cnn": lambda: cnn.run(self),
        }
        for name in self.config.workloads:
            steps[name]()
        return self.records
