"""Conv2D, pooling, Flatten, Reshape, LayerNorm, BatchNorm, Dropout and Residual: each hand-written
backward against jax.vjp of its own forward (float32 and float64, with and without jit), against
central finite differences in float64, stax-style shape agreement, per-example gradients under
jax.vmap, and the facts each layer's docstring states. Params are random, not init values."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized
from hypothesis import given, settings
from hypothesis import strategies as st

import jaxprop as jp
from layer_checks import (
    assert_backward_matches_finite_differences,
    assert_backward_matches_vjp,
    x64_if_float64,
)

# name -> (constructor(dtype), one example's shape, forward keywords)
LAYERS = {
    "conv_same": (lambda dt: jp.Conv2D(4, 3, dtype=dt), (6, 5, 3), {}),
    "conv_valid_stride2": (lambda dt: jp.Conv2D(3, (3, 2), strides=2, padding="VALID", dtype=dt),
                           (7, 6, 2), {}),
    "conv_dilated_padded": (lambda dt: jp.Conv2D(2, 2, strides=(2, 1), padding=((0, 2), (1, 0)),
                                                 dilation=2, dtype=dt), (6, 7, 2), {}),
    "conv_no_bias_1x1": (lambda dt: jp.Conv2D(2, 1, use_bias=False, dtype=dt), (3, 3, 2), {}),
    "maxpool": (lambda dt: jp.MaxPool2D(2), (6, 5, 2), {}),
    "maxpool_overlap_same": (lambda dt: jp.MaxPool2D(3, 2, padding="SAME"), (5, 6, 2), {}),
    "avgpool": (lambda dt: jp.AvgPool2D(2), (4, 6, 3), {}),
    "avgpool_overlap_padded": (lambda dt: jp.AvgPool2D((3, 2), (1, 2), padding=1), (5, 4, 2), {}),
    "flatten": (lambda dt: jp.Flatten(), (3, 4, 2), {}),
    "reshape": (lambda dt: jp.Reshape((2, 3, 2)), (12,), {}),
    "layernorm": (lambda dt: jp.LayerNorm(dtype=dt), (5,), {}),
    "layernorm_image": (lambda dt: jp.LayerNorm(dtype=dt), (3, 3, 4), {}),
    "batchnorm_train": (lambda dt: jp.BatchNorm(dtype=dt), (5,), {"train": True}),
    "batchnorm_image_train": (lambda dt: jp.BatchNorm(dtype=dt), (3, 2, 4), {"train": True}),
    "batchnorm_eval": (lambda dt: jp.BatchNorm(dtype=dt), (3, 2, 4), {"train": False}),
    "dropout": (lambda dt: jp.Dropout(0.3), (4, 5), {"key": jax.random.key(3)}),
    "residual_serial": (lambda dt: jp.Residual(jp.serial(jp.Dense(5, dtype=dt), jp.Tanh(),
                                                         jp.Dense(5, dtype=dt))), (5,), {}),
    "residual_conv": (lambda dt: jp.Residual(jp.serial(jp.Conv2D(3, 3, dtype=dt), jp.Tanh(),
                                                       jp.LayerNorm(dtype=dt))), (4, 4, 3), {}),
}
PER_EXAMPLE = [name for name in LAYERS if "batchnorm" not in name]  # BatchNorm couples a batch
CASES = [(f"{name}_{dt.__name__}", name, dt) for name in LAYERS for dt in (np.float32, np.float64)]
TOL = {np.float32: dict(rtol=2e-5, atol=2e-5), np.float64: dict(rtol=1e-10, atol=1e-11)}


def randomize(tree, seed, dtype):
    """Every float leaf replaced by random values (variances stay positive)."""
    rng = np.random.default_rng(seed)
    leaves, treedef = jax.tree.flatten(tree)
    leaves = [jnp.asarray(rng.uniform(0.5, 2.0, np.shape(a)) if i % 2 else
                          rng.normal(size=np.shape(a)), dtype) for i, a in enumerate(leaves)]
    return jax.tree.unflatten(treedef, leaves)


def setup(name, dtype, batch=(3,)):
    """``(layer, params, state, x, dy, forward keywords)`` with random params and state."""
    make, shape, kwargs = LAYERS[name]
    layer = make(dtype)
    params, state, out_shape = layer.init(jax.random.key(0), shape)
    params, state = randomize(params, 1, dtype), randomize(state, 2, dtype)
    rng = np.random.default_rng(4)
    x = jnp.asarray(rng.normal(size=(*batch, *shape)), dtype)
    dy = jnp.asarray(rng.normal(size=(*batch, *out_shape)), dtype)
    return layer, params, state, x, dy, kwargs


class LayerBackwardTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(*CASES)
    def test_backward_matches_jax_vjp(self, name, dtype):
        with x64_if_float64(dtype):
            layer, params, state, x, dy, kw = setup(name, dtype)
            assert_backward_matches_vjp(self.variant, layer, params, state, x, dy, TOL[dtype],
                                        **kw)


@pytest.mark.long
@pytest.mark.x64
@pytest.mark.parametrize("name", list(LAYERS))
def test_backward_matches_finite_differences(name):
    layer, params, state, x, _, kw = setup(name, np.float64)
    assert_backward_matches_finite_differences(layer, params, state, x, rtol=1e-6, atol=1e-7,
                                               **kw)


@pytest.mark.long
@pytest.mark.parametrize("name", list(LAYERS))
def test_init_shape_agrees_with_forward(name):
    """stax's shape test: init's out_shape is what forward gives, for any leading axes."""
    make, shape, kw = LAYERS[name]
    layer = make(np.float32)
    params, state, out_shape = layer.init(jax.random.key(0), shape)
    for batch in ((2,), (2, 3)):
        x = jnp.ones((*batch, *shape), jnp.float32)
        y = jax.eval_shape(lambda p, s, x: layer.forward(p, s, x, **kw)[0], params, state, x)
        assert y.shape == (*batch, *out_shape) and y.dtype == jnp.float32, (batch, y)


@pytest.mark.long
@pytest.mark.parametrize("name", PER_EXAMPLE)
def test_per_example_gradients_under_vmap(name):
    """Each example on its own (no batch axis) under jax.vmap: its gradient is jax.vjp's, and
    for a deterministic layer the examples' gradients add up to the batch gradient."""
    layer, params, state, x, dy, kw = setup(name, np.float32, batch=(4,))
    keys = jax.random.split(jax.random.key(5), 4)

    def hand(x, dy, key):
        y, residuals, _ = layer.forward(params, state, x, **{**kw, "key": key})
        return layer.backward(params, residuals, dy)

    def reference(x, dy, key):
        _, vjp = jax.vjp(lambda p, x: layer.forward(p, state, x, **{**kw, "key": key})[0],
                         params, x)
        return vjp(dy)

    with jax.default_matmul_precision("highest"):
        got = jax.jit(jax.vmap(hand))(x, dy, keys)
        want = jax.jit(jax.vmap(reference))(x, dy, keys)
        chex.assert_trees_all_close(got, want, rtol=2e-5, atol=2e-5)
        if "key" not in kw:
            y, residuals, _ = layer.forward(params, state, x, **kw)
            dparams, dx = layer.backward(params, residuals, dy)
            chex.assert_trees_all_close(jax.tree.map(lambda g: g.sum(0), got[0]), dparams,
                                        rtol=2e-5, atol=2e-5)
            chex.assert_trees_all_close(got[1], dx, rtol=2e-5, atol=2e-5)


# ------------------------------------------------------------------ convolutions, at random


@st.composite
def conv_configs(draw):
    k = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    s = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    d = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = draw(st.one_of(st.sampled_from(["SAME", "VALID"]), st.integers(0, 3),
                             st.tuples(st.tuples(st.integers(0, 3), st.integers(0, 3)),
                                       st.tuples(st.integers(0, 3), st.integers(0, 3)))))
    span = [(ki - 1) * di + 1 for ki, di in zip(k, d, strict=True)]
    hw = (draw(st.integers(span[0], span[0] + 5)), draw(st.integers(span[1], span[1] + 5)))
    return k, s, d, padding, hw, draw(st.integers(1, 3)), draw(st.integers(1, 3))


def hand_and_reference(layer):
    """One compiled program: the hand-written ``(dparams, dx)`` and jax.vjp's."""

    def both(params, x, dy):
        _, residuals, _ = layer.forward(params, (), x)
        _, vjp = jax.vjp(lambda p, x: layer.forward(p, (), x)[0], params, x)
        return layer.backward(params, residuals, dy), vjp(dy)

    return jax.jit(both)


@pytest.mark.x64
@settings(max_examples=15, deadline=None)
@given(conv_configs())
def test_conv_backward_matches_jax_vjp_for_random_geometry(config):
    k, s, d, padding, hw, c_in, c_out = config
    layer = jp.Conv2D(c_out, k, strides=s, padding=padding, dilation=d, dtype=jnp.float64)
    rng = np.random.default_rng(1)
    params = {"W": jnp.asarray(rng.normal(size=(*k, c_in, c_out))),
              "b": jnp.asarray(rng.normal(size=(c_out,)))}  # no eager init: one compilation
    x = jnp.asarray(rng.normal(size=(2, *hw, c_in)))
    y = jax.eval_shape(lambda p, x: layer.forward(p, (), x)[0], params, x)
    dy = jnp.asarray(rng.normal(size=y.shape))
    got, want = hand_and_reference(layer)(params, x, dy)
    chex.assert_trees_all_close(got, want, rtol=1e-10, atol=1e-11)


@pytest.mark.x64
@settings(max_examples=12, deadline=None)
@given(st.sampled_from(["max", "avg"]), st.integers(1, 3), st.integers(1, 3),
       st.integers(1, 3), st.sampled_from(["SAME", "VALID", 0, 1]), st.integers(3, 7))
def test_pool_backward_matches_jax_vjp_for_random_geometry(kind, kh, kw, stride, padding, side):
    make = jp.MaxPool2D if kind == "max" else jp.AvgPool2D
    if padding == 1 and min(kh, kw) < 2:
        padding = 0  # padding must be smaller than the window
    layer = make((kh, kw), stride, padding)
    _, _, out_shape = layer.init(None, (side, side + 1, 2))
    rng = np.random.default_rng(kh * 10 + kw)
    x = jnp.asarray(rng.normal(size=(2, side, side + 1, 2)))
    dy = jnp.asarray(rng.normal(size=(2, *out_shape)))
    got, want = hand_and_reference(layer)((), x, dy)
    chex.assert_trees_all_close(got, want, rtol=1e-10, atol=1e-11)


# ------------------------------------------------------------------ what each layer promises


def test_conv_is_cross_correlation_with_hwio_kernel():
    layer = jp.Conv2D(1, (2, 2), padding="VALID")
    W = jnp.asarray([[1.0, 2.0], [3.0, 4.0]]).reshape(2, 2, 1, 1)
    x = jnp.arange(9.0).reshape(1, 3, 3, 1)
    y, _, _ = layer.forward({"W": W, "b": jnp.asarray([0.5])}, (), x)
    # top-left window [[0, 1], [3, 4]] . [[1, 2], [3, 4]] = 0 + 2 + 9 + 16 = 27, plus 0.5
    np.testing.assert_allclose(np.asarray(y)[0, :, :, 0], [[27.5, 37.5], [57.5, 67.5]])


def test_maxpool_gives_ties_to_the_first_position_in_row_major_order():
    layer = jp.MaxPool2D(2)
    x = jnp.asarray([[1.0, 3.0, 0.0, 0.0],
                     [3.0, 3.0, 0.0, 0.0]]).reshape(1, 2, 4, 1)
    y, residuals, _ = layer.forward((), (), x)
    np.testing.assert_array_equal(np.asarray(y).ravel(), [3.0, 0.0])
    _, dx = layer.backward((), residuals, jnp.asarray([10.0, 20.0]).reshape(1, 1, 2, 1))
    np.testing.assert_array_equal(np.asarray(dx)[0, :, :, 0], [[0, 10, 20, 0], [0, 0, 0, 0]])


def test_overlapping_max_windows_add_their_gradients():
    layer = jp.MaxPool2D(2, strides=1)
    x = jnp.asarray([[0.0, 0.0, 0.0], [0.0, 9.0, 0.0], [0.0, 0.0, 0.0]]).reshape(1, 3, 3, 1)
    y, residuals, _ = layer.forward((), (), x)
    _, dx = layer.backward((), residuals, jnp.ones_like(y))
    assert float(dx[0, 1, 1, 0]) == 4.0 and float(jnp.sum(dx)) == 4.0  # the centre, 4 windows


def test_avgpool_counts_padding_as_zeros():
    layer = jp.AvgPool2D(2, padding=1)
    y, _, _ = layer.forward((), (), jnp.ones((1, 2, 2, 1)))
    np.testing.assert_allclose(np.asarray(y)[0, :, :, 0], 0.25)  # one real value per window


def test_dropout_masks_in_training_and_is_the_identity_in_evaluation():
    layer = jp.Dropout(0.25)
    x = jnp.ones((400, 50))
    y, scale, _ = layer.forward((), (), x, key=jax.random.key(0), train=True)
    values = set(np.unique(np.asarray(y)).tolist())
    assert values == {0.0, float(np.float32(1 / 0.75))}
    assert abs(float(jnp.mean(y == 0)) - 0.25) < 0.02
    _, dx = layer.backward((), scale, jnp.full_like(x, 2.0))
    np.testing.assert_array_equal(np.asarray(dx), 2.0 * np.asarray(y))  # the same mask
    y2, _, _ = layer.forward((), (), x, key=jax.random.key(1), train=True)
    assert not np.array_equal(np.asarray(y), np.asarray(y2))
    y_eval, r, _ = layer.forward((), (), x, train=False)
    np.testing.assert_array_equal(np.asarray(y_eval), np.asarray(x))
    assert layer.backward((), r, x)[1] is x
    with pytest.raises(ValueError, match="needs a PRNG key"):
        layer.forward((), (), x, train=True)


def test_batchnorm_statistics_state_and_evaluation():
    layer = jp.BatchNorm(momentum=0.5)
    assert layer.couples_batch
    params, state, _ = layer.init(None, (2, 2, 3))
    x = jnp.asarray(np.random.default_rng(0).normal(3.0, 2.0, (8, 2, 2, 3)), jnp.float32)
    y, _, new = layer.forward(params, state, x, train=True)
    np.testing.assert_allclose(np.asarray(y).mean(axis=(0, 1, 2)), 0.0, atol=1e-5)
    np.testing.assert_allclose(np.asarray(y).std(axis=(0, 1, 2)), 1.0, atol=1e-3)
    mean, var = np.asarray(x).mean(axis=(0, 1, 2)), np.asarray(x).var(axis=(0, 1, 2))
    np.testing.assert_allclose(new["mean"], 0.5 * mean, rtol=1e-5)
    np.testing.assert_allclose(new["var"], 0.5 + 0.5 * var, rtol=1e-5)
    y_eval, _, same = layer.forward(params, new, x, train=False)
    assert same is new
    np.testing.assert_allclose(y_eval, (x - new["mean"]) / np.sqrt(new["var"] + 1e-5),
                               rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="init_with_state"):
        layer.forward(params, (), x)
    model = jp.serial(jp.Dense(3), layer, in_shape=(4,))
    with pytest.raises(ValueError, match="couples the examples"):
        jp.per_example_grads(model, "mse", model.init_with_state(jax.random.key(0))[0],
                             np.ones((2, 4), np.float32), np.ones((2, 3), np.float32))


def test_layernorm_normalises_each_example():
    layer = jp.LayerNorm()
    params, _, _ = layer.init(None, (6,))
    x = jnp.asarray(np.random.default_rng(0).normal(5.0, 3.0, (4, 6)), jnp.float32)
    y, _, _ = layer.forward(params, (), x)
    np.testing.assert_allclose(np.asarray(y).mean(-1), 0.0, atol=1e-5)
    np.testing.assert_allclose(np.asarray(y).std(-1), 1.0, atol=1e-3)


def test_residual_adds_both_paths_and_has_the_blocks_params_and_state():
    block = jp.serial(jp.Dense(3), jp.BatchNorm())
    layer = jp.Residual(block)
    params, state, shape = layer.init(jax.random.key(0), (3,))
    assert shape == (3,) and len(params) == 2 and "mean" in state[1] and layer.couples_batch
    dense = jp.Dense(3)
    p = dense.init(jax.random.key(1), (3,))[0]
    res = jp.Residual(dense)
    x, dy = jnp.ones((2, 3)), jnp.asarray([[1.0, 2.0, 3.0], [0.0, 1.0, 0.0]])
    y, r, _ = res.forward(p, (), x)
    np.testing.assert_allclose(y, x + x @ p["W"] + p["b"], rtol=1e-6)
    grads, dx = res.backward(p, r, dy)
    np.testing.assert_allclose(dx, dy + dy @ p["W"].T, rtol=1e-6)
    chex.assert_trees_all_close(grads, dense.backward(p, x, dy)[0])
    with pytest.raises(ValueError, match="needs the same shape"):
        jp.Residual(jp.Dense(4)).init(jax.random.key(0), (3,))


@pytest.mark.parametrize("make, shape, message", [
    (lambda: jp.Conv2D(4, 3), (64,), r"images of shape \(H, W, C\)"),
    (lambda: jp.Conv2D(4, 5, padding="VALID"), (3, 3, 1), "smaller than the kernel"),
    (lambda: jp.MaxPool2D(2), (8,), r"images of shape \(H, W, C\)"),
    (lambda: jp.MaxPool2D(2, padding=2), (4, 4, 1), "smaller than the window"),
    (lambda: jp.Flatten(), (64,), "examples with 3 axes"),
    (lambda: jp.Reshape((3, 3)), (8,), "cannot reshape"),
])
def test_bad_shapes_are_named_at_init(make, shape, message):
    with pytest.raises(ValueError, match=message):
        make().init(jax.random.key(0), shape)


@pytest.mark.parametrize("make, message", [
    (lambda: jp.Conv2D(0, 3), "features"),
    (lambda: jp.Conv2D(4, 0), "kernel_size"),
    (lambda: jp.Conv2D(4, 3, padding="FULL"), "padding"),
    (lambda: jp.Conv2D(4, 3, strides=(1, 2, 3)), "strides"),
    (lambda: jp.MaxPool2D(-1), "window"),
    (lambda: jp.Dropout(1.0), "rate"),
    (lambda: jp.BatchNorm(momentum=1.5), "momentum"),
    (lambda: jp.LayerNorm(eps=0), "eps"),
    (lambda: jp.Reshape((2, -1, -1)), "shape"),
    (lambda: jp.Residual("dense"), "Residual"),
])
def test_bad_arguments_are_named(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_conv_input_with_the_wrong_channels_is_named():
    layer = jp.Conv2D(4, 3)
    params, _, _ = layer.init(jax.random.key(0), (5, 5, 3))
    with pytest.raises(ValueError, match=r"expected \(\.\.\., H, W, 3\)"):
        layer.forward(params, (), jnp.ones((2, 5, 5, 1)))


@pytest.mark.long
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("name", list(LAYERS))
def test_every_layer_passes_check_layer(name, dtype):
    """The user-facing check (issue 9) on every layer here: vs jax.vjp in float32 and float64
    and finite differences, at perturbed params, in training and evaluation mode."""
    make, shape, kwargs = LAYERS[name]
    modes = (kwargs["train"],) if "train" in kwargs else (True, False)
    for train in modes:
        report = jp.check_layer(make(dtype), shape, dtype=dtype, train=train, batch=3)
        assert report.ok, str(report)
