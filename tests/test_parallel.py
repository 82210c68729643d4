"""Data parallel on jax.sharding: 4 simulated CPU devices (in one subprocess) equal one device."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import optax
import pytest

import jaxprop as jp
from jaxprop.data import xor
from jaxprop.scale.parallel import data_mesh, make_data_parallel_step
from jaxprop.train import as_optimizer

# Runs with XLA_FLAGS=--xla_force_host_platform_device_count=4 (must be set before jax starts).
SCRIPT = textwrap.dedent("""
    import json
    import jax, jax.numpy as jnp, numpy as np, optax
    import jaxprop as jp
    from jaxprop.scale.parallel import (
        data_mesh, data_parallel_grad_fn, make_data_parallel_step, shard_batch)

    out = {"devices": len(jax.devices())}
    model = jp.mlp([3, 16, 2], activation="tanh", output_activation="identity")
    params = model.init(jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (64, 3))
    t = jax.random.normal(jax.random.key(2), (64, 2))
    mesh = data_mesh()
    for loss in ("mse", "sse_half"):
        v1, g1 = jax.jit(jp.loss_and_grad_fn(model, loss))(params, x, t)
        v4, g4 = data_parallel_grad_fn(model, loss, mesh)(params, x, t)
        out[loss] = [float(abs(v1 - v4) / abs(v1))] + [
            float(np.max(np.abs(np.asarray(a) - np.asarray(b))) / np.max(np.abs(np.asarray(a))))
            for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g4), strict=True)]
    xs, ts = shard_batch(mesh, x, t)
    out["x_shards"] = sorted({s.data.shape[0] for s in xs.addressable_shards})
    hlo = jax.jit(jp.loss_and_grad_fn(model, "mse")).lower(
        params, xs, ts).compile().as_text()
    out["all_reduce"] = "all-reduce" in hlo

    def train(mesh):
        dp = make_data_parallel_step(model, "mse", optax.adam(0.01), mesh)
        p, s = dp.init(params)
        for _ in range(20):
            p, s, v = dp.step(p, s, x, t)
        return p, float(v)
    p4, v4 = train(mesh)
    p1, v1 = train(data_mesh(jax.devices()[:1]))
    out["train_loss"] = [v1, v4]
    out["train_param_diff"] = max(
        float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
        for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p4), strict=True))
    leaf = jax.tree.leaves(p4)[0]
    out["param_replicated"] = leaf.is_fully_replicated and len(leaf.sharding.device_set) == 4
    # the training helper's fit_state, unchanged, on data_parallel_inputs
    from jaxprop.scale.parallel import data_parallel_inputs
    from jaxprop.train import fit_state, init_state
    opt = optax.sgd(0.1)
    s1, _ = fit_state(model, "mse", opt, (x, t), epochs=30, key=jax.random.key(4))
    st, data = data_parallel_inputs(init_state(model, opt, jax.random.key(4)), (x, t))
    s4, h4 = fit_state(model, "mse", opt, data, epochs=30, state=st)
    out["fit_state_diff"] = max(
        float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
        for a, b in zip(jax.tree.leaves(s1.params), jax.tree.leaves(s4.params), strict=True))
    out["fit_state_sharded"] = len(jax.tree.leaves(s4.params)[0].sharding.device_set)
    # the CLI: jaxprop train --data-parallel equals the one-device run; indivisible -> exit 2
    import contextlib, io, tempfile
    from jaxprop.cli import main
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
        runs = {}
        for flag in ([], ["--data-parallel"]):
            rc = main(["train", "--epochs", "300", "--no-plots", "--out", f"{tmp}/r{len(flag)}",
                       *flag])
            m = json.load(open(f"{tmp}/r{len(flag)}/metrics.json"))
            runs[len(flag)] = (rc, m["train_loss"], m["device"])
        out["cli"] = runs
        # digits: 1437 training examples do not divide over 4 devices: padded and masked
        # (full batch: the masked step; minibatches: the padding is never drawn)
        for batch in ("0", "64"):
            for flag in ([], ["--data-parallel"]):
                d = f"{tmp}/d{batch}{len(flag)}"
                rc = main(["train", "--dataset", "digits", "--epochs", "3", "--batch-size",
                           batch, "--no-plots", "--out", d, *flag])
                m = json.load(open(f"{d}/metrics.json"))
                out[f"digits_{batch}_{len(flag)}"] = (rc, m["train_loss"], m["test_accuracy"])
    # fit_state(mesh=...) on 10 rows over 4 devices: the padding never counts
    from jaxprop.train import fit_state
    x10, t10 = x[:10], t[:10]
    s1, h1 = fit_state(model, "mse", opt, (x10, t10), epochs=5, key=jax.random.key(4))
    s4, h4 = fit_state(model, "mse", opt, (x10, t10), epochs=5, key=jax.random.key(4),
                       mesh=mesh)
    out["padded_fit"] = [h1.records[-1]["train_loss"], h4.records[-1]["train_loss"]]
    out["padded_fit_diff"] = max(
        float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
        for a, b in zip(jax.tree.leaves(s1.params), jax.tree.leaves(s4.params), strict=True))
    try:
        make_data_parallel_step(model, "mse", 0.1, mesh).step(p4, None, x[:6], t[:6])
    except ValueError as e:
        out["indivisible"] = str(e)
    print("RESULT " + json.dumps(out))
""")


def _run_on_four_devices() -> dict:
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
               JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


@pytest.mark.long
def test_four_simulated_devices_equal_one_device():
    """One test (one subprocess, even under pytest-xdist) for every multi-device check."""
    r = _run_on_four_devices()
    assert r["devices"] == 4
    # the gradient: batch split 16 per device, XLA's all-reduce sums it, same as one device
    assert r["x_shards"] == [16] and r["all_reduce"]
    for loss in ("mse", "sse_half"):
        assert max(r[loss]) < 1e-5, (loss, r[loss])
    # 20 Adam steps of the data parallel step: same params, still replicated
    v1, v4 = r["train_loss"]
    assert abs(v1 - v4) <= 1e-5 * abs(v1)
    assert r["train_param_diff"] < 1e-5 and r["param_replicated"]
    # the training helper's fit_state, unchanged, on data_parallel_inputs
    assert r["fit_state_sharded"] == 4 and r["fit_state_diff"] < 1e-5
    # jaxprop train --data-parallel equals the one-device run
    (rc1, loss1, _), (rc4, loss4, device4) = r["cli"]["0"], r["cli"]["1"]
    assert rc1 == rc4 == 0 and "x4" in device4
    assert abs(loss1 - loss4) <= 1e-5 * abs(loss1)
    # the step helpers still refuse a batch that does not split evenly, naming the sizes
    assert "6 examples" in r["indivisible"] and "4 devices" in r["indivisible"]
    # issue 11: a training set that does not divide over the devices trains anyway (it used
    # to exit 2), with the loss of one device (to float32 rounding)
    for batch in ("0", "64"):
        (rc1, loss1, acc1), (rc4, loss4, acc4) = (r[f"digits_{batch}_{k}"] for k in (0, 1))
        assert rc1 == rc4 == 0
        assert abs(loss1 - loss4) <= 1e-5 * abs(loss1), (batch, loss1, loss4)
        assert abs(acc1 - acc4) <= 1 / 360, (batch, acc1, acc4)
    loss1, loss4 = r["padded_fit"]
    assert abs(loss1 - loss4) <= 1e-5 * abs(loss1) and r["padded_fit_diff"] < 1e-5


def test_single_device_step_trains_and_bad_optimizer_is_reported():
    model = jp.mlp([2, 8, 1], activation="tanh", output_activation="identity")
    x, t = xor()
    dp = make_data_parallel_step(model, "bce_with_logits", optax.adam(0.05), data_mesh())
    p, s = dp.init(model.init(jax.random.key(0)))
    for _ in range(300):
        p, s, v = dp.step(p, s, x, t)
    assert float(v) < 0.05
    assert np.array_equal(model.apply(p, x) > 0, t > 0.5)
    with pytest.raises(ValueError, match="learning rate"):
        as_optimizer("fast")
