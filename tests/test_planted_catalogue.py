"""The planted-bug catalogue (issue 19, "Proof"): bugs that live only in a region -- negative
inputs, saturation, large magnitude, a rare branch, a single element, row or channel, a wrong
dtype cast, 1e-3 relative in one leaf, dparams only or dx only -- each caught by the checker at
its DEFAULT settings and named (the quantity, and for a layer the input draw); each bug's
correct twin passes. The default run checks every bug at one seed; the long test runs every bug
and twin at 20 seeds and prints the figures (docs/gradcheck.md, "The planted-bug catalogue")::

    python -m pytest -m long -s tests/test_planted_catalogue.py -k twenty
"""

from dataclasses import dataclass
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxprop as jp

WIDE, KINK = "wide x10", "near-kink"
SEEDS = 20


# -- planted layers: each factory gives the correct layer, or with bug=True its planted slip ---


def PReLU(bug=None):
    """y = x where x > 0, else a x, with a learned slope ``a`` per feature. ``"dx"``: the
    slope forgotten in dx (wrong for negative inputs only); ``"da"``: the mask forgotten in da
    (dparams only, dx right)."""

    def init(key, in_shape):
        return {"a": jnp.full(in_shape[-1:], 0.25)}, (), tuple(in_shape)

    def forward(params, state, x, *, key=None, train=True):
        return jnp.where(x > 0, x, params["a"] * x), x, state

    def backward(params, x, dy):
        neg = x <= 0
        batch_axes = tuple(range(x.ndim - 1))
        da = jnp.sum(jnp.where(neg, dy * x, 0.0), axis=batch_axes)
        dx = jnp.where(neg, params["a"] * dy, dy)
        if bug == "dx":
            dx = dy
        elif bug == "da":
            da = jnp.sum(dy * x, axis=batch_axes)
        return {"a": da}, dx

    return jp.Layer(init, forward, backward, name="prelu")


def FastSigmoid(bug=False):
    """The logistic sigmoid; the slip: "saturated, so 0" where |x| > 5 (s(1-s) is 6.6e-3 at 5)."""

    def forward(x):
        s = jax.nn.sigmoid(x)
        return s, (x, s)

    def backward(res, dy):
        x, s = res
        ds = s * (1 - s)
        if bug:
            ds = jnp.where(jnp.abs(x) > 5, 0.0, ds)
        return dy * ds

    return jp.elementwise("fast_sigmoid", forward, backward)


def Symlog(bug=False):
    """y = sign(x) log(1 + |x|); the slip: the asymptote 1/|x| for 1/(1+|x|) where |x| > 50."""

    def forward(x):
        return jnp.sign(x) * jnp.log1p(jnp.abs(x)), x

    def backward(x, dy):
        a = jnp.abs(x)
        d = 1 / (1 + a)
        if bug:
            d = jnp.where(a > 50, 1 / a, d)
        return dy * d

    return jp.elementwise("symlog", forward, backward)


def ReLU6(bug=False):
    """y = min(max(x, 0), 6); the slip: the upper clip's branch (x > 6, rare in N(0, 1)) passes
    the gradient through."""

    def forward(x):
        return jnp.clip(x, 0.0, 6.0), x

    def backward(x, dy):
        if bug:
            return dy * (x > 0)
        return dy * ((x > 0) & (x < 6))

    return jp.elementwise("relu6", forward, backward)


def Poly2(bug=False):
    """y = c0 + c1 x + c2 x^2 per entry, three learned coefficients ``c``; the slip (copy and
    paste): dc[2] sums dy x instead of dy x^2 -- one element of one leaf."""

    def init(key, in_shape):
        return {"c": jnp.array([0.0, 1.0, 0.5])}, (), tuple(in_shape)

    def forward(params, state, x, *, key=None, train=True):
        c = params["c"]
        return c[0] + c[1] * x + c[2] * x * x, x, state

    def backward(params, x, dy):
        c = params["c"]
        dc = jnp.stack([jnp.sum(dy), jnp.sum(dy * x), jnp.sum(dy * (x if bug else x * x))])
        return {"c": dc}, dy * (c[1] + 2 * c[2] * x)

    return jp.Layer(init, forward, backward, name="poly2")


def _dense(name, width, backward):
    """Dense(width), ``y = x @ W + b`` (the residual: ``x``), with a hand-written
    ``backward(params, x, dy)`` -- the planted Dense layers differ only there."""

    def init(key, in_shape):
        w = jax.random.normal(key, (in_shape[-1], width)) / np.sqrt(in_shape[-1])
        return {"W": w, "b": jnp.zeros((width,))}, (), (width,)

    def forward(params, state, x, *, key=None, train=True):
        return x @ params["W"] + params["b"], x, state

    return jp.Layer(init, forward, backward, name=name)


def LoopDense(bug=False):
    """Dense(3) whose dW sums per-example outer products in a Python loop; the slip:
    ``range(1, n)`` forgets example 0 -- one row of the batch."""

    def backward(params, x, dy):
        first = 1 if bug else 0
        dW = sum(jnp.outer(x[i], dy[i]) for i in range(first, x.shape[0]))
        return {"W": dW, "b": dy.sum(0)}, dy @ params["W"].T

    return _dense("loop_dense", 3, backward)


def Diff(bug=False):
    """First differences along the features, y_0 = x_0, y_i = x_i - x_{i-1}; the slip:
    ``jnp.roll`` wraps dy_0 into the last feature's dx -- one channel."""

    def forward(x):
        return x - jnp.pad(x[..., :-1], [(0, 0)] * (x.ndim - 1) + [(1, 0)]), ()

    def backward(res, dy):
        if bug:
            return dy - jnp.roll(dy, -1, axis=-1)
        return dy - jnp.pad(dy[..., 1:], [(0, 0)] * (dy.ndim - 1) + [(0, 1)])

    return jp.elementwise("diff", forward, backward)


def HalfDense(bug=False):
    """Dense(4) that computes dx in float16 "to save memory" (the slip: a float16 round trip
    inside a float32/float64 backward: dx only, everywhere)."""

    def backward(params, x, dy):
        W = params["W"]
        dx = dy @ W.T
        if bug:
            dx = (dy.astype(jnp.float16) @ W.T.astype(jnp.float16)).astype(x.dtype)
        return {"W": x.T @ dy, "b": dy.sum(0)}, dx

    return _dense("half_dense", 4, backward)


def DecayDense(bug=False):
    """Dense(4); the slip: b's gradient scaled by 0.999 (a decay factor left in the backward):
    1e-3 relative, in one parameter leaf."""

    def backward(params, x, dy):
        db = dy.sum(0) * (0.999 if bug else 1.0)
        return {"W": x.T @ dy, "b": db}, dy @ params["W"].T

    return _dense("decay_dense", 4, backward)


# -- planted custom_vjp/custom_jvp functions (jp.check_vjp, jp.check_jvp) -----------------


def softplus_vjp(bug=False):
    """softplus with a hand-written VJP; the slip: e^x for sigmoid(x) where x < 0 (right only
    far out in the negative tail)."""

    @jax.custom_vjp
    def softplus(x):
        return jnp.logaddexp(x, 0.0)

    def fwd(x):
        return softplus(x), x

    def bwd(x, g):
        s = jax.nn.sigmoid(x)
        return (g * (jnp.where(x < 0, jnp.exp(x), s) if bug else s),)

    softplus.defvjp(fwd, bwd)
    return softplus


def tanh_dense_vjp(bug=False):
    """tanh(x @ w) with a hand-written VJP; the slip: dw rounded through float16."""

    @jax.custom_vjp
    def tanh_dense(x, w):
        return jnp.tanh(x @ w)

    def fwd(x, w):
        y = tanh_dense(x, w)
        return y, (x, w, y)

    def bwd(res, g):
        x, w, y = res
        dz = g * (1 - y * y)
        dw = x.T @ dz
        if bug:
            dw = dw.astype(jnp.float16).astype(w.dtype)
        return dz @ w.T, dw

    tanh_dense.defvjp(fwd, bwd)
    return tanh_dense


def elu_jvp(bug=False):
    """ELU with a hand-written JVP; the slip: y for the negative slope d expm1(x)/dx = y + 1."""

    @jax.custom_jvp
    def elu(x):
        return jnp.where(x > 0, x, jnp.expm1(jnp.minimum(x, 0.0)))

    @elu.defjvp
    def elu_rule(primals, tangents):
        (x,), (t,) = primals, tangents
        y = elu(x)
        return y, jnp.where(x > 0, 1.0, y if bug else y + 1) * t

    return elu


# -- the catalogue ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Planted:
    """One planted bug: ``make(bug)`` gives the function or layer (``bug`` falsy: the twin);
    ``check(obj, seed)`` the report; what its verdict must name: ``quantity`` (``dx``, a
    param leaf or an argument) and, for a layer, the draws that may fail."""

    name: str
    region: str
    make: Callable
    bug: object
    check: Callable
    quantity: str
    draws: tuple[str, ...] = ()


def _layer(in_shape):
    return lambda layer, seed: jp.check_layer(layer, in_shape, key=jax.random.key(seed))


def _function(check, *shapes):
    args = [jax.ShapeDtypeStruct(s, jnp.float32) for s in shapes]
    return lambda fn, seed: check(fn, *args, seed=seed)


def _vjp(*shapes):
    return _function(jp.check_vjp, *shapes)


ALL = ("normal", WIDE, KINK)
CATALOGUE = [
    Planted("prelu_dx", "negative inputs, dx only", PReLU, "dx", _layer((4,)), "dx", ALL),
    Planted("prelu_da", "dparams only (a)", PReLU, "da", _layer((4,)), "a", ALL),
    Planted("fast_sigmoid", "saturation |x| > 5", FastSigmoid, True, _layer((4,)), "dx",
            (WIDE, KINK)),
    Planted("symlog", "large magnitude |x| > 50", Symlog, True, _layer((4,)), "dx", (KINK,)),
    Planted("relu6", "rare branch x > 6", ReLU6, True, _layer((4,)), "dx", (WIDE, KINK)),
    Planted("poly2", "single element c[2]", Poly2, True, _layer((4,)), "c", ALL),
    Planted("loop_dense", "single row (example 0)", LoopDense, True, _layer((3,)), "W", ALL),
    Planted("diff", "single channel (last feature)", Diff, True, _layer((5,)), "dx", ALL),
    Planted("half_dense", "float16 cast in the backward", HalfDense, True, _layer((3,)), "dx",
            ALL),
    Planted("decay_dense", "1e-3 relative in b", DecayDense, True, _layer((3,)), "b", ALL),
    Planted("softplus_vjp", "custom_vjp, negative inputs", softplus_vjp, True, _vjp((4, 3)),
            "argument 0 (x)"),
    Planted("tanh_dense_vjp", "custom_vjp, float16 cast in dw", tanh_dense_vjp, True,
            _vjp((4, 3), (3, 2)), "argument 1 (w)"),
    Planted("elu_jvp", "custom_jvp, negative inputs", elu_jvp, True,
            _function(jp.check_jvp, (4, 3)), "argument 0 (x) -> output"),
]
IDS = [p.name for p in CATALOGUE]


def caught_and_named(p: Planted, report) -> str:
    """``""`` when ``report`` fails and names ``p``'s quantity (and a draw of ``p.draws``),
    else what is missing."""
    verdict = report.verdict()
    if report.ok:
        return f"not caught: {verdict}"
    if not isinstance(report, jp.LayerReport):  # check_vjp: no draws, the argument leaf
        wrong = [leaf.where for leaf in report.failures]
        if wrong != [p.quantity] or f": {p.quantity}: " not in verdict:
            return f"named {wrong}, not {p.quantity}: {verdict}"
        return ""
    draws = {lc.draw for lc in report.layer_failures}
    quantities = {q.name for lc in report.layer_failures for q in lc.quantities if not q.ok}
    if quantities != {p.quantity} or not verdict.startswith(
            f"FAILED: {report.first_failure.label}: {p.quantity} disagrees"):
        return f"named {sorted(quantities)}, not {p.quantity}: {verdict}"
    if not draws <= set(p.draws) or f"{report.first_failure.draw} inputs" not in verdict:
        return f"failed at draws {sorted(draws)}, expected among {p.draws}: {verdict}"
    return ""


@pytest.mark.parametrize("p", CATALOGUE, ids=IDS)
def test_planted_bug_is_caught_and_named(p):
    problem = caught_and_named(p, p.check(p.make(p.bug), 0))
    assert not problem, problem


@pytest.mark.parametrize("p", CATALOGUE, ids=IDS)
def test_correct_twin_passes(p):
    report = p.check(p.make(None if p.bug is True else False), 0)
    assert report.ok, str(report)


def test_large_magnitudes_are_reached_by_the_near_kink_draw_only():
    """The method change the catalogue asked for: |x| > 50 lies beyond N(0, 1) and N(0, 10^2)
    (once in two million); the near-kink draw's large negatives reach -80."""
    bug = Symlog(bug=True)
    assert jp.check_layer(bug, (4,), draws=("normal", "wide")).ok
    report = jp.check_layer(bug, (4,), draws="kinks")
    assert not report.ok and report.first_failure.draw == KINK


def test_the_catalogue_covers_every_region():
    assert len(CATALOGUE) >= 10
    regions = " ".join(p.region for p in CATALOGUE)
    for word in ("negative", "saturation", "large magnitude", "rare branch", "single element",
                 "single row", "single channel", "float16", "1e-3", "dparams only", "dx only"):
        assert word in regions, word


@pytest.mark.long
def test_every_bug_and_twin_at_twenty_seeds():
    """Every bug caught and named at 20 seeds of 20; no false alarm from its twin in 20."""
    caught, alarms, misses = 0, 0, []
    for p in CATALOGUE:
        bug, twin = p.make(p.bug), p.make(None if p.bug is True else False)
        for seed in range(SEEDS):
            problem = caught_and_named(p, p.check(bug, seed))
            caught += not problem
            if problem:
                misses.append(f"{p.name} seed {seed}: {problem}")
            twin_report = p.check(twin, seed)
            alarms += not twin_report.ok
            if not twin_report.ok:
                misses.append(f"{p.name} twin seed {seed}: {twin_report.verdict()}")
    n = len(CATALOGUE) * SEEDS
    print(f"\nplanted-bug catalogue: {len(CATALOGUE)} bugs x {SEEDS} seeds: caught and named "
          f"{caught}/{n}; false alarms {alarms}/{n} (correct twins)")
    assert caught == n and alarms == 0, "\n".join(misses)
