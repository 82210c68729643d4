"""jp.check_vjp / jp.check_jvp (issue 19, part 2): any JAX function's gradient rule, in four
dtypes, against autodiff of its primal, a given reference, or float64 finite differences; the
report names the argument, the leaf and the elements; ``jaxprop check --function``."""

import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxprop as jp
from jaxprop.cli import main
from jaxprop.tools.gradcheck_report import VERDICT_WIDTH

DTYPES = [jnp.float32, jnp.float64, jnp.bfloat16, jnp.float16]
IDS = ["f32", "f64", "bf16", "f16"]


def tanh_layer(bug=False):
    """tanh(x @ w) with a hand-written VJP; ``bug``: dw uses (1 - y) for (1 - y^2)."""
    @jax.custom_vjp
    def layer(x, w):
        return jnp.tanh(x @ w)

    def fwd(x, w):
        y = layer(x, w)
        return y, (x, w, y)

    def bwd(res, g):
        x, w, y = res
        dz = g * (1 - y * y)
        return dz @ w.T, x.T @ (g * (1 - y) if bug else dz)

    layer.defvjp(fwd, bwd)
    return layer


def softplus(bug=False):
    """log(1 + e^x) with a hand-written JVP; ``bug``: slope 1 where x > 2."""
    @jax.custom_jvp
    def f(x):
        return jnp.logaddexp(x, 0.0)

    @f.defjvp
    def f_jvp(primals, tangents):
        (x,), (t,) = primals, tangents
        slope = jax.nn.sigmoid(x)
        return f(x), (jnp.where(x > 2, 1.0, slope) if bug else slope) * t

    return f


X = np.random.default_rng(0).standard_normal((4, 8))
W = np.random.default_rng(1).standard_normal((8, 3)) / 3


@pytest.mark.parametrize("dtype", DTYPES, ids=IDS)
def test_check_vjp_catches_a_wrong_rule_and_passes_the_right_one(dtype):
    good = jp.check_vjp(tanh_layer(), X, W, dtype=dtype)
    assert good.ok, str(good)
    assert good.dtype == jnp.dtype(dtype).name and "undecorated primal" in good.reference
    bad = jp.check_vjp(tanh_layer(bug=True), X, W, dtype=dtype)
    assert not bad.ok
    assert [leaf.where for leaf in bad.failures] == ["argument 1 (w)"]  # x's rule is right
    assert bad.verdict().startswith(f"FAILED: layer's vjp rule in {jnp.dtype(dtype).name}: "
                                    "argument 1 (w): ")
    assert len(bad.verdict()) <= VERDICT_WIDTH
    details = bad.details()
    assert f"rtol {good.rtol:g} ({jnp.dtype(dtype).name})" in details  # says its tolerance
    assert "entries disagree" in details and "rule" in details and "reference" in details


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64], ids=["f32", "f64"])
def test_check_jvp_catches_a_wrong_rule_and_passes_the_right_one(dtype):
    x = 3 * X
    assert jp.check_jvp(softplus(), x, dtype=dtype).ok
    bad = jp.check_jvp(softplus(bug=True), x, dtype=dtype)
    assert not bad.ok
    leaf = bad.failures[0]
    assert leaf.where == "argument 0 (x) -> output"
    assert 0 < leaf.n_bad == int(np.sum(x > 2)) and all(x[i] > 2 for i, _, _ in leaf.worst)


def test_pytree_arguments_name_the_leaf():
    @jax.custom_vjp
    def affine(x, p):
        return x @ p["w"] + p["b"]

    def fwd(x, p):
        return affine(x, p), (x, p)

    def bwd(res, g):
        x, p = res
        return g @ p["w"].T, {"w": x.T @ g, "b": g[0]}  # b: first example only

    affine.defvjp(fwd, bwd)
    report = jp.check_vjp(affine, X, {"w": W, "b": np.zeros(3)})
    assert [leaf.where for leaf in report.failures] == ["argument 1 (p)['b']"]


def newton_sqrt(bug=False):
    """sqrt by a while_loop (no reverse mode through it): the reference is finite differences."""
    @jax.custom_vjp
    def f(a):
        return jax.lax.while_loop(lambda c: jnp.max(jnp.abs(c * c - a)) > 1e-6 * jnp.max(a),
                                  lambda c: 0.5 * (c + a / c), a)

    f.defvjp(lambda a: (f(a), f(a)), lambda y, g: (g / (1 if bug else 2) / y,))
    return f


def test_an_undifferentiable_primal_is_checked_by_finite_differences():
    a = np.linspace(0.5, 4.0, 6).astype(np.float32)
    good = jp.check_vjp(newton_sqrt(), a)
    assert good.ok, str(good)
    assert good.reference == "finite differences in float64"
    assert not jp.check_vjp(newton_sqrt(bug=True), a).ok


def test_a_straight_through_estimator_against_its_reference():
    @jax.custom_vjp
    def ste_round(x):
        return jnp.round(x)

    ste_round.defvjp(lambda x: (ste_round(x), None), lambda _, g: (g,))
    x = X.astype(np.float32)
    assert jp.check_vjp(ste_round, x, reference=lambda x: x).ok
    assert not jp.check_vjp(ste_round, x).ok  # round's own derivative is 0: not the rule


def test_shape_dtype_structs_are_drawn_and_bad_arguments_refused():
    spec = jax.ShapeDtypeStruct((4, 8), jnp.float32), jax.ShapeDtypeStruct((8, 3), jnp.float32)
    assert jp.check_vjp(tanh_layer(), *spec).ok
    with pytest.raises(ValueError, match="needs the arguments"):
        jp.check_vjp(tanh_layer())
    with pytest.raises(ValueError, match="no floating-point argument"):
        jp.check_vjp(lambda i: i * 2, np.arange(3))
    with pytest.raises(ValueError, match="fails on these arguments"):
        jp.check_vjp(tanh_layer(), X, X)
    with pytest.raises(ValueError, match="dtype must be one of"):
        jp.check_vjp(tanh_layer(), X, W, dtype=jnp.int32)


USER = textwrap.dedent('''
    import jax
    import jax.numpy as jnp


    def _make(bug):
        @jax.custom_vjp
        def lse(x):
            return jax.nn.logsumexp(x, axis=-1)

        def fwd(x):
            y = lse(x)
            return y, (x, y)

        def bwd(res, g):
            x, y = res
            return (g[..., None] * jnp.exp(x - (0 if bug else y[..., None])),)

        lse.defvjp(fwd, bwd)
        return lse


    logsumexp, bad_logsumexp = _make(False), _make(True)
''')


@pytest.mark.parametrize("argv, code, shown", [
    (["--function", "{path}:logsumexp", "--args", "f32[4,8]"], 0, "OK: lse's vjp rule"),
    (["--function", "{path}:bad_logsumexp", "--args", "bf16[4,8]"], 1,
     "FAILED: lse's vjp rule in bfloat16: argument 0 (x)"),
    (["--function", "{path}:logsumexp", "--args", "f33[4]"], 2, "unknown dtype 'f33'"),
    (["--function", "{path}:logsumexp", "--args", "f32[4,x]"], 2, "bad shape"),
    (["--function", "{path}:logsumexp"], 2, "--function needs --args"),
    (["--function", "{path}:missing", "--args", "f32[3]"], 2, "has no attribute 'missing'"),
    (["--function", "{path}:logsumexp", "--args", "f32[3]", "--loss", "mse"], 2,
     "does not go with --function"),
    (["--function", "{path}:logsumexp", "--args", "f32[3]", "--order", "2"], 2,
     "not with --function"),
])
def test_cli_function(tmp_path, capsys, argv, code, shown):
    path = tmp_path / "my_functions.py"
    path.write_text(USER)
    assert main(["check", *(a.format(path=path) for a in argv)]) == code
    out, err = capsys.readouterr()
    assert shown in (out if code < 2 else err)


@pytest.mark.long
@pytest.mark.parametrize("dtype", DTYPES, ids=IDS)
def test_no_false_alarm_and_always_caught_at_20_seeds(dtype):
    for seed in range(20):
        rng = np.random.default_rng(seed)
        x, w = rng.standard_normal((4, 8)), rng.standard_normal((8, 3)) / 3
        assert jp.check_vjp(tanh_layer(), x, w, dtype=dtype, seed=seed).ok
        assert not jp.check_vjp(tanh_layer(bug=True), x, w, dtype=dtype, seed=seed).ok


def clipped_exp(bug=False):
    """exp(min(x, 5)) with a hand-written VJP; ``bug``: the slope kept where x > 5."""
    @jax.custom_vjp
    def f(x):
        return jnp.exp(jnp.minimum(x, 5.0))

    def fwd(x):
        return f(x), x

    def bwd(x, g):
        slope = jnp.exp(jnp.minimum(x, 5.0))
        return (g * (slope if bug else jnp.where(x > 5.0, 0.0, slope)),)

    f.defvjp(fwd, bwd)
    return f


@pytest.mark.parametrize("seed", [0, 1])
def test_shapes_are_drawn_wide_too_and_the_report_names_the_draw(seed):
    shape = jax.ShapeDtypeStruct((16,), jnp.float32)
    report = jp.check_vjp(clipped_exp(bug=True), shape, seed=seed)
    assert not report.ok and "at wide x10 arguments" in report.verdict(), report.verdict()
    assert jp.check_vjp(clipped_exp(bug=True), shape, seed=seed, draws="normal").ok  # no x > 5
    good = jp.check_vjp(clipped_exp(), shape, seed=seed)
    assert good.ok and "at 2 draws" in good.verdict(), good.verdict()
    assert good.settings["draws"] == ["normal", "wide x10"]


@pytest.mark.long
def test_wide_draw_catches_a_rule_wrong_only_beyond_5_at_20_seeds():
    shape = jax.ShapeDtypeStruct((16,), jnp.float32)
    caught = sum(not jp.check_vjp(clipped_exp(bug=True), shape, seed=s).ok for s in range(20))
    alarms = sum(not jp.check_vjp(clipped_exp(), shape, seed=s).ok for s in range(20))
    normal_only = sum(not jp.check_vjp(clipped_exp(bug=True), shape, seed=s,
                                       draws="normal").ok for s in range(20))
    print(f"caught {caught}/20, false alarms {alarms}/20; N(0, 1) alone: {normal_only}/20")
    assert caught == 20 and alarms == 0


def test_bad_draws_are_refused_in_one_line():
    shape = jax.ShapeDtypeStruct((4,), jnp.float32)
    with pytest.raises(ValueError, match="input draw"):
        jp.check_vjp(clipped_exp(), shape, draws="nope")
    with pytest.raises(ValueError, match="draws is empty"):
        jp.check_vjp(clipped_exp(), shape, draws=())
