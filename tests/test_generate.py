"""``jp.generate``: sampling from any causal Layer that maps int tokens (n, T) to logits
(n, T, V), checked on tiny models written here: the result equals running the model on the
exact sequence so far, window by window; greedy is deterministic; keys make samples
reproducible; bad arguments get one line."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxprop as jp

V = 7


def _cumsum_model():
    """A causal model: the logits at t are row ``(x_0 + ... + x_t) mod V`` of a table, so
    every output depends on the whole prefix (and on where the window starts)."""

    def init(key, in_shape):
        return {"w": jax.random.normal(key, (V, V))}, (), (*in_shape, V)

    def forward(params, state, x, *, key=None, train=True):
        s = jnp.cumsum(x, axis=-1) % V
        return jax.nn.one_hot(s, V) @ params["w"], None, state

    def backward(params, residuals, dy):
        raise NotImplementedError  # generation never differentiates

    return jp.Layer(init, forward, backward, name="cumsum-table")


def _reference(model, params, prompt, tokens, context):
    """Greedy decoding the slow way: the model on the last ``context`` tokens, each step."""
    seq = list(prompt)
    for _ in range(tokens):
        window = jnp.asarray([seq[-context:]], jnp.int32)
        seq.append(int(jnp.argmax(model.forward(params, None, window, train=False)[0][0, -1])))
    return seq[len(prompt):]


@pytest.fixture(scope="module")
def model_params():
    model = _cumsum_model()
    params, _, _ = model.init(jax.random.key(1), (5,))
    return model, params


@pytest.mark.parametrize("prompt", [[3], [1, 2, 3, 4, 5], [6, 5, 4, 3, 2, 1, 0, 1]])
def test_greedy_equals_the_model_on_the_exact_sequence_window_by_window(model_params, prompt):
    model, params = model_params
    out = jp.generate(model, params, np.array(prompt), 9, temperature=0, context=5)
    assert out.shape == (9,) and out.dtype == jnp.int32
    assert out.tolist() == _reference(model, params, prompt, 9, 5)


def test_a_batch_of_prompts_and_reproducible_samples(model_params):
    model, params = model_params
    prompts = np.array([[1, 2], [3, 4], [0, 6]])
    greedy = jp.generate(model, params, prompts, 6, temperature=0, context=4)
    assert greedy.shape == (3, 6)
    for row, prompt in zip(np.asarray(greedy), prompts):
        assert row.tolist() == _reference(model, params, prompt.tolist(), 6, 4)
    a = jp.generate(model, params, prompts, 20, key=jax.random.key(0), context=4)
    b = jp.generate(model, params, prompts, 20, key=jax.random.key(0), context=4)
    c = jp.generate(model, params, prompts, 20, key=jax.random.key(1), context=4)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c) and int(a.min()) >= 0 and int(a.max()) < V
    # a very low temperature samples the most likely token
    cold = jp.generate(model, params, prompts, 6, temperature=1e-4, key=jax.random.key(2),
                       context=4)
    np.testing.assert_array_equal(cold, greedy)


@pytest.mark.parametrize("kwargs, message", [
    (dict(prompt_ids=np.array([], np.int32)), "prompt_ids is empty"),
    (dict(prompt_ids=np.array([1.0, 2.0])), "must be integer token ids"),
    (dict(prompt_ids=np.array([1, 9])), r"token 9, outside the model's vocabulary 0..6"),
    (dict(temperature=-1.0), "temperature must be a non-negative number"),
    (dict(temperature=1.0, key=None), "needs a key"),
    (dict(tokens=0), "tokens must be >= 1"),
])
def test_bad_arguments_get_one_line(model_params, kwargs, message):
    model, params = model_params
    call = dict(prompt_ids=np.array([1, 2]), tokens=3, temperature=0.0, key=None, context=4)
    call.update(kwargs)
    with pytest.raises(ValueError, match=message):
        jp.generate(model, params, call.pop("prompt_ids"), call.pop("tokens"), **call)


def test_a_model_without_sequence_logits_is_refused():
    mlp = jp.mlp([4, 3], "relu", "identity")
    params, _, _ = mlp.init(jax.random.key(0), (4,))
    with pytest.raises(ValueError, match="generate"):
        jp.generate(mlp, params, np.array([1, 2]), 2, temperature=0, context=4)


@pytest.fixture(scope="module")
def tiny_gpt():
    """A two-block GPT with N(0, 0.5^2) params drawn on the host (no init programs)."""
    model = jp.gpt(V, blocks=2, features=8, heads=2, context=5)
    rng = np.random.default_rng(0)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0)))
    return model, jax.tree.map(lambda s: (0.5 * rng.standard_normal(s.shape)).astype(s.dtype),
                               shapes)


@pytest.mark.parametrize("shape, kw", [
    ((3, 2), dict(temperature=0)),  # cached steps, then sliding ones
    pytest.param((2, 7), dict(temperature=0), marks=pytest.mark.long),  # cropped: sliding only
    pytest.param((3,), dict(temperature=0.7, key=jax.random.key(2)), marks=pytest.mark.long),
])
def test_kv_cache_gives_the_tokens_of_no_cache(tiny_gpt, shape, kw):
    """A KV cache changes the work, not the tokens: greedy (temperature 0), and sampled with
    the same key; prompts shorter than the window and longer."""
    model, params = tiny_gpt
    prompt = np.random.default_rng(1).integers(0, V, shape)
    plain = jp.generate(model, params, prompt, 8, context=5, **kw)
    cached = jp.generate(model, params, prompt, 8, context=5, cache=True, **kw)
    np.testing.assert_array_equal(cached, plain)


def test_kv_cache_needs_layers_that_can_run_one_position_at_a_time(model_params):
    model, params = model_params  # a layer that mixes positions, without decode
    with pytest.raises(ValueError, match=r"cache=True.*cumsum-table.*one position"):
        jp.generate(model, params, np.array([1, 2]), 3, temperature=0, context=4, cache=True)
