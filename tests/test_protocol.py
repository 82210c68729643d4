"""Layer protocol v2: keys split per layer and per step, state threaded through serial and
training, evaluation mode, nesting, and checkpoints that carry the state."""

import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxprop as jp
from jaxprop import checkpoint
from jaxprop.data import load
from jaxprop.train import TrainState, init_state


def Noise():
    """Adds N(0, 1) noise drawn from its key in training; the identity in evaluation."""

    def init(key, in_shape):
        return (), (), tuple(in_shape)

    def forward(params, state, x, *, key=None, train=True):
        if not train:
            return x, None, state
        return x + jax.random.normal(key, x.shape, x.dtype), None, state

    return jp.Layer(init, forward, lambda p, r, dy: ((), dy), name="noise")


def Count():
    """Counts the forward passes made in training in its state."""

    def init(key, in_shape):
        return (), {"n": jnp.zeros((), jnp.int32)}, tuple(in_shape)

    def forward(params, state, x, *, key=None, train=True):
        return x, None, {"n": state["n"] + 1} if train else state

    return jp.Layer(init, forward, lambda p, r, dy: ((), dy), name="count")


def test_serial_is_a_layer_that_splits_keys_and_threads_state():
    inner = jp.serial(Noise(), Count(), jp.Dense(3))
    model = jp.serial(Noise(), inner, jp.Tanh(), in_shape=(3,))
    assert isinstance(model, jp.Layer) and isinstance(inner, jp.Layer)
    params, state, out_shape = model.init(jax.random.key(0), (3,))
    assert out_shape == (3,) and len(params) == len(state) == 3
    assert int(state[1][1]["n"]) == 0
    x = jnp.zeros((2, 3))
    y1, _, s1 = model.forward(params, state, x, key=jax.random.key(1))
    y2, _, _ = model.forward(params, state, x, key=jax.random.key(2))
    assert int(s1[1][1]["n"]) == 1 and not np.allclose(y1, y2)
    # the two Noise layers got different keys: the outer noise is not the inner noise
    outer = model.forward_trace(params, state, x, key=jax.random.key(1))[0][0]
    keys = jax.random.split(jax.random.key(1), 3)
    np.testing.assert_allclose(outer, jax.random.normal(keys[0], x.shape))
    y_eval, _, s_eval = model.forward(params, state, x, train=False)
    assert int(s_eval[1][1]["n"]) == 0
    np.testing.assert_allclose(y_eval, model.apply(params, x, state))


def test_init_shortcut_and_init_with_state():
    plain = jp.mlp([2, 3, 1], "sigmoid", "sigmoid")
    assert isinstance(plain.init(jax.random.key(0)), list)
    stateful = jp.serial(Count(), jp.Dense(1), in_shape=(2,))
    with pytest.raises(ValueError, match="init_with_state"):
        stateful.init(jax.random.key(0))
    params, state = stateful.init_with_state(jax.random.key(0))
    assert int(state[0]["n"]) == 0 and params[1]["W"].shape == (2, 1)


def test_training_carries_model_state_and_evaluates_without_training_mode():
    ds = load("moons", seed=0, n_samples=64)
    model = jp.serial(Count(), Noise(), jp.Dense(8), jp.Tanh(), jp.Dense(1), in_shape=(2,))
    state, history = jp.fit_state(model, "bce_with_logits", optax.adam(1e-2), ds, epochs=3,
                                  batch_size=17, drop_last=True, key=jax.random.key(0))
    assert isinstance(state, TrainState)
    assert int(state.model_state[0]["n"]) == 3 * (len(ds.x_train) // 17)  # one per step
    evaluate = jp.make_eval_fn(model, "bce_with_logits")
    loss, _ = evaluate(state.params, ds.x_test, ds.y_test, state.model_state)
    np.testing.assert_allclose(history.records[-1]["test_loss"], loss, rtol=1e-6)


def test_each_step_draws_its_own_key_and_a_resumed_run_is_bit_identical(tmp_path):
    ds = load("moons", seed=1, n_samples=80)
    model = jp.serial(jp.Dense(8), Noise(), jp.Tanh(), jp.Dense(1), in_shape=(2,))
    opt = optax.adam(1e-2)
    kw = dict(batch_size=16, log_every=2, key=jax.random.key(3))
    full, _ = jp.fit_state(model, "bce_with_logits", opt, ds, epochs=6, **kw)
    part, _ = jp.fit_state(model, "bce_with_logits", opt, ds, epochs=3, **kw)
    checkpoint.save(tmp_path, part, {})
    restored = checkpoint.load(tmp_path).restore(init_state(model, opt, jax.random.key(9)))
    resumed, _ = jp.fit_state(model, "bce_with_logits", opt, ds, epochs=6, state=restored,
                              batch_size=16, log_every=2)
    chex.assert_trees_all_equal(resumed.params, full.params)
    keys = [jax.random.key_data(jp.train.step_key(jax.random.key(0), s)) for s in range(3)]
    assert len({tuple(np.asarray(k).ravel()) for k in keys}) == 3


def test_checkpoint_carries_model_state_and_reads_version_1(tmp_path):
    model = jp.serial(Count(), jp.Dense(2), in_shape=(3,))
    opt = optax.sgd(0.1)
    state = init_state(model, opt, jax.random.key(0))
    state = state._replace(model_state=[{"n": jnp.asarray(7, jnp.int32)}, ()])
    path = checkpoint.save(tmp_path, state, {"run": 1})
    restored = checkpoint.load(path).restore(init_state(model, opt, jax.random.key(1)))
    assert int(restored.model_state[0]["n"]) == 7

    # version-1 files (no model state): load for a model without state, else a clear error
    plain = jp.mlp([3, 2], "relu", "identity")
    v1 = _as_version_1(checkpoint.save(tmp_path / "plain.npz",
                                       init_state(plain, opt, jax.random.key(0)), {}))
    restored = checkpoint.load(v1).restore(init_state(plain, opt, jax.random.key(1)))
    assert restored.model_state == [(), ()]
    v1 = _as_version_1(path)
    with pytest.raises(ValueError, match="version 1 holds no model state"):
        checkpoint.load(v1).restore(init_state(model, opt, jax.random.key(1)))


def _as_version_1(path):
    """Rewrite a checkpoint as format version 1 wrote it: no model state."""
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files if not k.startswith("model_state")}
    header = json.loads(arrays["__header__"].tobytes())
    header["version"] = 1
    del header["trees"]["model_state"]
    arrays["__header__"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    np.savez(path, **arrays)
    return path


def test_loss_facts_replace_names():
    facts = {name: (loss.reduction, loss.from_logits, loss.categorical, loss.input_range)
             for name, loss in jp.LOSSES.items()}
    assert facts == {
        "sse_half": ("sum", False, False, None),
        "mse": ("mean_all", False, False, None),
        "bce": ("mean_all", False, False, (0, 1)),
        "bce_with_logits": ("mean_all", True, False, None),
        "softmax_cross_entropy": ("mean_rows", True, True, None),
        "sparse_softmax_cross_entropy": ("mean_rows", True, False, None),
    }
    assert [n for n, loss in jp.LOSSES.items() if loss.integer_labels] == [
        "sparse_softmax_cross_entropy"]
    with pytest.raises(ValueError, match="takes probabilities"):
        jp.check_output_fits_loss(jp.mlp([2, 1], output_activation="identity"), "bce")
    with pytest.raises(ValueError, match="takes logits"):
        jp.check_output_fits_loss(jp.mlp([2, 3], output_activation="softmax"),
                                  "softmax_cross_entropy")
    jp.check_output_fits_loss(jp.mlp([2, 1], output_activation="sigmoid"), "bce")
