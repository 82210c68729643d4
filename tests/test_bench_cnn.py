"""The CNN benchmark workload: the NumPy im2col CNN agrees with jaxprop in float64, the FLOP
count (the traced one), and a --quick run end to end. No speed is asserted here
(benchmarks/README.md)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxprop as jp
from jaxprop.bench import Bench, Config, cnn
from jaxprop.bench.flops import step_flops
from jaxprop.bench.numpy_cnn import NumpyCNN, from_jaxprop
from jaxprop.train.compile import forward_flops
from layer_checks import product_flops


@pytest.mark.long
@pytest.mark.x64
@pytest.mark.parametrize("text, shape", [
    (cnn.architecture((4, 6), 12), (12, 12, 1)),
    ("conv(3,5)-relu-maxpool(3)-conv(4,1)-flatten-dense(5)-identity", (7, 8, 2)),  # crops
])
def test_numpy_cnn_gradients_equal_jaxprop_float64(text, shape):
    model = jp.parse_model(text, shape)
    params = jax.tree.map(lambda a: a.astype(jnp.float64), model.init(jax.random.key(0)))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, *shape))
    t = rng.dirichlet(np.ones(10 if "dense(10)" in text else 5), 5)
    value, grads = jp.value_and_grad(model, "softmax_cross_entropy", params, x, t)
    np_value, np_grads = NumpyCNN(text).loss_and_grad(from_jaxprop(params), x, t)
    np.testing.assert_allclose(np_value, value, rtol=1e-12)
    assert len(np_grads) == len(grads)
    for g, (name, _), ng in zip(grads, NumpyCNN(text).ops, np_grads, strict=True):
        if g:
            np.testing.assert_allclose(ng[0], g["W"], rtol=1e-10, atol=1e-12, err_msg=name)
            np.testing.assert_allclose(ng[1], g["b"], rtol=1e-10, atol=1e-12, err_msg=name)
        else:
            assert ng == ()


@pytest.mark.parametrize("text", ["conv(4,3)-tanh", "conv(4,2)", "conv(4,3,2)"])
def test_numpy_cnn_names_what_it_cannot_run(text):
    with pytest.raises(ValueError, match="NumpyCNN"):
        NumpyCNN(text)


def test_flops_of_the_workload_are_the_traced_count():
    """One FLOP counter: the CNN rows count 3x the traced forward pass (jaxprop.train.compile,
    as jp.fit does), exact for its convolutions and Dense layers."""
    model = jp.parse_model(cnn.architecture(), (28, 28, 1))
    params, state = model.init_with_state(jax.random.key(0))
    x_one = jax.ShapeDtypeStruct((1, 28, 28, 1), jnp.float32)
    # conv1 28*28 positions x 3*3*1*32; conv2 14*14 x 3*3*32*64; dense 7*7*64 x 128; 128 x 10
    want = 2 * (28 * 28 * 9 * 32 + 14 * 14 * 288 * 64 + 3136 * 128 + 128 * 10)
    assert product_flops(model, params, state, x_one) == want
    forward = forward_flops(model, params, state, x_one)
    assert want < forward < 1.05 * want  # and the elementwise work: bias, relu, max-pool
    x = np.zeros((256, 28, 28, 1), np.float32)
    assert step_flops(model, params, state, x) == 3 * 256 * forward


@pytest.mark.long
def test_quick_cnn_workload_runs_every_implementation():
    cfg = Config(workloads=("cnn",), impls=("numpy", "jaxprop", "jax.grad"), repeats=1,
                 warmup=1).quick()
    with Bench(cfg) as bench:
        records = bench.run()
    cells = [r for r in records if r["workload"] == "cnn"]
    assert {r["impl"] for r in cells} == {"numpy", "jaxprop", "jax.grad"}
    assert all(r["gflops"] > 0 for r in cells)
    # the roofline: the machine's best square matmul, measured once (issue 13's method)
    assert {r["impl"] for r in records if r["workload"] == "roofline"} == {"matmul"}
    shape = (cfg.cnn_side, cfg.cnn_side, 1)
    quick = jp.parse_model(cnn.architecture(cfg.cnn_channels, cfg.cnn_dense), shape)
    params, state = quick.init_with_state(jax.random.key(0))
    traced = step_flops(quick, params, state, np.zeros((cfg.cnn_batch, *shape), np.float32))
    assert all(r["gflops"] * r["median_s"] * 1e9 == pytest.approx(traced) for r in cells)
    hand = next(r for r in cells if r["impl"] == "jaxprop")
    # the quick CNN's step is tiny (< 1e7 FLOPs): its roofline column is n/a, not a ratio
    assert hand["batch"] == 8 and hand["roofline_ratio"] is None and hand["vs_numpy"] > 0
    found = cnn.targets(records)
    assert [t["target"].split(": ")[-1] for t in found] == ["vs jax.grad", "vs NumPy"]
    assert [t["goal"] for t in found] == [0.9, 3.0] and {t["unit"] for t in found} == {"x"}


def test_torch_cnn_gradients_equal_numpy_when_torch_is_installed():
    pytest.importorskip("torch")
    from jaxprop.bench.torch_impl import TorchCNN

    text = cnn.architecture((3, 4), 6)
    model = jp.parse_model(text, (8, 8, 1))
    params = from_jaxprop(model.init(jax.random.key(0)))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 8, 8, 1)).astype(np.float32)
    t = np.eye(10, dtype=np.float32)[[1, 2, 3, 4]]
    net = TorchCNN(text, params, "cpu")
    value, grads = net.loss_and_grad(net.to_tensor(x), net.to_tensor(t))
    np_value, np_grads = NumpyCNN(text).loss_and_grad(params, x, t)
    np.testing.assert_allclose(float(value.detach()), np_value, rtol=1e-5)
    np.testing.assert_allclose(grads[-2].numpy(), np_grads[-1][0], rtol=1e-4, atol=1e-6)
