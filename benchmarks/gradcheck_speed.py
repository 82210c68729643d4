"""Gradient-check speed: ``jp.check_gradients`` on a large MLP, every part of it included.

What one check does (float32 params): every layer's backward against ``jax.vjp`` in float32
and in float64 and against float64 central differences along 3 random directions per
quantity, at the given params and again at perturbed params; then the end-to-end gradient
against ``jax.grad`` (float32) and float64 central differences on up to ``--max-fd-coords``
coordinates per parameter leaf. Every check builds and compiles its programs afresh, so each
timed call includes tracing and XLA compilation (that is what a user waits for).

    python benchmarks/gradcheck_speed.py [--sizes 784,1024,1024,10] [--activation relu]
        [--batch 8] [--repeats 3] [--json FILE]

The same check from the command line (the time there also includes starting Python and JAX):

    time jaxprop check --sizes 784,1024,1024,10 --activation relu --loss softmax_cross_entropy

Reported: seconds for the whole check (median/min/max of ``--repeats`` calls, after one call
that warms JAX up), and the part spent in the per-layer checks alone; wall-clock time and the
process's CPU time (all threads), which a busy shared machine disturbs less.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import jax
import jax.numpy as jnp

import jaxprop as jp
from jaxprop.bench.timing import summarize, time_calls
from jaxprop.tools.gradcheck import MAX_FD_COORDS, check_model_layers
from jaxprop.tools.presets import make_data


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="784,1024,1024,10")
    p.add_argument("--activation", default="relu")
    p.add_argument("--loss", default="softmax_cross_entropy")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--max-fd-coords", type=int, default=MAX_FD_COORDS)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)

    sizes = [int(s) for s in args.sizes.split(",")]
    model = jp.mlp(sizes, args.activation, "identity")
    k_params, k_data = jax.random.split(jax.random.key(0))
    params = model.init(k_params)
    x, t = make_data(k_data, args.loss, model.in_shape, (sizes[-1],), args.batch, jnp.float32)

    report = None

    def full():
        nonlocal report
        report = jp.check_gradients(model, args.loss, params, x, t,
                                    max_fd_coords=args.max_fd_coords)
        return report.ok

    def layers():
        return all(c.ok for c in check_model_layers(model, params, x))

    cpu = {"full": [], "layers": []}  # process CPU seconds per call: steadier on a busy machine

    def cpu_timed(name, fn):
        def call():
            start = time.process_time()
            out = fn()
            cpu[name].append(time.process_time() - start)
            return out
        return call

    whole = summarize(time_calls(cpu_timed("full", full), repeats=args.repeats, warmup=1,
                                 sync=lambda r: r))
    per_layer = summarize(time_calls(cpu_timed("layers", layers), repeats=args.repeats,
                                     warmup=0, sync=lambda r: r))
    cpu_full, cpu_layers = (summarize(cpu[k][-args.repeats:]) for k in ("full", "layers"))
    result = {
        "model": model.describe(), "sizes": sizes, "loss": args.loss, "batch": args.batch,
        "n_params": sum(a.size for a in jax.tree.leaves(params)),
        "max_fd_coords": args.max_fd_coords, "ok": report.ok,
        "check_s": whole._asdict(), "per_layer_s": per_layer._asdict(),
        "check_cpu_s": cpu_full._asdict(), "per_layer_cpu_s": cpu_layers._asdict(),
        "device": str(jax.devices()[0]), "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg(), "jax_version": jax.__version__,
        "machine": platform.processor() or platform.machine(),
        "date": time.strftime("%Y-%m-%d"),
    }
    print(f"{result['model']} ({result['n_params']:,} params), batch {args.batch}, "
          f"{args.loss}: {report.verdict()[:60]}...")
    print(f"whole check: median {whole.median:.2f} s wall (min {whole.min:.2f}, max "
          f"{whole.max:.2f}) over {args.repeats}, {cpu_full.median:.2f} s CPU; per-layer checks "
          f"alone: {per_layer.median:.2f} s wall, {cpu_layers.median:.2f} s CPU")
    print(f"device {result['device']}, {result['cpu_count']} CPUs, load average "
          f"{result['load_average'][0]:.1f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
