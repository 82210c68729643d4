"""Every layer's hand-written backward against jax.vjp (float32/float64, with and without jit),
against finite differences in float64, and stax-style shape agreement of init and forward."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

import jaxprop as jp
from jaxprop.core.network import default_init
from layer_checks import (
    assert_backward_matches_finite_differences,
    assert_backward_matches_vjp,
    x64_if_float64,
)

# name -> constructor; every activation in ACTIVATIONS, Dense, and a LeakyRelu with its own slope
LAYERS = {
    "dense": lambda dtype: jp.Dense(5, dtype=dtype),
    **{name: (lambda name: lambda dtype: jp.activation(name))(name) for name in jp.ACTIVATIONS},
    "leaky_relu_0.2": lambda dtype: jp.LeakyRelu(0.2),
}
CASES = [(f"{name}_{dt.__name__}", name, dt) for name in LAYERS for dt in (np.float32, np.float64)]
TOL = {np.float32: dict(rtol=1e-5, atol=1e-6), np.float64: dict(rtol=1e-10, atol=1e-12)}


def away_from_kinks(seed, shape, dtype):
    """Standard-normal values pushed at least 0.1 away from 0 (relu/leaky_relu kinks).

    Drawn with NumPy: eager jax.random would compile once per shape and dtype."""
    n = np.random.default_rng(seed).normal(size=shape)
    return jnp.asarray(np.sign(n) * (0.1 + np.abs(n)), dtype)


def setup(name, dtype, batch=(3,)):
    layer = LAYERS[name](dtype)
    params, _, out_shape = layer.init(jax.random.key(0), (4,))
    x = away_from_kinks(1, (*batch, 4), dtype)
    dy = jnp.asarray(np.random.default_rng(2).normal(size=(*batch, *out_shape)), dtype)
    return layer, params, x, dy


class LayerBackwardTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(*CASES)
    def test_backward_matches_jax_vjp(self, name, dtype):
        with x64_if_float64(dtype):
            layer, params, x, dy = setup(name, dtype)
            assert_backward_matches_vjp(self.variant, layer, params, (), x, dy, TOL[dtype])


@pytest.mark.x64
@pytest.mark.parametrize("name", list(LAYERS))
def test_backward_matches_finite_differences(name):
    layer, params, x, dy = setup(name, np.float64)
    assert_backward_matches_finite_differences(layer, params, (), x, rtol=1e-7, atol=1e-8)


@pytest.mark.parametrize("name", list(LAYERS))
@pytest.mark.parametrize("in_shape", [(4,), (2, 4)])
@pytest.mark.parametrize("batch", [(), (3,), (2, 3)], ids=str)
def test_init_out_shape_matches_forward(name, in_shape, batch):
    layer = LAYERS[name](np.float32)
    params, state, out_shape = layer.init(jax.random.key(1), in_shape)
    assert state == ()
    x = away_from_kinks(3, (*batch, *in_shape), np.float32)
    y, residuals, new_state = layer.forward(params, state, x)
    assert new_state == ()
    assert y.shape == (*batch, *out_shape)
    dparams, dx = layer.backward(params, residuals, jnp.ones_like(y))
    assert dx.shape == x.shape
    chex.assert_trees_all_equal_shapes(dparams, params)


def test_nested_model_is_a_layer_with_agreeing_shapes():
    inner = jp.mlp([4, 6, 3], "tanh", "identity")
    model = jp.serial(inner, jp.Dense(2), jp.activation("sigmoid"), in_shape=(4,))
    params, _, out_shape = model.init(jax.random.key(0), (4,))
    assert out_shape == (2,)
    for batch in [(), (5,)]:
        x = jnp.ones((*batch, 4), jnp.float32)
        assert model.apply(params, x).shape == (*batch, 2)


@pytest.mark.x64
def test_leaky_relu_custom_slope_is_used():
    layer = jp.LeakyRelu(0.2)
    x = jnp.array([-2.0, 3.0], jnp.float64)
    y, r, _ = layer.forward((), (), x)
    chex.assert_trees_all_close(y, jnp.array([-0.4, 3.0]))
    _, dx = layer.backward((), r, jnp.ones_like(x))
    chex.assert_trees_all_close(dx, jnp.array([0.2, 1.0]))


RELU_FAMILY = ("relu", "leaky_relu", "gelu", "gelu_tanh")


@pytest.mark.parametrize("name", list(jp.ACTIVATIONS))
def test_activations_carry_their_facts(name):
    """Each activation says it is one and which initializer suits the weights before it; the
    network reads these facts (default_init, --model's output activation), never the name."""
    layer = jp.activation(name)
    assert layer.is_activation
    assert layer.preferred_init == ("he" if name in RELU_FAMILY else None)
    assert default_init(name) == default_init(layer) == ("he" if name in RELU_FAMILY
                                                         else "glorot")


def test_other_layers_are_not_activations():
    for layer in (jp.Dense(3), jp.Flatten(), jp.Dropout(0.5), jp.mlp([2, 3, 1], "relu",
                                                                    "identity")):
        assert not layer.is_activation and layer.preferred_init is None
    assert jp.LeakyRelu(0.2).is_activation and jp.LeakyRelu(0.2).preferred_init == "he"
    swish = jp.elementwise("swish", lambda x: (x * jax.nn.sigmoid(x), x), lambda x, dy: dy,
                           preferred_init="he_uniform")
    assert swish.is_activation and default_init(swish) == "he_uniform"


@pytest.mark.parametrize("act, init", [("relu", "he"), ("tanh", "glorot")])
def test_mlp_initializes_from_the_first_hidden_activation(act, init):
    key = jax.random.key(0)
    chex.assert_trees_all_equal(jp.mlp([3, 4, 2], act, "identity").init(key),
                                jp.mlp([3, 4, 2], act, "identity", init=init).init(key))


def test_layer_arguments_follow_the_shared_integer_and_number_policy():
    """core.validate's policy: NumPy integers and numbers count, booleans never do."""
    assert jp.Dense(np.int64(3)).name == "Dense(3)" and jp.Dense(np.int64(3)).spec == "dense(3)"
    assert jp.Flatten(np.int32(2)).spec == "flatten(2)"
    assert jp.Dropout(np.float32(0.5)).spec == "dropout(0.5)"
    assert jp.mlp([np.int64(2), 3, 1], "tanh", "identity").in_shape == (2,)
    for bad in (lambda: jp.Dense(True), lambda: jp.Flatten(True), lambda: jp.Dropout(True),
                lambda: jp.Reshape((2, True)), lambda: jp.BatchNorm(momentum=True),
                lambda: jp.LayerNorm(eps=True), lambda: jp.Conv2D(True, 3),
                lambda: jp.mlp([2, True, 1], "tanh", "identity")):
        with pytest.raises(ValueError, match="must be"):
            bad()
