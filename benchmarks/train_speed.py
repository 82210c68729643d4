"""Training speed: jaxprop's compiled loop against a plain NumPy loop of the same update.

1. XOR 2-4-1 sigmoid, sse_half, gradient descent lr 0.1, 10,000 full-batch epochs, float32,
   the same initial weights for both:
   - steady state: the whole 10,000-epoch ``lax.scan`` already compiled, against the classic
     NumPy loop over epochs, run alternately (median ratio of --repeats pairs);
   - first call: ``jaxprop.fit`` in a fresh process, tracing + compilation included (JAX's
     backend is started before the clock), then the NumPy loop in the same process (median
     of --fresh processes).
2. Digits (64-64 ReLU MLP, Adam 3e-3, batch 64, up to 15 epochs as ``jaxprop train``): wall
   time of ``jaxprop.fit`` from the call until the test accuracy first reaches 95% (checked
   after every epoch; initialisation and compilation included, data loading not).

    python benchmarks/train_speed.py [--repeats 9] [--fresh 5]

The steady state is measured three times: compiled with XLA's defaults; with the options
``fit`` picks for such a run (``jaxprop.train.auto_compiler_options``: fast compilation, and
matmuls on the calling thread rather than Eigen's thread pool, whose hand-offs dominate a
2-4-1 network's step); and with full optimisation but single-threaded matmuls (what to pass
as ``fit(compiler_options=...)`` for long runs of tiny networks).

Ratios are measured within one run on one machine; on a shared machine expect noise.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

EPOCHS, LR = 10_000, 0.1
X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32)
T = np.array([[0], [1], [1], [0]], np.float32)


def initial_weights(seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(2, 4)).astype(np.float32), np.zeros(4, np.float32),
            rng.normal(size=(4, 1)).astype(np.float32), np.zeros(1, np.float32))


def numpy_xor(W1, b1, W2, b2, epochs=EPOCHS, lr=LR):
    """The classic loop: forward, deltas, in-place gradient descent."""
    W1, b1, W2, b2 = (a.copy() for a in (W1, b1, W2, b2))
    for _ in range(epochs):
        h = 1 / (1 + np.exp(-(X @ W1 + b1)))
        y = 1 / (1 + np.exp(-(h @ W2 + b2)))
        d2 = (y - T) * y * (1 - y)
        d1 = (d2 @ W2.T) * h * (1 - h)
        W2 -= lr * (h.T @ d2)
        b2 -= lr * d2.sum(0)
        W1 -= lr * (X.T @ d1)
        b1 -= lr * d1.sum(0)
    return W1, b1, W2, b2


def _params(W1, b1, W2, b2):
    return [{"W": W1, "b": b1}, (), {"W": W2, "b": b2}, ()]


def first_call() -> tuple[float, float]:
    """Seconds for a fresh process's first ``jaxprop.fit`` on XOR (tracing and compilation
    included), and for the NumPy loop run right after it in the same process."""
    import jax
    import optax

    import jaxprop as jp

    key = jax.random.key(0)  # start the backend outside the clock
    model = jp.mlp([2, 4, 1], "sigmoid", "sigmoid", init="normal")
    params0 = _params(*initial_weights())
    t0 = time.perf_counter()
    params, _ = jp.fit(model, "sse_half", optax.sgd(LR), (X, T), epochs=EPOCHS, key=key,
                       params=params0, log_every=EPOCHS)
    jax.block_until_ready(params)
    t_jax = time.perf_counter() - t0
    t0 = time.perf_counter()
    numpy_xor(*initial_weights())
    return t_jax, time.perf_counter() - t0


def steady_state(repeats: int, compiler_options):
    """Median seconds of the compiled 10,000-epoch loop and of the NumPy loop, run alternately
    so that both see the same machine load, and the median of the per-pair ratios."""
    import jax
    import optax

    import jaxprop as jp

    model = jp.mlp([2, 4, 1], "sigmoid", "sigmoid", init="normal")
    opt = optax.sgd(LR)
    state = jp.init_state(model, opt, jax.random.key(0), params=_params(*initial_weights()))
    train = jax.jit(jp.make_train_epochs(model, "sse_half", opt, 4), static_argnums=3)
    x, t = jax.numpy.asarray(X), jax.numpy.asarray(T)
    compiled = train.lower(state, x, t, EPOCHS).compile(compiler_options)
    out, _ = jax.block_until_ready(compiled(state, x, t))
    w = initial_weights()
    t_jax, t_np = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(state, x, t))
        t_jax.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        ref = numpy_xor(*w)
        t_np.append(time.perf_counter() - t0)
    ratio = float(np.median(np.array(t_np) / np.array(t_jax)))
    diff = max(float(np.max(np.abs(np.asarray(a) - b))) for a, b in zip(
        (out.params[0]["W"], out.params[0]["b"], out.params[2]["W"], out.params[2]["b"]), ref))
    return float(np.median(t_jax)), float(np.median(t_np)), ratio, diff


def digits_to_95():
    import jax
    import optax

    import jaxprop as jp
    from jaxprop import data

    ds = data.load("digits", seed=0)
    model = jp.mlp([(8, 8, 1), 64, 64, 10], "relu", "identity")
    reached = {}
    t0 = time.perf_counter()

    def stop_at_95(state, record):
        if record["test_accuracy"] >= 0.95 and not reached:
            reached.update(epoch=record["epoch"], seconds=time.perf_counter() - t0,
                           accuracy=record["test_accuracy"])
        return bool(reached)

    _, history = jp.fit(model, "softmax_cross_entropy", optax.adam(3e-3), ds, epochs=15,
                        batch_size=64, key=jax.random.key(0), log_every=1, callback=stop_at_95)
    reached["compile"] = history.compile_time
    return reached


def main():
    parser = argparse.ArgumentParser(description="jaxprop training speed vs NumPy")
    parser.add_argument("--repeats", type=int, default=9, help="steady-state pairs")
    parser.add_argument("--fresh", type=int, default=5, help="fresh processes for first call")
    parser.add_argument("--first-call-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.first_call_child:
        t_jax, t_np = first_call()
        print(json.dumps({"jaxprop": t_jax, "numpy": t_np}))
        return

    import jax

    from jaxprop.train import auto_compiler_options

    print(f"device: {jax.devices()[0].device_kind} ({jax.devices()[0].platform}), "
          f"{os.cpu_count()} CPU cores visible")
    print(f"\nXOR 2-4-1, {EPOCHS:,} full-batch epochs, float32, the same initial weights")
    auto = auto_compiler_options(17, 4, None)
    single = {"xla_cpu_multi_thread_eigen": False}
    for label, options in (("XLA defaults", None), (f"fit's auto options {auto}", auto),
                           (f"{single}", single)):
        t_jax, t_np, ratio, diff = steady_state(args.repeats, options)
        print(f"  steady state, {label}:\n    jaxprop {t_jax * 1e3:6.1f} ms, numpy "
              f"{t_np * 1e3:6.1f} ms -> {ratio:5.1f}x faster (median of {args.repeats} "
              f"alternating pairs; max |jaxprop - numpy| = {diff:.1e})")
    firsts = []
    for _ in range(args.fresh):
        r = subprocess.run([sys.executable, __file__, "--first-call-child"], capture_output=True,
                           text=True, check=True)
        firsts.append(json.loads(r.stdout.strip().splitlines()[-1]))
    ratio = float(np.median([f["numpy"] / f["jaxprop"] for f in firsts]))
    print(f"  first call of jaxprop.fit in a fresh process (tracing + compilation included):\n"
          f"    jaxprop {np.median([f['jaxprop'] for f in firsts]) * 1e3:6.1f} ms, numpy "
          f"{np.median([f['numpy'] for f in firsts]) * 1e3:6.1f} ms -> {ratio:5.2f}x numpy's "
          f"speed (median of {args.fresh} processes)")

    d = digits_to_95()
    if "seconds" in d:
        print(f"\ndigits 64-64 ReLU, Adam 3e-3, batch 64: {d['accuracy']:.1%} test accuracy at "
              f"epoch {d['epoch']} after {d['seconds']:.2f} s (compile {d['compile']:.2f} s)")
    else:
        print("\ndigits: 95% test accuracy not reached in 15 epochs")


if __name__ == "__main__":
    main()
