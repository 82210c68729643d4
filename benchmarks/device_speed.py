"""Training speed on the default device: XOR populations and a digits run, for the device check.

1. XOR populations: N 2-4-1 sigmoid networks (sse_half, gradient descent lr 0.1, 10,000
   full-batch epochs each) trained at once in one compiled call (``jax.vmap`` of the ``lax.scan``
   training loop, :mod:`jaxprop.scale.population`), N = 1,000 and 10,000. Compilation is timed
   on its own; the training call is timed ``--repeats`` times, each on a fresh copy of the
   initial states (the call donates them).
2. Digits: the ``jaxprop train --dataset digits`` network (64-64-64-10 relu, softmax
   cross-entropy, Adam 3e-3, batch 64) for ``--digits-epochs`` epochs with ``jaxprop.fit``, one
   host sync per epoch, in each precision of ``--precision``: the median time per epoch (first
   epoch, which compiles, left out) and the test accuracy. A CNN on the 8x8 digit images
   (conv(16,3)-relu-maxpool(2)-flatten-dense(10)) runs in each precision too.

    python benchmarks/device_speed.py --json speed.json          # the device check's sizes
    python benchmarks/device_speed.py --quick                     # a smoke test

Results go to stdout (one line per measurement, then the targets) and, after every
measurement, to ``--json`` (written through a temporary file and a rename, so a run stopped by
a timeout keeps what it measured and never leaves half a file).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxprop as jp
from jaxprop import data
from jaxprop.device import describe
from jaxprop.checkpoint import write_atomic
from jaxprop.scale.population import init_population_state, make_population_train

POPULATION_TARGET_S = 2.0  # 10,000 networks x 10,000 epochs on an H100


def population(n: int, epochs: int, repeats: int) -> dict:
    """Time ``n`` XOR networks trained for ``epochs`` epochs in one compiled call."""
    model = jp.mlp([2, 4, 1], "sigmoid", "sigmoid", init="normal")
    x, t = (jnp.asarray(a) for a in data.xor())
    opt = optax.sgd(0.1)
    state = init_population_state(model, opt, jax.random.split(jax.random.key(0), n))
    train = make_population_train(model, "sse_half", opt, 4, epochs)
    t0 = time.perf_counter()
    compiled = train.lower(state, x, t).compile()
    compile_s = time.perf_counter() - t0
    times, final = [], None
    for _ in range(repeats):
        fresh = jax.tree.map(jnp.copy, state)  # donated to the call
        jax.block_until_ready(fresh)
        t0 = time.perf_counter()
        final, losses = jax.block_until_ready(compiled(fresh, x, t))
        times.append(time.perf_counter() - t0)
    evaluate = jax.jit(jax.vmap(jp.make_eval_fn(model, "sse_half"), in_axes=(0, None, None)))
    _, acc = evaluate(final.params, x, t)
    return {"networks": n, "epochs": epochs, "compile_s": compile_s,
            "median_s": statistics.median(times), "min_s": min(times),
            "network_epochs_per_s": n * epochs / statistics.median(times),
            "solved": int(np.sum(np.asarray(acc) == 1.0))}


def digits(precision: str, epochs: int, *, cnn: bool = False) -> dict:
    """Train on digits with ``jaxprop.fit`` (one host sync per epoch); time per epoch."""
    ds = data.load("digits", seed=0)
    name = "digits-mlp"
    model = jp.mlp([(8, 8, 1), 64, 64, 10], "relu", "identity")
    if cnn:
        name = "digits-cnn"
        ds = ds._replace(x_train=ds.x_train.reshape(-1, 8, 8, 1),
                         x_test=ds.x_test.reshape(-1, 8, 8, 1))
        model = jp.parse_model("conv(16,3)-relu-maxpool(2)-flatten-dense(10)", (8, 8, 1))
    _, history = jp.fit_state(model, "softmax_cross_entropy", optax.adam(3e-3), ds,
                              epochs=epochs, batch_size=64, key=jax.random.key(0), log_every=1,
                              precision=precision)
    stamps = [0.0] + [r["time"] for r in history.records]
    per_epoch = np.diff(stamps)[1:]  # the first epoch includes compilation
    return {"run": name, "precision": precision, "epochs": epochs,
            "compile_s": history.compile_time,
            "epoch_median_s": float(np.median(per_epoch)) if per_epoch.size else None,
            "test_accuracy": history.records[-1]["test_accuracy"]}


def targets(results: dict) -> list[dict]:
    out = []
    for row in results.get("population", []):
        if row["networks"] >= 10_000 and row["epochs"] >= 10_000:
            out.append({"target": f"{row['networks']} XOR networks x {row['epochs']} epochs "
                                  f"< {POPULATION_TARGET_S:g} s",
                        "value": round(row["median_s"], 3), "goal": POPULATION_TARGET_S,
                        "met": row["median_s"] < POPULATION_TARGET_S})
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--populations", default="10000,1000",
                    help="network counts (10000,1000: the target's first)")
    ap.add_argument("--epochs", type=int, default=10_000, help="XOR epochs (10000)")
    ap.add_argument("--repeats", type=int, default=3, help="timed population calls (3)")
    ap.add_argument("--digits-epochs", type=int, default=15, help="digits epochs (15)")
    ap.add_argument("--precision", default="f32,bf16", help="digits precisions (f32,bf16)")
    ap.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test")
    ap.add_argument("--json", metavar="FILE", help="write the results (after every step)")
    args = ap.parse_args(argv)
    sizes = [int(n) for n in args.populations.split(",")]
    epochs, digits_epochs, repeats = args.epochs, args.digits_epochs, args.repeats
    if args.quick:
        sizes, epochs, digits_epochs, repeats = [16, 8], 50, 3, 2
    info = describe()
    results = {"devices": info["devices"], "versions": info["versions"],
               "default_backend": info["default_backend"], "population": [], "digits": [],
               "targets": []}

    def save():
        results["targets"] = targets(results)
        if args.json:
            write_atomic(Path(args.json), (json.dumps(results, indent=1) + "\n").encode())

    print(f"device: {', '.join(d['kind'] for d in info['devices'])}", flush=True)
    for n in sizes:
        row = population(n, epochs, repeats)
        results["population"].append(row)
        save()
        print(f"xor population {n} x {epochs} epochs: {row['median_s']:.3f} s (min "
              f"{row['min_s']:.3f}, compile {row['compile_s']:.2f} s), "
              f"{row['network_epochs_per_s']:.3g} network-epochs/s, {row['solved']} solved",
              flush=True)
    precisions = args.precision.split(",")
    for cnn in (False, True):
        for precision in precisions:
            row = digits(precision, digits_epochs, cnn=cnn)
            results["digits"].append(row)
            save()
            print(f"{row['run']} {precision}: {row['epoch_median_s'] * 1e3:.1f} ms/epoch "
                  f"(compile {row['compile_s']:.2f} s), test accuracy "
                  f"{100 * row['test_accuracy']:.2f}%", flush=True)
    save()
    for t in results["targets"]:
        print(f"target: {t['target']}: {t['value']} {'met' if t['met'] else 'NOT met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
