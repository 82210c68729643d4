"""The headline promise: nothing on the training path differentiates by autodiff.

``jax.grad``, ``jax.value_and_grad``, ``jax.vjp``, ``jax.jacrev`` (and forward mode) are made to
raise; then ``fit`` (full batch and padded minibatches), ``fit_population``,
``per_example_grads``, ``value_and_grad`` and a data parallel step must still run. Every model
is built fresh inside the test, so nothing comes from a cache traced earlier.
"""

import jax
import numpy as np
import optax
import pytest

import jaxprop as jp
from jaxprop.data import xor

AUTODIFF = ("grad", "value_and_grad", "vjp", "jacrev", "jacfwd", "jvp", "linearize", "hessian")


@pytest.fixture
def no_autodiff(monkeypatch):
    def forbidden(name):
        def call(*args, **kwargs):
            raise AssertionError(f"jax.{name} was called on the training path")

        return call

    for name in AUTODIFF:
        monkeypatch.setattr(jax, name, forbidden(name))


def test_the_guard_is_armed(no_autodiff):
    with pytest.raises(AssertionError, match="jax.grad was called"):
        jax.grad(lambda v: v * v)(1.0)


@pytest.mark.long
def test_training_path_never_calls_autodiff(no_autodiff):
    x, t = xor()
    model = jp.mlp([2, 4, 1], "sigmoid", "sigmoid", init="normal")
    params, history = jp.fit(model, "sse_half", 0.5, (x, t), epochs=20, key=jax.random.key(0))
    assert np.isfinite(history.losses).all()

    rng = np.random.default_rng(0)
    xs = rng.normal(size=(10, 3)).astype(np.float32)
    ts = np.eye(3, dtype=np.float32)[rng.integers(0, 3, 10)]
    clf = jp.mlp([3, 8, 3], "relu", "identity")
    _, history = jp.fit(clf, "softmax_cross_entropy", optax.adam(1e-2), (xs, ts), epochs=3,
                        batch_size=4, key=jax.random.key(1))  # 4 + 4 + 2 (padded, masked)
    assert history.losses.shape == (3,)

    pop = jp.fit_population(jp.mlp([2, 4, 1], "sigmoid", "sigmoid", init="normal"), "sse_half", 0.5, (x, t), n=3,
                            epochs=10)
    assert pop.final_loss.shape == (3,)

    p = clf.init(jax.random.key(2))
    losses, grads = jp.per_example_grads(clf, "softmax_cross_entropy", p, xs, ts)
    assert losses.shape == (10,) and grads[0]["W"].shape == (10, 3, 8)
    value, _ = jp.value_and_grad(clf, "softmax_cross_entropy", p, xs, ts)
    assert np.isfinite(value)

    step = jp.make_data_parallel_step(clf, "softmax_cross_entropy", optax.sgd(0.1))
    p2, s2 = step.init(p)
    _, _, value = step(p2, s2, xs, ts)
    assert np.isfinite(value)


@pytest.mark.long
def test_convolutional_training_path_never_calls_autodiff(no_autodiff):
    rng = np.random.default_rng(0)
    xs = rng.normal(size=(16, 6, 6, 2)).astype(np.float32)
    ts = np.eye(3, dtype=np.float32)[rng.integers(0, 3, 16)]
    model = jp.parse_model("conv(4,3)-relu-residual(conv(4,3,dilation=2)-batchnorm-tanh)"
                           "-maxpool(2)-conv(4,2,padding=valid)-avgpool(2,1,padding=same)"
                           "-flatten-dense(8)-layernorm-dropout(0.3)-dense(3)", (6, 6, 2))
    _, history = jp.fit(model, "softmax_cross_entropy", optax.adam(1e-2), (xs, ts), epochs=2,
                        batch_size=8, key=jax.random.key(0))
    assert np.isfinite(history.losses).all()
    cnn = jp.parse_model("conv(4,3,2)-relu-flatten-dense(3)", (6, 6, 2))
    losses, grads = jp.per_example_grads(cnn, "softmax_cross_entropy",
                                         cnn.init(jax.random.key(1)), xs, ts)
    assert losses.shape == (16,) and grads[0]["W"].shape == (16, 3, 3, 2, 4)
