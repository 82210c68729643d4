"""Training loop: classic XOR equality, masking, minibatching, resume, divergence, real data."""

from functools import partial

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxprop as jp
from jaxprop import checkpoint, data
from jaxprop.train import (
    TrainingDiverged,
    fit,
    fit_state,
    init_state,
    make_train_epochs,
    masked_loss_and_grad_fn,
)

from jaxprop.bench.numpy_baseline import XOR_T, XOR_X, classic_xor


@pytest.mark.x64
def test_xor_reproduces_the_classic_numpy_program_exactly():
    rng = np.random.default_rng(42)
    W1, W2 = rng.normal(size=(2, 4)), rng.normal(size=(4, 1))
    b1, b2 = np.zeros(4), np.zeros(1)
    model = jp.mlp([2, 4, 1], "sigmoid", "sigmoid", init="normal", dtype=jnp.float64)
    params0 = [{"W": W1, "b": b1}, (), {"W": W2, "b": b2}, ()]
    params, history = fit(model, "sse_half", optax.sgd(0.1), (XOR_X, XOR_T), epochs=10_000,
                          key=jax.random.key(0), params=params0, log_every=4000)
    ref = classic_xor(W1, b1, W2, b2, lr=0.1, epochs=10_000)
    got = (params[0]["W"], params[0]["b"], params[2]["W"], params[2]["b"])
    for g, r in zip(got, ref, strict=True):
        np.testing.assert_allclose(np.asarray(g), r, rtol=0, atol=1e-8)
    assert [r["epoch"] for r in history.records] == [4000, 8000, 10_000]
    assert history.losses.shape == (10_000,)
    assert history.records[-1]["train_accuracy"] == 1.0


@pytest.mark.x64
@pytest.mark.parametrize("loss", sorted(jp.LOSSES))
def test_masked_gradient_equals_the_unpadded_batch(loss):
    model = jp.mlp([3, 5, 4], "tanh", "sigmoid", dtype=jnp.float64)
    params = model.init(jax.random.key(0))
    kx, kt = jax.random.split(jax.random.key(1))
    x = jax.random.normal(kx, (7, 3), jnp.float64)
    t = jax.random.uniform(kt, (7, 4), jnp.float64)
    if loss == "softmax_cross_entropy":
        t = jax.nn.one_hot(jnp.arange(7) % 4, 4, dtype=jnp.float64)
    if loss == "sparse_softmax_cross_entropy":
        t = jnp.arange(7) % 4
    ref_value, ref_grads = jax.jit(jp.loss_and_grad_fn(model, loss))(params, x, t)
    # pad to 10 rows with copies of real rows (as the minibatcher does), mask them out
    idx = jnp.array([3, 0, 6, 1, 5, 2, 4, 0, 1, 2])
    mask = jnp.arange(10) < 7
    order = jnp.argsort(idx[:7])
    masked = jax.jit(masked_loss_and_grad_fn(model, loss))
    value, grads = masked(params, x[idx], t[idx], mask)
    np.testing.assert_allclose(value, ref_value, rtol=1e-12)
    chex.assert_trees_all_close(grads, ref_grads, rtol=1e-12, atol=1e-14)
    # the same rows in another order with no padding give the same gradient too
    _, g2 = masked(params, x[order], t[order], jnp.ones(7, bool))
    chex.assert_trees_all_close(g2, ref_grads, rtol=1e-12, atol=1e-14)


def test_loss_reduction():
    assert jp.get_loss("sse_half").reduction == "sum"
    for name in ("mse", "bce", "bce_with_logits", "softmax_cross_entropy"):
        assert jp.get_loss(name).reduction in ("mean_rows", "mean_all")


_MODEL, _ADAM = jp.mlp([2, 3, 1], "tanh", "identity"), optax.adam(1e-2)


def _count_steps(batch_size, drop_last, n=10):
    x = np.random.default_rng(0).normal(size=(n, 2)).astype(np.float32)
    t = x[:, :1] * 2
    state, _ = fit_state(_MODEL, "mse", _ADAM, (x, t), epochs=2,
                         batch_size=batch_size, drop_last=drop_last, key=jax.random.key(0))
    return int(state.opt_state[0].count)


def test_ragged_last_batch_is_kept_unless_drop_last():
    assert _count_steps(4, drop_last=False) == 2 * 3  # 4 + 4 + 2 (padded, masked)
    assert _count_steps(4, drop_last=True) == 2 * 2
    assert _count_steps(5, drop_last=False) == 2 * 2
    assert _count_steps(None, drop_last=False) == 2 * 1  # full batch


def test_train_epochs_is_pure_and_vmaps_over_a_population():
    model = jp.mlp([2, 4, 1], "sigmoid", "sigmoid", init="normal")
    opt = optax.sgd(0.5)
    x, t = jnp.asarray(XOR_X, jnp.float32), jnp.asarray(XOR_T, jnp.float32)
    train_epochs = partial(make_train_epochs(model, "sse_half", opt, 4, batch_size=3),
                           n_epochs=20)
    keys = jax.random.split(jax.random.key(0), 3)
    states = jax.vmap(lambda k: init_state(model, opt, k))(keys)
    batched, losses = jax.jit(jax.vmap(train_epochs, in_axes=(0, None, None)))(states, x, t)
    assert losses.shape == (3, 20)
    for i in range(3):
        single, single_losses = jax.jit(train_epochs)(init_state(model, opt, keys[i]), x, t)
        chex.assert_trees_all_close(jax.tree.map(lambda a: a[i], batched.params), single.params,
                                    rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(losses[i], single_losses, rtol=1e-5)


@pytest.mark.parametrize("stop", [6])  # not a multiple of log_every: the chunks differ
def test_resume_from_a_checkpoint_equals_the_uninterrupted_run(tmp_path, stop):
    ds = data.load("moons", n_samples=90, seed=1)  # 72 training rows: ragged batches of 10
    model = jp.mlp([2, 8, 1], "tanh", "identity")
    opt = optax.adam(1e-2)
    kw = dict(batch_size=10, log_every=4)
    full, _ = fit_state(model, "bce_with_logits", opt, ds, epochs=12, key=jax.random.key(3), **kw)

    part, h1 = fit_state(model, "bce_with_logits", opt, ds, epochs=stop, key=jax.random.key(3),
                         **kw)
    checkpoint.save(tmp_path, part, {"note": "stopped"})
    template = init_state(model, opt, jax.random.key(123))
    restored = checkpoint.load(tmp_path).restore(template)
    assert int(restored.epoch) == stop
    resumed, h2 = fit_state(model, "bce_with_logits", opt, ds, epochs=12, state=restored, **kw)

    chex.assert_trees_all_equal(resumed.params, full.params)
    chex.assert_trees_all_equal(resumed.opt_state, full.opt_state)
    assert int(resumed.epoch) == 12
    assert h2.records[0]["epoch"] == min(stop + 4, 12)
    assert h1.losses.size + h2.losses.size == 12


def test_divergence_stops_and_keeps_the_last_good_params():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 3)).astype(np.float32)
    t = x.sum(1, keepdims=True)
    model = jp.mlp([3, 16, 1], "relu", "identity")
    with pytest.raises(TrainingDiverged) as info:
        fit(model, "mse", optax.sgd(0.3), (x, t), epochs=50, batch_size=8, log_every=1,
            key=jax.random.key(0))
    err = info.value
    assert err.epoch >= 1
    assert "smaller learning rate" in str(err) and f"epoch {err.epoch}" in str(err)
    good = err.state
    assert int(good.epoch) == err.epoch - 1  # log_every=1: every earlier epoch was checked
    assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(good.params))
    assert err.history.losses.size == err.epoch - 1
    assert np.all(np.isfinite(err.history.losses))


def test_fit_rejects_bad_arguments():
    model = jp.mlp([2, 4, 1], "sigmoid", "sigmoid")
    with pytest.raises(ValueError, match="epochs"):
        fit(model, "mse", optax.sgd(0.1), (XOR_X, XOR_T), epochs=-1, key=jax.random.key(0))
    with pytest.raises(ValueError, match="key"):
        fit(model, "mse", optax.sgd(0.1), (XOR_X, XOR_T), epochs=1)
    with pytest.raises(ValueError, match="batch_size"):
        fit(model, "mse", optax.sgd(0.1), (XOR_X.astype(np.float32), XOR_T.astype(np.float32)),
            epochs=1, batch_size=0, key=jax.random.key(0))
    with pytest.raises(ValueError, match="NaN"):
        bad = XOR_X.astype(np.float32).copy()
        bad[1, 1] = np.nan
        fit(model, "mse", optax.sgd(0.1), (bad, XOR_T), epochs=1, key=jax.random.key(0))


@pytest.mark.slow
def test_digits_mlp_reaches_95_percent():
    ds = data.load("digits", seed=0)
    model = jp.mlp([(8, 8, 1), 64, 64, 10], "relu", "identity")  # images since issue 10
    params, history = fit(model, "softmax_cross_entropy", optax.adam(3e-3), ds, epochs=10,
                          batch_size=32, key=jax.random.key(0), log_every=10)
    assert history.records[-1]["test_accuracy"] >= 0.95, history.records[-1]


@pytest.mark.slow
def test_spirals_reaches_95_percent():
    ds = data.load("spirals", seed=0)
    model = jp.mlp([2, 64, 64, 1], "tanh", "identity")
    params, history = fit(model, "bce_with_logits", optax.adam(1e-2), ds, epochs=600,
                          key=jax.random.key(0), log_every=600)
    assert history.records[-1]["test_accuracy"] >= 0.95, history.records[-1]
    assert history.records[-1]["train_accuracy"] >= 0.95, history.records[-1]


def test_auto_compiler_options_depend_on_model_and_data_not_epochs():
    from jaxprop.train import FAST_COMPILE, auto_compiler_options

    xor = auto_compiler_options(17, 4, None)
    assert xor == {**FAST_COMPILE, "xla_cpu_multi_thread_eigen": False}
    assert auto_compiler_options(9034, 1437, 64) == FAST_COMPILE  # digits
    assert auto_compiler_options(110_000, 60_000, 128) is None  # MNIST: XLA's defaults


def test_unroll_changes_the_loop_not_the_arithmetic():
    x, t = (a.astype(np.float32) for a in (XOR_X, XOR_T))
    model = jp.mlp([2, 12, 12, 1], "sigmoid", "sigmoid", init="normal")
    runs = [fit(model, "sse_half", optax.sgd(0.5), (x, t), epochs=30, key=jax.random.key(0),
                unroll=u, log_every=7)[0] for u in (1, 3)]
    chex.assert_trees_all_close(runs[0], runs[1], rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="unroll"):
        fit(model, "sse_half", 0.5, (x, t), epochs=2, key=jax.random.key(0), unroll=0)


def test_auto_unroll_keeps_one_function_loops_and_unrolls_tiny_matmul_steps():
    from jaxprop.train import auto_unroll

    def params(sizes):
        return jp.mlp(sizes, "sigmoid", "sigmoid").init(jax.random.key(0))

    assert auto_unroll(params([2, 4, 1]), 4, None) == 1  # multiply-add products only
    assert auto_unroll(params([2, 32, 32, 1]), 4, None) > 1  # tiny step with matmul calls
    assert auto_unroll(params([64, 64, 64, 10]), 1437, 64) == 1  # big enough to not matter


def test_fit_reuses_its_compiled_program_across_calls():
    x, t = (a.astype(np.float32) for a in (XOR_X, XOR_T))
    model, opt = jp.mlp([2, 4, 1], "sigmoid", "sigmoid", init="normal"), optax.sgd(0.1)
    first = fit(model, "sse_half", opt, (x, t), epochs=40, key=jax.random.key(0))
    again = fit(model, "sse_half", opt, (x, t), epochs=40, key=jax.random.key(0))
    assert first[1].compile_time > 0 and again[1].compile_time == 0
    chex.assert_trees_all_equal(first[0], again[0])


def test_dense_products_equal_matmul_for_tiny_and_large_factors():
    from jaxprop.core.layers import matmul

    rng = np.random.default_rng(0)
    for shape_a, shape_b in (((5, 2), (2, 4)), ((3, 7, 4), (4, 1)), ((6, 30), (30, 40))):
        a = rng.normal(size=shape_a).astype(np.float32)
        b = rng.normal(size=shape_b).astype(np.float32)
        np.testing.assert_allclose(matmul(a, b), a @ b, rtol=1e-5, atol=1e-6)
    batched = jax.vmap(matmul)(rng.normal(size=(3, 5, 2)), rng.normal(size=(3, 2, 4)))
    assert batched.shape == (3, 5, 4)


def test_compilation_cache_keeps_programs_for_the_next_process(tmp_path):
    import subprocess
    import sys

    code = (f"import jax, numpy as np, jaxprop as jp\n"
            f"assert jp.enable_compilation_cache({str(tmp_path)!r}) == {str(tmp_path)!r}\n"
            f"from jaxprop.data import xor\n"
            f"x, t = (a.astype(np.float32) for a in xor())\n"
            f"jp.fit(jp.mlp([2, 4, 1], 'sigmoid', 'sigmoid'), 'sse_half', 0.1, (x, t), epochs=5, "
            f"key=jax.random.key(0))\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)
    assert any(tmp_path.iterdir())
    assert jp.enable_compilation_cache("off") is None  # and the switch to turn it off


@pytest.mark.parametrize("seed", [0, 1, 12345, 2**31 - 1, 2**31, 2**32 - 1, 2**32 + 5])
def test_key_from_seed_is_jax_random_key(seed):
    from jaxprop.train.step import key_from_seed

    np.testing.assert_array_equal(jax.random.key_data(key_from_seed(seed)),
                                  jax.random.key_data(jax.random.key(seed)))
    assert jax.random.key_impl(key_from_seed(seed)) == jax.random.key_impl(jax.random.key(0))


def test_jaxpr_flops_count_products_exactly():
    from jaxprop.train.compile import jaxpr_flops

    def flops(f, *args):
        return jaxpr_flops(jax.make_jaxpr(f)(*args).jaxpr)

    a, b = jnp.ones((3, 5)), jnp.ones((5, 7))
    assert flops(jnp.matmul, a, b) == 2 * 3 * 5 * 7
    x, k = jnp.ones((1, 8, 8, 2)), jnp.ones((3, 3, 2, 4))
    conv = partial(jax.lax.conv_general_dilated, window_strides=(1, 1), padding="VALID",
                   dimension_numbers=("NHWC", "HWIO", "NHWC"))
    assert flops(conv, x, k) == 2 * (6 * 6 * 4) * (3 * 3 * 2)
    m = jnp.ones((5, 5))
    looped = lambda c: jax.lax.scan(lambda c, _: (c @ m, None), c, None, length=10)[0]  # noqa: E731
    assert flops(looped, a) == 10 * 2 * 3 * 5 * 5
    assert flops(jax.jit(jnp.matmul), a, b) == 2 * 3 * 5 * 7  # inside an inner jit


@pytest.mark.parametrize("spec, in_shape", [
    ("dense(4)-sigmoid-dense(1)-sigmoid", (2,)),
    ("dense(64)-relu-dense(64)-relu-dense(10)", (64,)),
    ("conv(16,3)-relu-maxpool(2)-conv(32,3)-relu-flatten-dense(64)-relu-dropout(0.2)-dense(10)",
     (8, 8, 1)),
    ("conv(8,3)-layernorm-gelu-avgpool(2)-flatten-batchnorm-dense(10)", (28, 28, 1)),
])
def test_forward_flops_estimate_is_within_3x_of_xlas_count(spec, in_shape):
    """The compile options' estimate (traced, not lowered) against XLA's own cost analysis."""
    from jaxprop.train.compile import forward_flops

    model = jp.parse_model(spec, in_shape=in_shape)
    params, state = model.init_with_state(jax.random.key(0))
    x_one = jax.ShapeDtypeStruct((1, *in_shape), jnp.float32)
    ours = forward_flops(model, params, state, x_one)
    xla = jax.jit(lambda p, s, x: model.forward(p, s, x, train=False)[0]).lower(
        params, state, x_one).cost_analysis()["flops"]
    assert xla / 3 <= ours <= 3 * xla, (ours, xla)


def test_key_from_seed_of_an_array_is_vmapped_jax_random_key():
    from jaxprop.train.step import key_from_seed

    seeds = np.array([0, 5, 2**31 - 1, 2**31, 2**32 - 1], np.int64)
    want = jnp.stack([jax.random.key_data(jax.random.key(int(s))) for s in seeds])
    np.testing.assert_array_equal(jax.random.key_data(key_from_seed(seeds)), want)
    with pytest.raises(TypeError, match="integers"):
        key_from_seed(np.array([1.5]))


def test_remember_caches_hashable_calls_and_runs_the_rest():
    from jaxprop.core.cache import remember

    calls = []

    @remember(maxsize=4)
    def build(a, b):
        calls.append((a, b))
        if b == "bad":
            raise TypeError("raised by the function itself")
        return object()

    assert build(1, 2) is build(1, 2) and len(calls) == 1  # remembered
    assert build(1, [2]) is not build(1, [2]) and len(calls) == 3  # unhashable: runs each time
    with pytest.raises(TypeError, match="by the function itself"):  # not mistaken for unhashable
        build(1, "bad")
    assert len(calls) == 4
    assert build(1, b=3) is build(1, b=3) and len(calls) == 5  # keywords are remembered too
    assert build(1, b=[3]) is not build(1, b=[3]) and len(calls) == 7
    assert build.cache_info().maxsize == 4


def test_builders_and_compiled_initialisations_are_remembered_boundedly(monkeypatch):
    import sys

    from jaxprop.train import accuracy_fn, as_optimizer
    from jaxprop.train.compile import CompiledPrograms

    assert accuracy_fn("mse") is accuracy_fn("mse")
    assert accuracy_fn(loss="mse") is accuracy_fn(loss="mse")  # (a keyword call: its own entry)
    assert as_optimizer(0.5) is as_optimizer(0.5) is as_optimizer(np.float64(0.5))
    for fn in (accuracy_fn, sys.modules["jaxprop.train.optimizers"]._sgd):
        assert fn.cache_info().maxsize is not None
    store = CompiledPrograms(maxsize=2)
    monkeypatch.setattr(sys.modules["jaxprop.train.step"], "_INIT_PROGRAMS", store)
    opt = optax.sgd(0.1)
    model = jp.mlp([2, 3, 1], "tanh", "sigmoid")
    first = init_state(model, opt, jax.random.key(0))
    again = init_state(model, opt, jax.random.key(1))
    assert len(store) == 1  # one program for both keys
    assert not np.array_equal(first.params[0]["W"], again.params[0]["W"])
    for width in (4, 5, 6):
        init_state(jp.mlp([2, width, 1], "tanh", "sigmoid"), opt, jax.random.key(0))
    assert len(store) == 2  # bounded


def test_a_compiled_chunk_is_not_reused_under_another_matmul_precision(monkeypatch):
    import sys

    from jaxprop.train.compile import CompiledPrograms

    builds = []
    store = CompiledPrograms(maxsize=2)
    program = lambda name: store.get("key", lambda: builds.append(name) or name)  # noqa: E731
    assert program("a") == "a" and program("b") == "a" and builds == ["a"]
    with jax.default_matmul_precision("highest"):
        assert program("c") == "c"
    assert program("d") == "a" and builds == ["a", "c"]
    assert store.get(["unhashable"], lambda: "e") == "e" and len(store) == 2

    compiled = CompiledPrograms(maxsize=32)  # fit's own store, fresh for this test
    monkeypatch.setattr(sys.modules["jaxprop.train.fit"], "_COMPILED", compiled)
    model = jp.mlp([2, 3, 1], "tanh", "sigmoid")
    x, t = (a.astype(np.float32) for a in (XOR_X, XOR_T))
    run = partial(fit, model, "sse_half", optax.sgd(0.1), (x, t), epochs=3,
                  key=jax.random.key(0))
    run()
    run()
    assert len(compiled) == 1  # the same settings: the same program
    with jax.default_matmul_precision("highest"):
        run()
    assert len(compiled) == 2


def test_more_steps_than_a_step_key_counts_is_refused():
    """Each step's key folds in the step's number (a uint32 over the run): beyond 2**32 steps
    keys (and Dropout masks) would repeat."""
    x, t = np.zeros((64, 2), np.float32), np.zeros((64, 1), np.float32)
    model = jp.mlp([2, 3, 1], "tanh", "sigmoid")
    with pytest.raises(ValueError, match="steps, more than each step's random key can count"):
        fit(model, "sse_half", 0.1, (x, t), epochs=2**31 - 1, batch_size=1,
            key=jax.random.key(0))
