"""Benchmark: N XOR networks trained at once (one compiled call) vs ONE plain NumPy network.

The classic setup: 2-4-1 sigmoid, sum-of-squares error (sse_half), full-batch gradient descent,
learning rate 0.1, 10,000 epochs, weights from N(0, 1), zero biases. Times are medians of
``--repeats`` interleaved rounds (population, then NumPy) in this one process; the jaxprop time
excludes compilation, which is reported separately.

    python benchmarks/population.py                 # 1000 networks
    python benchmarks/population.py --n 10000       # e.g. on a GPU
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxprop as jp
from jaxprop.population import init_population_state, make_population_train
from jaxprop.train import accuracy_fn

X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32)
T = np.array([[0], [1], [1], [0]], np.float32)


def numpy_xor(epochs: int, lr: float, seed: int = 0):
    """One 2-4-1 sigmoid network, the textbook NumPy loop (float32, biases included)."""
    rng = np.random.default_rng(seed)
    W1, b1 = rng.normal(size=(2, 4)).astype(np.float32), np.zeros(4, np.float32)
    W2, b2 = rng.normal(size=(4, 1)).astype(np.float32), np.zeros(1, np.float32)
    for _ in range(epochs):
        h = 1 / (1 + np.exp(-(X @ W1 + b1)))
        y = 1 / (1 + np.exp(-(h @ W2 + b2)))
        d2 = (y - T) * y * (1 - y)
        d1 = (d2 @ W2.T) * h * (1 - h)
        W2 -= lr * h.T @ d2
        b2 -= lr * d2.sum(0)
        W1 -= lr * X.T @ d1
        b1 -= lr * d1.sum(0)
    return 0.5 * float(np.sum((y - T) ** 2))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--epochs", type=int, default=10_000)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", help="also write the figures to this JSON file")
    args = ap.parse_args(argv)

    model = jp.mlp([2, 4, 1], "sigmoid", "sigmoid", init="normal")
    opt = optax.sgd(args.lr)
    x, t = jnp.asarray(X), jnp.asarray(T)
    train = make_population_train(model, "sse_half", opt, len(X), args.epochs)

    def fresh():
        return init_population_state(model, opt, jax.vmap(jax.random.key)(jnp.arange(args.n)))

    t0 = time.perf_counter()  # one-time JAX/XLA start-up, kept out of the compile figure
    jax.block_until_ready(jax.jit(lambda a: jnp.tanh(a) @ a)(jnp.ones((2, 2))))
    startup_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    state = jax.block_until_ready(fresh())  # first call compiles the vmapped initialisation
    init_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    compiled = train.lower(state, x, t).compile()
    compile_s = time.perf_counter() - t0
    # interleaved rounds: a busy machine slows both sides alike
    jax_times, np_times = [], []
    for seed in range(args.repeats):
        state = jax.block_until_ready(fresh())
        t0 = time.perf_counter()
        state, _ = jax.block_until_ready(compiled(state, x, t))
        jax_times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        numpy_xor(args.epochs, args.lr, seed)
        np_times.append(time.perf_counter() - t0)
    y = jax.vmap(model.apply, in_axes=(0, None))(state.params, x)
    acc = jax.vmap(lambda y: accuracy_fn("sse_half")(y, t))(y)
    solved = int(np.sum(np.asarray(acc) == 1.0))

    jax_s, np_s = statistics.median(jax_times), statistics.median(np_times)
    res = {
        "device": str(jax.devices()[0]), "n": args.n, "epochs": args.epochs,
        "population_s": jax_s, "compile_s": compile_s, "jax_startup_s": startup_s,
        "first_init_s": init_s, "numpy_one_network_s": np_s,
        "ratio": jax_s / np_s, "ratio_with_compile": (jax_s + compile_s) / np_s,
        "solved": solved, "solved_fraction": solved / args.n,
    }
    print(f"device: {res['device']}")
    print(f"{args.n} XOR networks x {args.epochs} epochs, one compiled call: {jax_s:.3f} s "
          f"(median of {args.repeats})")
    print(f"  compile {compile_s:.2f} s; first initialisation of the members (compiles the "
          f"batched PRNG) {init_s:.2f} s; JAX start-up {startup_s:.2f} s")
    print(f"one NumPy network x {args.epochs} epochs: {np_s:.3f} s")
    print(f"ratio population / one NumPy network: {res['ratio']:.2f}x "
          f"({res['ratio_with_compile']:.2f}x with compilation)")
    print(f"solved (all 4 outputs on the right side of 0.5): {solved}/{args.n} "
          f"= {res['solved_fraction']:.1%}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)
    return res


if __name__ == "__main__":
    main()
