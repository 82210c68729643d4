"""Second order: forward mode through the hand-written backward (``jp.hvp``, ``jp.check_hvp``,
``check_gradients(order=2)``) and the bridge under ``jax.jvp``/``jax.hessian``/``jax.jacfwd``."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxprop as jp

EVERY_LAYER = ("conv(3,3)-batchnorm-relu-maxpool(2)-residual(conv(3,3)-tanh)"
               "-avgpool(2,padding=same)-flatten-layernorm-dense(4)-dropout(0.3)-sigmoid"
               "-reshape(2,2)-flatten(2)-dense(3)")


def _f64(tree):
    return jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), tree)


def _tanh_layer(derivative):
    """A tanh whose backward is right in value; ``derivative(y)`` is its ``1 - y**2``."""
    def init(key, in_shape):
        return (), (), tuple(in_shape)

    def forward(params, state, x, *, key=None, train=True):
        return jnp.tanh(x), (x,), state

    def backward(params, residuals, dy):
        (x,) = residuals
        return (), dy * derivative(jnp.tanh(x))

    return jp.Layer(init, forward, backward, "MyTanh")


@jax.custom_jvp
def _square(y):
    return y * y


@_square.defjvp
def _square_jvp(primals, tangents):  # planted: d(y^2) = 3 y dy (right: 2 y dy)
    (y,), (dy,) = primals, tangents
    return y * y, 3 * y * dy


RIGHT = _tanh_layer(lambda y: 1 - y ** 2)
PLANTED = {
    "stop_gradient": _tanh_layer(lambda y: 1 - jax.lax.stop_gradient(y) ** 2),
    "custom_jvp": _tanh_layer(lambda y: 1 - _square(y)),
}


def _mlp_with(layer):
    return jp.serial(jp.Dense(4), layer, jp.Dense(2), in_shape=(3,))


def _data(dtype=jnp.float32):
    rng = np.random.default_rng(0)
    return (jnp.asarray(rng.normal(size=(5, 3)), dtype),
            jnp.asarray(rng.normal(size=(5, 2)), dtype))


@pytest.mark.x64
def test_hvp_is_jvp_of_the_hand_written_gradient_and_equals_autodiff():
    model = jp.mlp([3, 4, 2], "tanh", "identity")
    params = _f64(model.init(jax.random.key(0)))
    x, t = _data(jnp.float64)
    v = jax.tree.map(jnp.ones_like, params)
    value, grads, hv = jax.jit(lambda p, v_: jp.hvp(model, "mse", p, x, t, v_))(params, v)
    loss = lambda p: jp.get_loss("mse").value(model.apply(p, x), t)  # noqa: E731
    ref = jax.jit(lambda p, v_: jax.jvp(jax.grad(loss), (p,), (v_,))[1])(params, v)
    np.testing.assert_allclose(value, loss(params), rtol=1e-12)
    for a, b in zip(jax.tree.leaves(hv), jax.tree.leaves(ref)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.x64
def test_check_hvp_passes_for_right_layers_and_names_planted_second_order_bugs():
    x, t = _data(jnp.float64)
    right = _mlp_with(RIGHT)
    report = jp.check_hvp(right, "mse", _f64(right.init(jax.random.key(0))), x, t)
    assert report.ok, str(report)
    assert report.verdict().startswith("second order OK")
    for how, layer in PLANTED.items():
        model = _mlp_with(layer)
        params = _f64(model.init(jax.random.key(0)))
        # right in value: the first-order check passes
        assert jp.check_layer(layer, (4,), dtype=jnp.float64).ok, how
        report = jp.check_hvp(model, "mse", params, x, t, fd=False, directions=1)
        assert not report.ok, how
        assert "layer 1 MyTanh" in report.verdict(), report.verdict()
        # end to end too: the params' Hessian goes through the tanh's derivative
        assert any(c.where == "end to end" for c in report.failures()), how


def test_check_gradients_order_2_names_a_second_order_bug_in_float32():
    bad = _mlp_with(PLANTED["stop_gradient"])
    x, t = _data()
    report = jp.check_gradients(bad, "mse", bad.init(jax.random.key(0)), x, t, order=2,
                                perturb_params=False)
    assert report.first.ok and not report.ok
    assert report.second.dtype == "float32"
    assert {c.reference.split()[-1] for c in report.second.checks} == {"float32", "float64"}
    assert "MyTanh" in report.verdict() and "second order" in report.verdict()
    with pytest.raises(ValueError, match="order must be 1 or 2"):
        jp.check_gradients(bad, "mse", bad.init(jax.random.key(0)), x, t, order=3)


@pytest.mark.long
@pytest.mark.x64
def test_check_hvp_passes_for_every_activation():
    model = jp.parse_model("dense(4)-" + "-".join(jp.ACTIVATIONS) + "-dense(2)", (3,))
    x, t = _data(jnp.float64)
    report = jp.check_hvp(model, "mse", _f64(model.init(jax.random.key(0))), x, t, fd=False,
                          directions=1)
    assert report.ok, str(report)


@pytest.mark.long
@pytest.mark.x64
def test_check_hvp_passes_for_every_built_in_layer():
    model = jp.parse_model(EVERY_LAYER, (6, 6, 2))
    params, state = _f64(model.init_with_state(jax.random.key(0)))
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(3, 6, 6, 2)))
    t = jnp.eye(3)
    report = jp.check_hvp(model, "softmax_cross_entropy", params, x, t, state=state,
                          key=jax.random.key(2))
    assert report.ok, str(report)
    assert len({c.where for c in report.checks}) == 15  # 14 layers and end to end
    report32 = jp.check_gradients(model, "softmax_cross_entropy", params, x, t, state=state,
                                  dtype=jnp.float32, order=2)
    assert report32.ok, str(report32)
    small = _mlp_with(RIGHT)
    x, t = _data()
    report = jp.check_gradients(small, "mse", small.init(jax.random.key(0)), x, t, order=2)
    assert report.ok and report.second.dtype == "float32", str(report)


@pytest.mark.x64
def test_bridge_under_forward_mode_and_hessian():
    model = jp.mlp([3, 4, 2], "tanh", "identity")
    params = _f64(model.init(jax.random.key(0)))
    x, t = _data(jnp.float64)
    f = jp.as_jax_function(model, "mse")
    plain = lambda p, x_, t_: jp.get_loss("mse").value(model.apply(p, x_), t_)  # noqa: E731
    close = lambda a, b: all(np.allclose(u, w, rtol=1e-10, atol=1e-12)  # noqa: E731
                             for u, w in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
    v = jax.tree.map(jnp.ones_like, params)
    zero = (jnp.zeros_like(x), jnp.zeros_like(t))

    @jax.jit  # one program: everything compared below
    def results(p, x, t):
        return {
            "hessian": (jax.hessian(f)(p, x, t), jax.hessian(plain)(p, x, t)),
            "jacfwd": (jax.jacfwd(f, argnums=(1, 2))(p, x, t),
                       jax.grad(plain, argnums=(1, 2))(p, x, t)),
            "jvp": (jax.jvp(f, (p, x, t), (p, x, t)), jax.jvp(plain, (p, x, t), (p, x, t))),
            # a Hessian-vector product through the bridge is jp.hvp's
            "hvp": (jax.jvp(jax.grad(f), (p, x, t), (v, *zero))[1],
                    jp.hvp(model, "mse", p, x, t, v)[2]),
        }

    for name, (got, want) in results(params, x, t).items():
        assert close(got, want), name


def test_bridge_first_order_never_differentiates_the_forward():
    @jax.custom_jvp
    def guarded(x):
        return jnp.tanh(x)

    @guarded.defjvp
    def guarded_jvp(primals, tangents):
        raise AssertionError("autodiff reached the forward")

    layer = jp.Layer(lambda k, s: ((), (), tuple(s)),
                     lambda p, s, x, *, key=None, train=True: (guarded(x), (jnp.tanh(x),), s),
                     lambda p, r, dy: ((), dy * (1 - r[0] ** 2)), "Guarded")
    model = jp.serial(jp.Dense(4), layer, jp.Dense(2), in_shape=(3,))
    params = model.init(jax.random.key(0))
    x, t = _data()
    f = jp.as_jax_function(model, "mse")
    grads = jax.jit(jax.grad(f))(params, x, t)
    ref = jp.value_and_grad(model, "mse", params, x, t)[1]
    assert all(np.allclose(a, b) for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(ref)))
    jax.jit(lambda *a: jax.jvp(f, a, a))(params, x, t)  # forward mode: the same rule


@pytest.mark.long
@pytest.mark.x64
def test_check_hvp_passes_for_a_small_gpt_on_token_ids():
    """Embedding (integer ids: no dx, its backward checked in params and dy), positional
    embedding, causal attention, LayerNorm, GELU MLP, residuals; and the bridge's H v."""
    model = jp.gpt(7, blocks=1, features=8, heads=2, context=5, dtype=jnp.float64)
    params, state = model.init_with_state(jax.random.key(0))
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.integers(0, 7, (2, 5)), jnp.int32)
    t = jnp.asarray(rng.integers(0, 7, (2, 5)), jnp.int32)
    loss = "sparse_softmax_cross_entropy"
    report = jp.check_hvp(model, loss, params, x, t, state=state, key=jax.random.key(1))
    assert report.ok, str(report)
    assert any(c.where.startswith("layer 0 Embedding") for c in report.checks), str(report)
    f = jp.as_jax_function(model, loss)
    v = jax.tree.map(jnp.ones_like, params)
    no_tangent = np.zeros(x.shape, jax.dtypes.float0)
    hv = jax.jvp(jax.grad(f), (params, x, t), (v, no_tangent, no_tangent))[1]
    want = jp.hvp(model, loss, params, x, t, v)[2]
    for a, b in zip(jax.tree.leaves(hv), jax.tree.leaves(want)):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


FROZEN_TANH = '''
import jax, jax.numpy as jnp
import jaxprop as jp


def make_model():
    def init(key, in_shape):
        return (), (), tuple(in_shape)

    def forward(params, state, x, *, key=None, train=True):
        return jnp.tanh(x), (x,), state

    def backward(params, residuals, dy):  # right value, wrong derivative
        (x,) = residuals
        return (), dy * (1 - jax.lax.stop_gradient(jnp.tanh(x)) ** 2)

    frozen = jp.Layer(init, forward, backward, "FrozenTanh")
    return jp.serial(jp.Dense(4), frozen, jp.Dense(2), in_shape=(3,))
'''


@pytest.mark.long
def test_cli_order_2_prints_one_line_per_place_and_names_the_layer(tmp_path, capsys):
    from jaxprop.cli import main

    assert main(["check", "--model", "dense(4)-tanh-dense(2)", "--in-shape", "3", "--order",
                 "2", "--batch", "4"]) == 0
    out = capsys.readouterr().out
    assert "second order OK" in out and "ok   layer 1 tanh" in out
    (tmp_path / "frozen.py").write_text(FROZEN_TANH)
    assert main(["check", "--model", f"{tmp_path / 'frozen.py'}:make_model", "--order", "2",
                 "--batch", "4"]) == 1
    out = capsys.readouterr().out
    verdict = next(line for line in out.splitlines() if line.startswith("second order"))
    assert verdict.startswith("second order FAILED: layer 1 FrozenTanh: d(dx)"), verdict
    assert len(verdict) <= 120 and "FAIL layer 1 FrozenTanh" in out


def test_hvp_refuses_bad_input_in_one_line():
    model = jp.mlp([3, 4, 2], "tanh", "identity")
    params = model.init(jax.random.key(0))
    x, t = _data()
    with pytest.raises(ValueError, match="v must have the structure and shapes of params"):
        jp.hvp(model, "mse", params, x, t, params[:1])
    with pytest.raises(ValueError, match="last axis of the input must be 3"):
        jp.hvp(model, "mse", params, jnp.ones((5, 4)), t, params)
    with pytest.raises(ValueError, match="NaN"):
        jp.hvp(model, "mse", params, x.at[0, 0].set(jnp.nan), t, params)
