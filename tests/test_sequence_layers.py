"""Sequence layers (Embedding, PositionalEmbedding, CausalSelfAttention), Repeat and gpt: their
hand-written backward passes against jax.vjp and finite differences, the causal mask, the
checks on token ids and lengths, the model text, save/load, training and per-example grads."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxprop as jp

LOSS = "sparse_softmax_cross_entropy"

SEQUENCE_LAYERS = {
    "embed": (lambda: jp.Embedding(7, 3), (5,)),
    "embed_2d": (lambda: jp.Embedding(4, 2), (2, 3)),
    "posembed": (lambda: jp.PositionalEmbedding(6), (5, 4)),
    "attention": (lambda: jp.CausalSelfAttention(2), (5, 4)),
    "attention_head_dim_no_bias": (
        lambda: jp.CausalSelfAttention(3, head_dim=2, use_bias=False), (4, 5)),
    "attention_dropout": (lambda: jp.CausalSelfAttention(2, dropout=0.3), (3, 4)),
}
# layers that existed before, on (B, T, D) sequences
TOKENWISE_LAYERS = {
    "dense": lambda: jp.Dense(3),
    "layernorm": lambda: jp.LayerNorm(),
    "dropout": lambda: jp.Dropout(0.5),
    "gelu": lambda: jp.Gelu(),
    "gelu_tanh": lambda: jp.Gelu(approximate=True),
    "residual": lambda: jp.Residual(jp.serial(jp.LayerNorm(), jp.Dense(4))),
}


def tiny_gpt(blocks=2):
    return jp.gpt(7, blocks=blocks, features=8, heads=2, context=5)


def random_params(model, seed=0):
    """N(0, 0.5^2) params of the model's shapes, drawn on the host (``model.init`` would
    compile a program per shape: seconds for a GPT)."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0)))
    return jax.tree.map(lambda s: jnp.asarray(0.5 * rng.standard_normal(s.shape), s.dtype),
                        shapes)


@pytest.fixture(scope="module")
def mini():
    """A small sequence model (one attention block) and its params, shared."""
    model = jp.serial(jp.Embedding(7, 8), jp.PositionalEmbedding(5),
                      jp.Residual(jp.serial(jp.LayerNorm(), jp.CausalSelfAttention(2))),
                      jp.Gelu(approximate=True), jp.Dense(7), in_shape=(5,))
    return model, random_params(model)


@pytest.fixture(scope="module")
def gpt1():
    """A one-block tiny GPT and its params, shared (its programs compile once)."""
    model = tiny_gpt(blocks=1)
    return model, random_params(model)


def token_data(n=3, vocab=7, T=5, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, vocab, (n, T)), rng.integers(0, vocab, (n, T))


@pytest.mark.parametrize("name, dtype", [
    (name, jnp.float32) for name in sorted(SEQUENCE_LAYERS) if name != "attention_head_dim_no_bias"
] + [(name, jnp.float64) for name in ("embed", "posembed", "attention", "attention_dropout")] + [
    pytest.param("attention_head_dim_no_bias", dtype, marks=pytest.mark.long)
    for dtype in (jnp.float32, jnp.float64)])
def test_sequence_layer_backward_agrees(name, dtype):
    make, in_shape = SEQUENCE_LAYERS[name]
    report = jp.check_layer(make(), in_shape, batch=2, dtype=dtype)
    assert report.ok, report


@pytest.mark.parametrize("name", ["embed", "posembed", "attention"])
def test_sequence_layer_without_a_batch_axis(name):
    make, in_shape = SEQUENCE_LAYERS[name]
    layer = make()
    rng = np.random.default_rng(1)
    x = (jnp.asarray(rng.integers(0, 7, in_shape), jnp.int32) if layer.integer_inputs
         else jnp.asarray(rng.standard_normal(in_shape), jnp.float32))
    report = jp.check_layer(layer, in_shape, x=x)
    assert report.ok, report


@pytest.mark.parametrize("name", sorted(TOKENWISE_LAYERS))
def test_tokenwise_layers_work_on_sequences(name):
    report = jp.check_layer(TOKENWISE_LAYERS[name](), (5, 4), batch=2)
    assert report.ok, report


def test_attention_is_causal():
    """The output at position t does not depend on the inputs after t."""
    layer = jp.CausalSelfAttention(2)
    params, state, _ = layer.init(jax.random.key(0), (5, 4))
    x = jax.random.normal(jax.random.key(1), (5, 4))
    jac = jax.jit(jax.jacobian(lambda x: layer.forward(params, state, x, train=False)[0]))(x)
    per_position = np.abs(np.asarray(jac)).sum(axis=(1, 3))  # [t_out, t_in]
    assert np.all(np.triu(per_position, k=1) == 0)
    assert np.all(np.diag(per_position) > 0)


def test_sequence_model_is_causal_over_token_ids(mini):
    model, params = mini
    x = np.array([[1, 2, 3, 4, 5], [1, 2, 3, 0, 6]])
    y, y2 = jax.jit(model.apply)(params, x)[:, None]
    np.testing.assert_array_equal(y[:, :3], y2[:, :3])
    assert not np.allclose(y[:, 3:], y2[:, 3:])


def test_sequence_model_gradient_equals_autodiff(mini):
    """The hand-written gradient of a whole sequence model equals jax.grad of its forward, and
    so does jax.grad through the custom_vjp bridge (no gradient for the token ids)."""
    model, params = mini
    x, t = token_data()
    _, hand = jp.value_and_grad(model, LOSS, params, x, t)
    bridged = jax.jit(jax.grad(jp.as_jax_function(model, LOSS)))(params, x, t)
    loss = jp.get_loss(LOSS)
    with jax.default_matmul_precision("highest"):
        ref = jax.jit(jax.grad(lambda p: loss.value(model.apply(p, x), t)))(params)
    for a, b, c in zip(jax.tree.leaves(hand), jax.tree.leaves(bridged), jax.tree.leaves(ref)):
        np.testing.assert_allclose(a, c, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(b, c, rtol=1e-4, atol=1e-6)


@pytest.mark.long
def test_check_gradients_on_a_tiny_gpt():
    model = tiny_gpt()
    params = model.init(jax.random.key(0))
    x, t = token_data()
    report = jp.check_gradients(model, LOSS, params, x, t)
    assert report.ok, report


def test_token_ids_are_checked(mini):
    model, params = mini
    x, t = token_data()
    with pytest.raises(ValueError, match=r"token id 7 .*Embedding\(7, 8\).*0\.\.6"):
        jp.value_and_grad(model, LOSS, params, np.where(x == x[0, 0], 7, x), t)
    with pytest.raises(ValueError, match="token id -1"):
        jp.value_and_grad(model, LOSS, params, np.where(x == x[0, 0], -1, x), t)
    with pytest.raises(ValueError, match="integer token ids"):
        jp.value_and_grad(model, LOSS, params, x.astype(np.float32), t)
    with pytest.raises(ValueError, match="integer token ids"):
        jp.evaluate(model, params, (x.astype(np.float32), t), loss=LOSS)
    layer = jp.Embedding(7, 3)
    p, s, _ = layer.init(jax.random.key(0), (5,))
    with pytest.raises(ValueError, match="Embedding.*integer token ids 0..6.*float32"):
        layer.forward(p, s, jnp.zeros((2, 5)))


def test_integer_layers_come_first():
    with pytest.raises(ValueError, match="must come first"):
        jp.serial(jp.Dense(3), jp.Embedding(7, 3))
    with pytest.raises(ValueError, match="integer ids"):
        jp.Residual(jp.Embedding(7, 3))
    assert jp.serial(jp.serial(jp.Embedding(7, 3)), jp.Dense(2)).integer_inputs == 7


def test_positional_embedding_refuses_long_sequences():
    layer = jp.PositionalEmbedding(4)
    with pytest.raises(ValueError, match="5 positions is longer than max_len=4"):
        layer.init(jax.random.key(0), (5, 3))
    params, state, _ = layer.init(jax.random.key(0), (4, 3))
    with pytest.raises(ValueError, match="5 positions is longer than max_len=4"):
        layer.forward(params, state, jnp.zeros((2, 5, 3)))
    y = layer.forward(params, state, jnp.zeros((2, 3, 3)))[0]  # shorter is fine
    np.testing.assert_array_equal(y[0], params["table"][:3])


def test_layer_arguments_are_checked():
    for bad in (lambda: jp.Embedding(0, 3), lambda: jp.Embedding(3, 2.5),
                lambda: jp.PositionalEmbedding(-1), lambda: jp.CausalSelfAttention(0),
                lambda: jp.CausalSelfAttention(2, dropout=1.0), lambda: jp.Repeat(0, jp.Relu()),
                lambda: jp.gpt(7, blocks=1, features=6, heads=4, context=5)):
        with pytest.raises(ValueError):
            bad()
    with pytest.raises(ValueError, match="do not split into 3 heads"):
        jp.CausalSelfAttention(3).init(jax.random.key(0), (5, 4))


def test_model_text_round_trips(mini):
    text = ("embed(7,8)-posembed(5)-repeat(2,residual(layernorm-attention(2))-residual("
            "layernorm-dense(32)-gelu_tanh-dense(8)))-layernorm-dense(7)")
    assert tiny_gpt().spec == text
    assert jp.parse_model(text, (5,)).spec == text
    model, params = mini
    again = jp.parse_model(model.spec, (5,))
    assert again.spec == model.spec
    x, _ = token_data()
    np.testing.assert_array_equal(jax.jit(again.apply)(params, x), jax.jit(model.apply)(params, x))
    text = "embed(11,8)-repeat(3,residual(attention(2,head_dim=3,dropout=0.1,bias=0)))-dense(11)"
    assert jp.parse_model(text, (6,)).spec == text
    assert jp.parse_model("repeat(2,dense(4))", (4,)).spec == "repeat(2,dense(4))"


@pytest.mark.parametrize("text, match", [
    ("repeat(0,relu)", "1..1024"), ("repeat(relu)", "usage: repeat"),
    ("repeat(2,embed(3,4))", "integer ids"), ("embed(7)", "usage: embed"),
    ("attention(2,dropout=2)", "dropout"), ("dense(3)-embed(3,4)", "must come first"),
])
def test_bad_model_texts(text, match):
    with pytest.raises(ValueError, match=match):
        jp.parse_model(text, (5,))


def test_save_and_load_a_gpt(tmp_path, gpt1):
    model, params = gpt1
    path = os.path.join(tmp_path, "gpt.npz")
    jp.save(path, model, params)
    loaded = jp.load(path)
    x, _ = token_data()
    assert loaded[0].spec == model.spec
    np.testing.assert_array_equal(jax.jit(loaded[0].apply)(loaded[1], x),
                                  jax.jit(model.apply)(params, x))


def test_fit_learns_to_copy_the_previous_token():
    """t[i] = x[i-1] needs attention to the previous position; padded minibatches too."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 5, (120, 6))
    t = np.concatenate([x[:, :1], x[:, :-1]], axis=1)
    model = jp.gpt(5, blocks=1, features=16, heads=2, context=6)
    _, history = jp.fit(model, LOSS, optax.adam(1e-2), (x, t, x[:32], t[:32]), epochs=12,
                        batch_size=50, key=jax.random.key(0))
    first, last = float(history.losses[0]), history.records[-1]
    assert last["train_loss"] < 0.5 * first
    assert last["test_accuracy"] > 0.6  # token accuracy over (B, T) labels


def test_token_accuracy_and_loss_over_every_token(mini):
    model, params = mini
    x, t = token_data()
    y = np.asarray(jax.jit(model.apply)(params, x))
    logp = jax.nn.log_softmax(y, axis=-1)
    expected = -np.mean(np.take_along_axis(np.asarray(logp), t[..., None], -1))
    ev = jp.evaluate(model, params, (x, t), loss=LOSS)
    np.testing.assert_allclose(ev.loss, expected, rtol=1e-5)
    assert ev.accuracy == pytest.approx(np.mean(y.argmax(-1) == t))
    assert ev.confusion.sum() == t.size


@pytest.mark.parametrize("which", ["mini", pytest.param("gpt1", marks=pytest.mark.long)])
def test_per_example_grads_of_a_sequence_model(which, request):
    """Each example's gradient is its own: their mean is the batch's, and example 0's does
    not change when example 1 does."""
    model, params = request.getfixturevalue(which)
    x, t = token_data()
    losses, grads = jp.per_example_grads(model, LOSS, params, x, t)
    value, batch = jp.value_and_grad(model, LOSS, params, x, t)
    np.testing.assert_allclose(np.mean(losses), value, rtol=1e-5)
    for g, b in zip(jax.tree.leaves(grads), jax.tree.leaves(batch)):
        np.testing.assert_allclose(np.mean(g, axis=0), b, rtol=1e-4, atol=1e-6)
    x2 = x.copy()
    x2[1] = (x2[1] + 1) % 7
    _, grads2 = jp.per_example_grads(model, LOSS, params, x2, t)
    for g, g2 in zip(jax.tree.leaves(grads), jax.tree.leaves(grads2)):
        np.testing.assert_array_equal(g[0], g2[0])


def test_summary_of_a_gpt(gpt1):
    rows = gpt1[0].summary().rows
    assert rows[0]["layer"].startswith("Embedding") and rows[0]["output_shape"] == (5, 8)
    assert rows[-1]["output_shape"] == (5, 7)



@pytest.mark.long
def test_a_population_of_sequence_models(mini):
    model, _ = mini
    x, t = token_data(n=16)
    result = jp.fit_population(model, LOSS, data=(x, t), lrs=[0.05, 0.1], epochs=3,
                               key=jax.random.key(0))
    assert result.final_loss.shape == (2,) and np.all(np.isfinite(result.final_loss))
    with pytest.raises(ValueError, match="token id 9"):
        jp.fit_population(model, LOSS, data=(x + 3, t), lrs=[0.05, 0.1], epochs=3,
                          key=jax.random.key(0))
