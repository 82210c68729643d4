"""Benchmark: data parallel training step on 1, 2 and 4 simulated CPU devices.

Each device count runs in its own subprocess with
``XLA_FLAGS=--xla_force_host_platform_device_count=D`` (the flag must be set before jax starts).
The workload: an MLP 64-512-512-10 (tanh, softmax cross-entropy, SGD) on a batch of 4096 random
examples; the figure is the median time of one jitted data parallel step. Simulated devices are
threads of ONE machine sharing its cores, so this measures the overhead and the parallelism XLA
can find there, not the speed-up real accelerators would give.

    python benchmarks/data_parallel.py [--devices 1,2,4] [--batch 4096] [--steps 30]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time


def worker(batch: int, steps: int) -> dict:
    import jax
    import numpy as np

    import jaxprop as jp

    model = jp.mlp([64, 512, 512, 10], activation="tanh", output_activation="identity")
    params = model.init(jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (batch, 64))
    t = jax.nn.one_hot(jax.random.randint(jax.random.key(2), (batch,), 0, 10), 10)
    dp = jp.make_data_parallel_step(model, "softmax_cross_entropy", 0.05)
    x, t = jp.shard_batch(dp.mesh, x, t)
    p, s = dp.init(params)
    p, s, v = jax.block_until_ready(dp.step(p, s, x, t))  # compile
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        p, s, v = jax.block_until_ready(dp.step(p, s, x, t))
        times.append(time.perf_counter() - t0)
    return {"devices": len(jax.devices()), "step_ms": 1e3 * statistics.median(times),
            "final_loss": float(v), "cpu_count": os.cpu_count(),
            "loss_finite": bool(np.isfinite(np.asarray(v)))}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", default="1,2,4")
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print("RESULT " + json.dumps(worker(args.batch, args.steps)))
        return None

    rows = []
    for d in [int(s) for s in args.devices.split(",")]:
        env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={d}",
                   JAX_PLATFORMS="cpu")
        out = subprocess.run([sys.executable, __file__, "--worker", "--batch", str(args.batch),
                              "--steps", str(args.steps)], env=env, capture_output=True,
                             text=True, check=True)
        line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")][-1]
        rows.append(json.loads(line[len("RESULT "):]))
    base = rows[0]["step_ms"]
    print(f"batch {args.batch}, MLP 64-512-512-10, host CPU cores: {rows[0]['cpu_count']}")
    print("devices  step (ms)  speed-up vs first  final loss")
    for r in rows:
        print(f"{r['devices']:>7}  {r['step_ms']:9.2f}  {base / r['step_ms']:17.2f}  "
              f"{r['final_loss']:.5f}")
    return rows


if __name__ == "__main__":
    main()
