"""The benchmark's NumPy baseline agrees with jaxprop; the benchmark runs end to end (--quick).

No speed is asserted here: timings live in benchmarks/ and benchmarks/README.md.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxprop as jp
from jaxprop.bench import RECORD_KEYS, Bench, Config
from jaxprop.bench import numpy_baseline as nb
from jaxprop.cli import main

CASES = [  # (sizes, hidden activation, output activation, loss)
    ([2, 4, 1], "sigmoid", "sigmoid", "sse_half"),
    ([3, 5, 2], "tanh", "identity", "mse"),
    ([4, 6, 5, 3], "relu", "identity", "softmax_cross_entropy"),
    ([5, 7, 6, 4, 2], "tanh", "sigmoid", "mse"),
    ([3, 8, 3], "relu", "tanh", "sse_half"),
    ([6, 3], "relu", "identity", "softmax_cross_entropy"),  # no hidden layer
]


def _data(sizes, loss, batch=7):
    rng = np.random.default_rng(sum(sizes))
    x = rng.standard_normal((batch, sizes[0]))
    if loss == "softmax_cross_entropy":
        t = rng.dirichlet(np.ones(sizes[-1]), batch)  # soft targets exercise sum(t) != 1 paths
    else:
        t = rng.standard_normal((batch, sizes[-1]))
    return x, t


@pytest.mark.parametrize("sizes,act,out,loss", CASES)
def test_numpy_gradients_equal_jaxprop_float64(sizes, act, out, loss):
    model = jp.mlp(sizes, act, out, dtype=jnp.float64)
    params = model.init(jax.random.key(len(sizes)))
    x, t = _data(sizes, loss)
    value, grads = jp.value_and_grad(model, loss, params, x, t)
    net = nb.NumpyMLP(sizes, act, out, loss)
    np_value, np_grads = net.loss_and_grad(nb.from_jaxprop(params), x, t)
    np.testing.assert_allclose(np_value, value, rtol=1e-10, atol=1e-12)
    for (dW, db), g in zip(np_grads, [g for g in grads if g]):
        np.testing.assert_allclose(dW, g["W"], rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(db, g["b"], rtol=1e-10, atol=1e-12)


@pytest.mark.x64
def test_numpy_training_loop_equals_jaxprop_gradient_descent():
    model = jp.mlp([2, 4, 1], "sigmoid", "sigmoid", init="normal", dtype=jnp.float64)
    params = model.init(jax.random.key(0))
    x, t = nb.XOR_X, nb.XOR_T
    for _ in range(25):
        _, grads = jp.value_and_grad(model, "sse_half", params, x, t)
        params = jax.tree.map(lambda p, g: p - 0.1 * g, params, grads)
    net = nb.NumpyMLP([2, 4, 1], "sigmoid", "sigmoid", "sse_half")
    start = nb.from_jaxprop(model.init(jax.random.key(0)))
    trained, _ = net.train(start, x, t, lr=0.1, epochs=25)
    for (W, b), p in zip(trained, [p for p in params if p]):
        np.testing.assert_allclose(W, p["W"], rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(b, p["b"], rtol=1e-10, atol=1e-12)
    assert not np.shares_memory(trained[0][0], start[0][0])  # the inputs are left alone


def test_numpy_baseline_rejects_unknown_names():
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        nb.NumpyMLP([2, 2], "relu", "swish")
    with pytest.raises(ValueError, match="unknown loss 'hinge'"):
        nb.NumpyMLP([2, 2], loss="hinge")


def test_quick_benchmark_writes_every_output(tmp_path, capsys):
    out = tmp_path / "bench.json"
    rc = main([
        "bench", "--quick", "--impls", "numpy,jaxprop,jax.grad", "--dtypes", "float32",
        "--repeats", "2", "--json", str(out), "--markdown", str(tmp_path / "bench.md"),
        "--plots", str(tmp_path / "plots"),
    ])
    assert rc == 0
    data = json.loads(out.read_text())
    for key in ("device", "jax_version", "cpu_model", "gpu_model", "date", "command"):
        assert key in data["header"]
    records = data["records"]
    assert records and all(tuple(r) == RECORD_KEYS for r in records)
    seen = {(r["workload"], r["impl"]) for r in records}
    for workload in ("xor", "xor-population", "mlp-grad", "mlp-adam", "width-sweep",
                     "batch-sweep"):
        assert (workload, "jaxprop") in seen
    assert ("mlp-grad", "numpy") in seen and ("mlp-grad", "matmul") in seen
    assert all(r["median_s"] > 0 and r["min_s"] <= r["median_s"] <= r["max_s"] for r in records)
    assert "| workload |" in (tmp_path / "bench.md").read_text()
    assert (tmp_path / "plots" / "batch_sweep.png").stat().st_size > 0
    assert (tmp_path / "plots" / "width_sweep.png").stat().st_size > 0
    assert "jaxprop bench" in capsys.readouterr().out


def test_bfloat16_cells_run():
    bench = Bench(Config(impls=("numpy", "jaxprop", "jax.grad"), repeats=1, warmup=1).quick())
    bench.mlp_cell("mlp-grad", (8, 16, 4), 4, "bfloat16")
    impls = {r["impl"] for r in bench.records}
    assert impls == {"jaxprop", "jax.grad", "matmul"}  # NumPy has no bfloat16
    assert all(r["dtype"] == "bfloat16" and r["gflops"] > 0 for r in bench.records)


@pytest.mark.parametrize("argv,message", [
    (["--workloads", "mnist"], "unknown workload mnist"),
    (["--impls", "numpy,tensorflow"], "unknown implementation tensorflow"),
    (["--dtypes", "float16"], "unknown dtype float16"),
    (["--repeats", "0"], "positive integer"),
])
def test_bad_flags_exit_2_with_one_line(argv, message, capsys):
    assert main(["bench", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_torch_cells_run_when_torch_is_installed():
    pytest.importorskip("torch")
    bench = Bench(Config(impls=("numpy", "torch"), repeats=1, warmup=1).quick())
    bench.mlp_cell("mlp-grad", (8, 16, 4), 4, "float32")
    bench.mlp_cell("mlp-adam", (8, 16, 4), 4, "float32", step="adam")
    assert {(r["workload"], r["impl"]) for r in bench.records} >= {
        ("mlp-grad", "numpy"), ("mlp-grad", "torch"), ("mlp-adam", "torch")}
