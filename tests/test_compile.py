"""The automatic compile choices (jaxprop.train.compile): one FLOP count for fit and populations,
counted on the traced program and remembered, and the choices it gives the bundled cases."""

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxprop as jp
from jaxprop.scale.population import population_compiler_options, population_threads
from jaxprop.train.compile import (
    AUTO_FAST_COMPILE_RUN_FLOPS,
    FAST_COMPILE,
    auto_compiler_options,
    auto_unroll,
    forward_flops,
    step_flops,
)

SINGLE_THREAD = {"xla_cpu_multi_thread_eigen": False}
CNN = "conv(16,3)-relu-maxpool(2)-conv(32,3)-relu-flatten-dense(64)-relu-dropout(0.2)-dense(10)"


def _counted(model, in_shape):
    """``(n_params, forward FLOPs of one example)`` of ``model``, as fit and populations count."""
    params, state = model.init_with_state(jax.random.key(0))
    n_params = sum(int(np.size(a)) for a in jax.tree.leaves(params))
    return n_params, forward_flops(model, params, state,
                                   jax.ShapeDtypeStruct((1, *in_shape), jnp.float32))


def test_step_flops_is_three_forward_passes_or_six_per_parameter_when_unknown():
    assert step_flops(17, 76.0) == 228.0
    assert step_flops(17) == step_flops(17, None) == 102.0


def test_forward_flops_is_remembered_per_model_and_shapes():
    """A second fit or population of the same model and shapes traces nothing."""
    model = jp.mlp([2, 4, 1], "sigmoid", "sigmoid")
    traced = []

    def forward(*args, **kwargs):
        traced.append(1)
        return model.forward(*args, **kwargs)

    counting = dataclasses.replace(model, forward=forward)  # a new model: nothing remembered
    params, state = counting.init_with_state(jax.random.key(0))
    shapes = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), params)
    one = jax.ShapeDtypeStruct((1, 2), jnp.float32)
    first = forward_flops(counting, params, state, one)
    assert first > 0 and len(traced) == 1
    assert forward_flops(counting, shapes, state, one) == first  # arrays or shapes: one key
    assert len(traced) == 1
    forward_flops(counting, params, state, jax.ShapeDtypeStruct((1, 2), jnp.bfloat16))
    assert len(traced) == 2  # other types: counted again


def test_forward_flops_of_an_untraceable_model_is_unknown():
    model = jp.mlp([2, 4, 1], "sigmoid", "sigmoid")
    broken = dataclasses.replace(model, forward=lambda *a, **k: 1 / 0)
    params = model.init(jax.random.key(0))
    assert forward_flops(broken, params, (), jax.ShapeDtypeStruct((1, 2), jnp.float32)) is None
    assert forward_flops(model, ["text"], (), jnp.ones((1, 2))) is None  # not an array


@pytest.mark.long
@pytest.mark.parametrize("name, model, in_shape, n_examples, batch_size, options", [
    ("xor 2-4-1", jp.mlp([2, 4, 1], "sigmoid", "sigmoid"), (2,), 4, None,
     {**FAST_COMPILE, **SINGLE_THREAD}),
    ("digits mlp", jp.mlp([64, 64, 64, 10], "relu", "identity"), (64,), 1437, 64, FAST_COMPILE),
    ("digits cnn", jp.parse_model(CNN, (8, 8, 1)), (8, 8, 1), 1437, 64, None),
])
def test_bundled_cases_keep_their_compile_options(name, model, in_shape, n_examples,
                                                  batch_size, options):
    """fit's choices from the counted program: XOR fast and single-threaded, the digits MLP fast,
    the digits CNN (3x more FLOPs than 6 per parameter) XLA's defaults."""
    n_params, flops = _counted(model, in_shape)
    assert auto_compiler_options(n_params, n_examples, batch_size,
                                 forward_flops=flops) == options, name
    if name == "digits cnn":
        assert step_flops(n_params, flops) > 3 * step_flops(n_params)


def test_populations_count_the_same_flops_as_fit():
    """The population's choices use the step fit uses (step_flops of the counted forward)."""
    n_params, flops = _counted(jp.mlp([2, 4, 1], "sigmoid", "sigmoid"), (2,))
    per_run = step_flops(n_params, flops) * 4
    assert population_compiler_options(n_params, 4, 10, 2, forward_flops=flops) == FAST_COMPILE
    assert population_compiler_options(n_params, 4, 10_000, 1000, forward_flops=flops) is None
    tiny = int(AUTO_FAST_COMPILE_RUN_FLOPS // per_run) - 1  # members x epochs just under it
    assert population_compiler_options(n_params, 4, tiny, 1, forward_flops=flops) is not None
    assert population_compiler_options(n_params, 4, tiny + 2, 1, forward_flops=flops) is None
    assert population_threads(130, n_params, 4, flops) == min(2, os.cpu_count() or 1)
    digits_params, digits_flops = _counted(jp.mlp([64, 64, 64, 10], "relu", "identity"), (64,))
    assert population_threads(1000, digits_params, 64, digits_flops) == 1


def test_auto_unroll_takes_the_counted_step():
    params = jp.mlp([2, 32, 32, 1], "sigmoid", "sigmoid").init(jax.random.key(0))
    assert auto_unroll(params, 4, None, forward_flops=1.0) > 1
    assert auto_unroll(params, 4, None, forward_flops=1e6) == 1  # a step too big to unroll
