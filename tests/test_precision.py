"""Precision policies in the one training step: dtype flow (params and gradients float32,
computation bfloat16, loss float32), matmul precision, bf16 training accuracy, and float64
asked for without jax_enable_x64."""

import dataclasses
import json

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxprop as jp
from jaxprop import data
from jaxprop.cli import main
from jaxprop.train import make_train_step
from jaxprop.train.precision import PRECISIONS, get_precision

LOSS = "softmax_cross_entropy"


def _setup(dtype=jnp.float32, activation="relu"):
    # widths past Dense's unrolled multiply-adds for tiny factors, so every product is a matmul
    model = jp.mlp([20, 24, 24, 3], activation, "identity", dtype=dtype)
    params = model.init(jax.random.key(0))
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((6, 20)), dtype)
    t = jnp.asarray(np.eye(3)[rng.integers(0, 3, 6)], dtype)
    return model, params, x, t


def _sub_jaxprs(params):
    """The jaxprs an equation's params hold (``jax.extend.core.jaxprs_in_params``, which jax
    0.8.0, the minimum stated, does not have)."""
    for value in params.values():
        for v in value if isinstance(value, (tuple, list)) else (value,):
            if isinstance(v, jax.extend.core.ClosedJaxpr):
                yield v.jaxpr
            elif isinstance(v, jax.extend.core.Jaxpr):
                yield v


def _eqns(jaxpr):
    """Every equation of a jaxpr, sub-jaxprs (scan, jit, custom calls) included."""
    for eqn in jaxpr.eqns:
        yield eqn
        for sub in _sub_jaxprs(eqn.params):
            yield from _eqns(sub)


def _dots(fn, *args):
    return [e for e in _eqns(jax.make_jaxpr(fn)(*args).jaxpr)
            if e.primitive.name == "dot_general"]


def test_bf16_step_keeps_params_grads_and_loss_in_float32_and_computes_in_bfloat16():
    model, params, x, t = _setup()
    opt = optax.adam(1e-3)
    step = make_train_step(model, LOSS, opt, precision="bf16")
    args = (params, opt.init(params), [(), (), (), (), (), ()], x, t, jax.random.key(1))
    dots = _dots(step, *args)
    assert len(dots) >= 3 * 3 - 1  # forward, dW and dx per Dense (XLA may drop the first dx)
    for eqn in dots:  # every matmul, forward and hand-written backward, in bfloat16
        assert [v.aval.dtype for v in eqn.invars] == [jnp.bfloat16] * 2, eqn
    new_params, new_opt_state, _, value = jax.jit(step)(*args)
    assert value.dtype == jnp.float32
    for leaf in jax.tree.leaves((new_params, new_opt_state)):
        if jnp.issubdtype(leaf.dtype, jnp.floating):
            assert leaf.dtype == jnp.float32


@pytest.mark.long
@pytest.mark.parametrize("activation", sorted(set(jp.ACTIVATIONS) - {"softmax"}))
def test_bf16_gradients_are_float32_and_every_layer_computes_in_bfloat16(activation):
    model, params, x, t = _setup(activation=activation)
    policy = get_precision("bf16")
    loss = policy.loss(jp.get_loss(LOSS))
    bf16_grad = policy.wrap(jp.loss_grad_state_fn(model, loss))
    f32_grad = jp.loss_grad_state_fn(model, LOSS)
    (value, grads, _), (_, ref, _) = jax.jit(  # one compilation for both
        lambda *a: (bf16_grad(*a), f32_grad(*a)))(params, None, x, t)
    assert value.dtype == jnp.float32
    assert jax.tree.map(lambda g: g.dtype, grads) == jax.tree.map(lambda p: p.dtype, params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=0.1, atol=0.02), grads, ref)
    # intermediate dtypes: each layer's output and input gradient stays bfloat16
    cp, cx = policy.cast_to_compute((params, x))
    outputs, residuals, _ = model.forward_trace(cp, None, cx)
    _, dxs = model.backward_trace(cp, residuals, loss.grad(outputs[-1], t))
    assert {y.dtype for y in outputs} == {jnp.dtype(jnp.bfloat16)}
    assert {dx.dtype for dx in dxs} == {jnp.dtype(jnp.bfloat16)}


def test_highest_sets_the_matmul_precision_and_f32_leaves_the_default():
    model, params, x, t = _setup()
    opt = optax.sgd(0.1)
    args = (params, opt.init(params), (), x, t, jax.random.key(1))
    with jax.default_matmul_precision("bfloat16"):  # i.e. the backend's default, whatever
        highest = _dots(make_train_step(model, LOSS, opt, precision="highest"), *args)
        default = _dots(make_train_step(model, LOSS, opt, precision="f32"), *args)
    assert highest and all(e.params["precision"] == (jax.lax.Precision.HIGHEST,) * 2
                           for e in highest)
    assert default and all(e.params["precision"] == (jax.lax.Precision.DEFAULT,) * 2
                           for e in default)


def test_f32_policy_gives_the_plain_step():
    model, params, x, t = _setup()
    opt = optax.sgd(0.1)
    args = (params, opt.init(params), (), x, t, jax.random.key(1))
    plain = jax.jit(make_train_step(model, LOSS, opt))(*args)
    f32 = jax.jit(make_train_step(model, LOSS, opt, precision="f32"))(*args)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=0), plain, f32)


def test_fit_in_bf16_matches_f32_accuracy_on_digits():
    ds = data.load("digits", seed=0)
    model = jp.mlp([(8, 8, 1), 64, 64, 10], "relu", "identity")
    acc = {}
    for precision in ("f32", "bf16"):  # 1437 examples / 64: the ragged, masked batch too
        state, history = jp.fit_state(model, LOSS, optax.adam(3e-3), ds, epochs=10,
                                      batch_size=64, key=jax.random.key(0), log_every=10,
                                      precision=precision)
        assert {leaf.dtype for leaf in jax.tree.leaves((state.params, state.opt_state))
                if jnp.issubdtype(leaf.dtype, jnp.floating)} == {jnp.dtype(jnp.float32)}
        acc[precision] = history.records[-1]["test_accuracy"]
    assert acc["f32"] > 0.93
    assert abs(acc["bf16"] - acc["f32"]) <= 0.01, acc


def test_precision_names_and_errors():
    assert set(PRECISIONS) >= {"f32", "bf16", "highest", "f64"}
    assert get_precision("bfloat16") is PRECISIONS["bf16"]
    with pytest.raises(ValueError, match="unknown precision 'f16'; known: f32"):
        get_precision("f16")

    @dataclasses.dataclass(frozen=True)
    class JmpLikePolicy:  # jmp.Policy's fields
        param_dtype: object = jnp.float32
        compute_dtype: object = jnp.bfloat16
        output_dtype: object = jnp.float32

    policy = get_precision(JmpLikePolicy())
    assert (policy.compute_dtype, policy.output_dtype) == (jnp.bfloat16, jnp.float32)


@pytest.mark.x64
def test_bf16_policy_rejects_float64_params_float64():
    model, params, x, t = _setup(jnp.float64)
    with pytest.raises(ValueError, match="keeps parameters in float32, but the model's are "
                                         "float64"):
        jp.fit(model, LOSS, 0.1, (x, t), epochs=1, key=jax.random.key(0), precision="bf16")


@pytest.mark.x64
def test_f64_policy_trains_in_float64():
    model, params, x, t = _setup(jnp.float64)
    params, history = jp.fit(model, LOSS, 0.1, (x, t), epochs=3, key=jax.random.key(0),
                             precision="f64")
    assert {leaf.dtype for leaf in jax.tree.leaves(params)} == {jnp.dtype(jnp.float64)}
    assert history.losses.dtype == np.float64


def test_double_policy_without_x64_is_one_clear_error():
    model, params, x, t = _setup()
    with pytest.raises(ValueError, match="precision 'f64': float64 needs jax_enable_x64"):
        jp.fit(model, LOSS, 0.1, (x, t), epochs=1, key=jax.random.key(0), precision="f64")


@pytest.mark.parametrize("make", [
    lambda: jp.mlp([2, 3, 1], "sigmoid", "sigmoid", dtype=jnp.float64).init(jax.random.key(0)),
    lambda: jp.Dense(3, dtype=jnp.float64).init(jax.random.key(0), (2,)),
    lambda: jp.init_state(jp.mlp([2, 3, 1], "sigmoid", "sigmoid", dtype=jnp.float64), optax.sgd(0.1),
                          jax.random.key(0)),
    lambda: jp.get_initializer("glorot")(jax.random.key(0), (2, 3), jnp.float64),
    lambda: jp.Conv2D(2, 3, dtype=jnp.float64).init(jax.random.key(0), (4, 4, 1)),
    lambda: jp.LayerNorm(dtype=jnp.float64).init(jax.random.key(0), (3,)),
], ids=["mlp", "Dense", "init_state", "initializer", "Conv2D", "LayerNorm"])
def test_double_model_without_x64_is_one_clear_error(make):
    with pytest.raises(ValueError, match="float64 needs jax_enable_x64") as e:
        make()
    assert "'init'" not in str(e.value)  # names the layer or initializer, not a function


def test_train_cli_precision_is_saved_and_checked_on_resume(tmp_path, capsys):
    out = str(tmp_path / "run")
    common = ["train", "--dataset", "moons", "--hidden", "8", "--no-plots", "--log-every", "2"]
    assert main([*common, "--epochs", "2", "--precision", "bf16", "--out", out]) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["config"]["precision"] == "bf16" and metrics["status"] == "finished"
    assert "precision bf16" in capsys.readouterr().out
    assert main(["train", "--resume", out, "--epochs", "4", "--precision", "f32"]) == 2
    assert "--precision differs" in capsys.readouterr().err
    assert main(["train", "--resume", out, "--epochs", "4", "--no-plots"]) == 0
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["epoch"] == 4


def test_train_cli_rejects_an_unknown_precision(capsys):
    assert main(["train", "--precision", "f16"]) == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'f16'" in err and err.count("\n") == 1
