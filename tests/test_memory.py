"""Sizes that cannot fit are refused from their shapes, before anything is allocated or written
(issue #22): jp.fit, fit_population and `jaxprop train` say the estimate and the limit."""

from __future__ import annotations


import jax
import numpy as np
import optax
import pytest

import jaxprop as jp
from jaxprop.train import memory
from jaxprop.train.memory import InsufficientMemory, training_bytes

X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32)
T = np.array([[0], [1], [1], [0]], np.float32)
HUGE = "dense(50000)-relu-dense(50000)-relu-dense(1)-sigmoid"  # 2.5e9 params: 10 GB each copy


@pytest.fixture
def one_gib(monkeypatch):
    """A machine with 1 GiB free, whatever this one has."""
    monkeypatch.setattr(memory, "device_memory_bytes", lambda: 1 << 30)


def test_the_estimate_counts_params_optimizer_and_activations():
    model = jp.parse_model("dense(100)-relu-dense(10)", (20,))
    params = 20 * 100 + 100 + 100 * 10 + 10
    sgd = training_bytes(model, optax.sgd(0.1), (20,), 1)
    adam = training_bytes(model, optax.adam(0.1), (20,), 1)
    assert sgd >= 4 * 4 * params and adam - sgd >= 2 * 4 * params  # adam's two moments
    # activations grow with the batch, params do not
    more = training_bytes(model, optax.sgd(0.1), (20,), 1001)
    assert more - sgd >= 1000 * 4 * (20 + 100 + 10)


def test_fit_refuses_a_model_that_cannot_fit_before_allocating(one_gib):
    with pytest.raises(InsufficientMemory, match=r"out of memory: training this model needs "
                                                 r"about [\d.,]+ GiB, more than the 1.0 GiB"):
        jp.fit(jp.parse_model(HUGE, (2,)), "sse_half", 0.1, (X, T), epochs=1,
               key=jax.random.key(0))


def test_a_model_that_fits_trains(one_gib):
    params, _ = jp.fit(jp.parse_model("dense(4)-tanh-dense(1)-sigmoid", (2,)), "sse_half", 0.1,
                       (X, T), epochs=2, key=jax.random.key(0))
    assert params


def test_population_refuses_too_many_networks(one_gib):
    with pytest.raises(InsufficientMemory, match="a population of 100,000 networks"):
        jp.fit_population(jp.parse_model("dense(64)-relu-dense(64)-relu-dense(1)-sigmoid", (2,)),
                          "sse_half", 0.1, (X, T), n=100_000, epochs=1)


@pytest.mark.parametrize("args", [
    ["--dataset", "xor", "--model", HUGE],
    ["--dataset", "digits", "--model", "conv(100000000,3)-flatten-dense(10)"],
])
def test_train_refuses_and_leaves_no_folder_and_no_lock(tmp_path, capsys, one_gib, args):
    from jaxprop.cli import main

    out = tmp_path / "run"
    assert main(["train", *args, "--epochs", "1", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("jaxprop: error: out of memory: training this model needs about")
    assert len(err.splitlines()) == 1
    assert not out.exists()


def test_an_address_space_limit_bounds_the_host_memory(monkeypatch):
    import resource

    from jaxprop import device

    monkeypatch.setattr(device, "memory", lambda d: None)  # a CPU
    free = device.device_memory_bytes()
    monkeypatch.setattr(resource, "getrlimit", lambda what: (1 << 33, resource.RLIM_INFINITY))
    limited = device.device_memory_bytes()
    assert limited < 1 << 33 and (free is None or limited <= free)
    monkeypatch.setattr(resource, "getrlimit", lambda what: (1 << 20, resource.RLIM_INFINITY))
    assert device.device_memory_bytes() == 0  # the process is already larger than 1 MiB


def test_the_estimate_traces_nothing_on_the_device(monkeypatch):
    """Shapes only: a model of 10 GB per copy is estimated without allocating it."""
    model = jp.parse_model(HUGE, (2,))
    need = training_bytes(model, optax.adam(1e-3), (2,), 4, 4)  # 40 GB of params: not made
    assert need > 4 * 4 * 50_000 * 50_000


def test_a_deep_model_is_announced_before_its_long_compilation():
    from jaxprop.cli.train import compile_note

    deep = "-".join(["dense(2)"] * 2000) + "-dense(1)-sigmoid"
    assert compile_note({"model": deep}) == ("jaxprop: 2,002 layers: XLA compiles the training "
                                             "program for about 3 min or more before the "
                                             "first epoch")
    assert compile_note({"model": "dense(4)-tanh-dense(1)"}) is None
    assert compile_note({"hidden": [64, 64]}) is None


def test_a_deep_model_initialises_op_by_op_to_the_same_params():
    """Compiling the initialisation of a 200-layer MLP took 17.7 s (0.4 s op by op): a model
    of many params leaves is initialised op by op, to what model.init gives."""
    from jaxprop.train.step import init_state

    model = jp.parse_model("-".join(["dense(2)-tanh"] * 200) + "-dense(1)-sigmoid", (2,))
    state = init_state(model, optax.sgd(0.1), jax.random.key(0))
    k_init, _ = jax.random.split(jax.random.key(0))
    expected = model.init(k_init, (2,))[0]
    assert len(jax.tree.leaves(state.params)) == 402
    jax.tree.map(np.testing.assert_array_equal, state.params, expected)
