"""A catalogue of planted bugs: each deliberately wrong backward pass is caught by
``check_gradients`` and attributed to the right layer (by index and name), in float32 and
float64, and caught by ``check_layer`` alone; every built-in layer, activation and loss passes
the same checks."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxprop as jp
from jaxprop.data import load
from layer_checks import Scale

WIDTH = 6  # features into and out of every planted layer (so W can be square)


# -- planted layers (and Scale, y = x * s with its slips: tests/layer_checks.py) --------------


def MyDense(bug=None):
    """A hand-written Dense(WIDTH), y = x W + b, with the classic slips."""

    def init(key, in_shape):
        w = jax.random.normal(key, (in_shape[-1], WIDTH)) / np.sqrt(in_shape[-1])
        return {"W": w, "b": jnp.zeros((WIDTH,))}, (), (WIDTH,)

    def forward(params, state, x, *, key=None, train=True):
        return x @ params["W"] + params["b"], x, state

    def backward(params, x, dy):
        W = params["W"]
        dW, db, dx = x.T @ dy, dy.sum(0), dy @ W.T
        if bug == "W_untransposed":  # dy @ W instead of dy @ W^T (square W: no shape error)
            dx = dy @ W
        elif bug == "bias_not_summed":  # dL/db left per example: (batch, out)
            db = dy
        elif bug == "mean_not_sum":  # averaged over the batch where the loss already did it
            dW, db = dW / x.shape[0], dy.mean(0)
        elif bug == "swapped_outputs":
            return dx, {"W": dW, "b": db}
        return {"W": dW, "b": db}, dx

    return jp.Layer(init, forward, backward, name=f"dense[{bug}]")


def MyTanh(bug=None):
    def forward(x):
        t = jnp.tanh(x)
        return t, t

    def backward(t, dy):
        if bug == "wrong_sign":
            return -dy * (1 - t * t)
        if bug == "returns_dy":
            return dy
        if bug == "wrong_dx_shape":
            return (dy * (1 - t * t)).sum(-1, keepdims=True)
        return dy * (1 - t * t)

    return jp.elementwise(f"tanh[{bug}]", forward, backward)


def LayerNorm(bug=None):
    """Parameter-free normalisation over the features; the bug drops dx's projection term."""

    def init(key, in_shape):
        return (), (), tuple(in_shape)

    def forward(params, state, x, *, key=None, train=True):
        xc = x - x.mean(-1, keepdims=True)
        r = 1 / jnp.sqrt((xc * xc).mean(-1, keepdims=True) + 1e-5)
        return xc * r, (xc * r, r), state

    def backward(params, res, dy):
        y, r = res
        dx = r * (dy - dy.mean(-1, keepdims=True))
        if bug != "missing_term":
            dx = dx - r * y * (dy * y).mean(-1, keepdims=True)
        return (), dx

    return jp.Layer(init, forward, backward, name=f"layernorm[{bug}]")


def Softmax(bug=None):
    def forward(x):
        s = jax.nn.softmax(x, axis=-1)
        return s, s

    def backward(s, dy):
        if bug == "missing_term":  # the diagonal of the Jacobian only
            return s * dy
        return s * (dy - jnp.sum(dy * s, axis=-1, keepdims=True))

    return jp.elementwise(f"softmax[{bug}]", forward, backward)


def Dropout(bug=None, rate=0.5):
    def init(key, in_shape):
        return (), (), tuple(in_shape)

    def forward(params, state, x, *, key=None, train=True):
        if not train:
            return x, None, state
        scale = jax.random.bernoulli(key, 1 - rate, x.shape) / (1 - rate)
        return x * scale, scale, state

    def backward(params, scale, dy):
        if scale is None:
            return (), dy
        if bug == "mask_not_applied":  # right in evaluation, wrong in training
            return (), dy / (1 - rate)
        return (), dy * scale

    return jp.Layer(init, forward, backward, name=f"dropout[{bug}]")


def Center(bug=None):
    """x minus the batch mean in training (couples the batch); a running mean in evaluation."""

    def init(key, in_shape):
        return (), {"mean": jnp.zeros(in_shape[-1:])}, tuple(in_shape)

    def forward(params, state, x, *, key=None, train=True):
        if not train:
            return x - state["mean"], None, state
        mu = x.reshape(-1, x.shape[-1]).mean(0)
        return x - mu, x.shape, {"mean": 0.9 * state["mean"] + 0.1 * mu}

    def backward(params, shape, dy):
        if shape is None or bug == "ignores_batch_mean":
            return (), dy
        return (), dy - dy.reshape(-1, dy.shape[-1]).mean(0)

    return jp.Layer(init, forward, backward, name=f"center[{bug}]", couples_batch=True)


# name -> (the wrong layer, the check that catches it is a malformed-output error)
CATALOGUE = {
    "dx missing a term (LayerNorm)": (lambda: LayerNorm("missing_term"), False),
    "dx missing a term (softmax)": (lambda: Softmax("missing_term"), False),
    "wrong sign": (lambda: MyTanh("wrong_sign"), False),
    "W used untransposed": (lambda: MyDense("W_untransposed"), False),
    "bias gradient not summed over the batch": (lambda: MyDense("bias_not_summed"), True),
    "a mean where a sum belongs": (lambda: MyDense("mean_not_sum"), False),
    "visible only at non-default params (scale = 1)": (lambda: Scale("forgets_s"), False),
    "only in train=True mode (dropout mask)": (lambda: Dropout("mask_not_applied"), False),
    "only for batch > 1": (lambda: Scale("first_example_only"), False),
    "couples the batch: batch-mean term dropped": (lambda: Center("ignores_batch_mean"), False),
    "wrong-shaped dparams": (lambda: Scale("wrong_shaped_dparams"), True),
    "swapped outputs": (lambda: MyDense("swapped_outputs"), True),
    "None grads": (lambda: Scale("none_grads"), True),
    "backward returns dy unchanged": (lambda: MyTanh("returns_dy"), False),
    "wrong dx shape": (lambda: MyTanh("wrong_dx_shape"), True),
    "wrong dtype": (lambda: Scale("wrong_dtype"), True),
}


def problem(layers, position, dtype, batch=4):
    """A float ``dtype`` model of ``layers`` (``layers[position]`` is the wrong one) with data."""
    model = jp.serial(*layers, in_shape=(WIDTH,))
    params, state = model.init_with_state(jax.random.key(0))
    cast = lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a  # noqa: E731
    params, state = jax.tree.map(cast, params), jax.tree.map(cast, state)
    x = jax.random.normal(jax.random.key(1), (batch, WIDTH), dtype)
    t = jax.random.normal(jax.random.key(2), (batch, 3), dtype)
    return model, params, state, x, t


def around(bug_layer):
    """The wrong layer in the middle (index 2) of Dense -> tanh -> BUG -> Dense(3)."""
    return [jp.Dense(WIDTH), jp.Tanh(), bug_layer, jp.Dense(3)], 2


@pytest.mark.long
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("bug", list(CATALOGUE))
def test_planted_bug_is_caught_and_attributed(bug, dtype):
    make, malformed = CATALOGUE[bug]
    layers, position = around(make())
    model, params, state, x, t = problem(layers, position, dtype)
    report = jp.check_gradients(model, "mse", params, x, t, state=state)
    assert not report.ok, f"{bug}: not caught\n{report}"
    first = report.first_failure
    assert (first.index, first.name) == (str(position), layers[position].name), str(report)
    assert {lc.index for lc in report.layer_failures} == {str(position)}, str(report)
    verdict = report.verdict()
    assert verdict.startswith(f"FAILED: layer {position} ({layers[position].name}): "), verdict
    assert (first.error is not None) == malformed, first.problem()


@pytest.mark.parametrize("bug", list(CATALOGUE))
def test_planted_bug_is_caught_by_check_layer(bug):
    make, malformed = CATALOGUE[bug]
    layer = make()
    report = jp.check_layer(layer, (WIDTH,))
    assert not report.ok, f"{bug}: not caught\n{report}"
    assert report.verdict().startswith(f"FAILED: {layer.name}: ")
    assert (report.layers[0].error is not None) == malformed


@pytest.mark.long
@pytest.mark.parametrize("position", [0, 2, 4], ids=["first", "middle", "last"])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64], ids=["f32", "f64"])
def test_position_first_middle_last(position, dtype):
    layers = [jp.Tanh(), jp.Dense(WIDTH), jp.Tanh(), jp.Dense(WIDTH), jp.Tanh()]
    layers[position] = MyTanh("wrong_sign")
    model, params, _, x, _ = problem(layers, position, dtype)
    t = jax.random.normal(jax.random.key(2), (4, WIDTH), dtype)
    report = jp.check_gradients(model, "mse", params, x, t)
    assert not report.ok
    assert report.first_failure.index == str(position)
    assert {lc.index for lc in report.layer_failures} == {str(position)}
    # a wrong first layer reaches no parameter: end to end alone would have passed
    assert (position == 0) == all(leaf.ok for leaf in report.leaves)


@pytest.mark.long
def test_bug_at_default_params_is_found_only_at_perturbed_params():
    layers, position = around(Scale("forgets_s"))
    model, params, state, x, t = problem(layers, position, jnp.float32)
    report = jp.check_gradients(model, "mse", params, x, t)
    at = {(lc.index, lc.point): lc.ok for lc in report.layers}
    assert at[("2", "given params")] and not at[("2", "perturbed params")]
    without = jp.check_gradients(model, "mse", params, x, t, perturb_params=False)
    assert without.ok  # exactly what perturbing the params is for


def test_train_only_bug_passes_in_evaluation_mode():
    layer = Dropout("mask_not_applied")
    assert not jp.check_layer(layer, (WIDTH,), train=True).ok
    assert jp.check_layer(layer, (WIDTH,), train=False).ok


def test_batch_bug_needs_a_batch_of_two():
    layer = Scale("first_example_only")
    assert jp.check_layer(layer, (WIDTH,), batch=1).ok
    assert not jp.check_layer(layer, (WIDTH,), batch=2).ok


def test_nested_model_names_the_inner_layer():
    inner = jp.serial(jp.Dense(WIDTH), MyTanh("wrong_sign"))
    model = jp.serial(jp.Dense(WIDTH), inner, jp.Dense(3), in_shape=(WIDTH,))
    params = model.init(jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (4, WIDTH))
    t = jax.random.normal(jax.random.key(2), (4, 3))
    report = jp.check_gradients(model, "mse", params, x, t)
    assert report.first_failure.index == "1.1"
    assert report.verdict().startswith("FAILED: layer 1.1 (tanh[wrong_sign]): dx disagrees")


# -- malformed backward passes: one clear error naming the layer, wherever gradients are taken


MALFORMED_MESSAGES = {
    "wrong-shaped dparams": r"layer 2 \(scale\[wrong_shaped_dparams\]\): dparams\['s'\] has "
                            r"shape \(1, 6\) but the parameter has shape \(6,\)",
    "swapped outputs": r"layer 2 \(dense\[swapped_outputs\]\): backward returned \(dx, "
                       r"dparams\); it must return \(dparams, dx\)",
    "None grads": r"layer 2 \(scale\[none_grads\]\): dparams is None but the layer has "
                  r"parameters \['s'\]",
    "wrong dx shape": r"layer 2 \(tanh\[wrong_dx_shape\]\): dx has shape \(4, 1\) but the "
                      r"layer's input has shape \(4, 6\)",
    "wrong dtype": r"layer 2 \(scale\[wrong_dtype\]\): dx has dtype bfloat16 but the layer's "
                   r"input is float32",
    "bias gradient not summed over the batch": r"layer 2 \(dense\[bias_not_summed\]\): "
                                               r"dparams\['b'\] has shape \(4, 6\)",
}


@pytest.mark.long
@pytest.mark.parametrize("bug", list(MALFORMED_MESSAGES))
def test_malformed_backward_is_one_clear_error_in_value_and_grad(bug):
    layers, position = around(CATALOGUE[bug][0]())
    model, params, state, x, t = problem(layers, position, jnp.float32)
    with pytest.raises(ValueError, match=MALFORMED_MESSAGES[bug]):
        jp.value_and_grad(model, "mse", params, x, t)
    report = jp.check_gradients(model, "mse", params, x, t)
    assert report.end_to_end_error is not None and not report.leaves
    assert f"layer {position} (" in report.verdict()


def test_malformed_backward_is_one_clear_error_in_fit():
    data = load("moons", seed=0, n_samples=32)
    model = jp.serial(jp.Dense(WIDTH), Scale("wrong_shaped_dparams"), jp.Dense(1),
                      in_shape=(2,))
    with pytest.raises(ValueError, match=r"layer 1 \(scale\[wrong_shaped_dparams\]\): "
                                         r"dparams\['s'\] has shape \(1, 6\)"):
        jp.fit(model, "bce_with_logits", optax.sgd(0.1), data, epochs=1, batch_size=8,
               key=jax.random.key(0))


def test_a_raising_backward_names_the_layer():
    def backward(params, x, dy):
        return {"s": (dy * x).sum(0)}, dy @ jnp.ones((3, 5))  # a shape slip inside backward

    bad = jp.Layer(Scale().init, Scale().forward, backward, name="oops")
    model = jp.serial(jp.Dense(WIDTH), bad, in_shape=(WIDTH,))
    params = model.init(jax.random.key(0))
    x = jnp.ones((4, WIDTH))
    with pytest.raises(ValueError, match=r"layer 1 \(oops\): backward raised TypeError: "
                                         r"dot_general"):
        jp.value_and_grad(model, "mse", params, x, x)
    report = jp.check_layer(bad, (WIDTH,))
    assert not report.ok and "backward raised TypeError" in report.verdict()


# -- no vacuous pass ------------------------------------------------------------------------


def test_nothing_checked_is_not_a_pass():
    def init(key, in_shape):
        return (), (), tuple(in_shape)

    def forward(params, state, x, *, key=None, train=True):
        return x.astype(jnp.float32), None, state

    lookup = jp.Layer(init, forward, lambda p, r, dy: ((), None), name="int_input")
    report = jp.check_layer(lookup, (3,), x=jnp.ones((2, 3), jnp.int32))
    assert not report.ok and "nothing to check" in report.verdict()


def test_a_parameter_free_model_is_checked_through_dx():
    model = jp.serial(LayerNorm(), jp.Tanh(), in_shape=(WIDTH,))
    x = jax.random.normal(jax.random.key(1), (4, WIDTH))
    report = jp.check_gradients(model, "mse", [(), ()], x, jnp.zeros((4, WIDTH)))
    assert report.ok and not report.leaves and report.checked == 4  # dx of 2 layers x 2 points
    assert report.verdict().startswith("OK: no parameters; every layer's dx agrees")
    bad = jp.serial(LayerNorm("missing_term"), jp.Tanh(), in_shape=(WIDTH,))
    assert not jp.check_gradients(bad, "mse", [(), ()], x, jnp.zeros((4, WIDTH))).ok


# -- every built-in passes ------------------------------------------------------------------


@pytest.mark.long
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("name", ["dense", *jp.ACTIVATIONS])
def test_every_builtin_layer_passes(name, dtype):
    layer = jp.Dense(5) if name == "dense" else jp.activation(name)
    for train in (True, False):
        report = jp.check_layer(layer, (7,), dtype=dtype, train=train)
        assert report.ok, str(report)
        assert report.leaves[0].name == "dx" and report.layers[0].quantities
    if name == "dense":  # any leading axes: (batch, 3, 7) inputs
        assert jp.check_layer(layer, (3, 7), dtype=dtype).ok


@pytest.mark.long
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("name", list(jp.LOSSES))
def test_every_builtin_loss_passes(name, dtype):
    report = jp.check_loss(name, (4,), dtype=dtype)
    assert report.ok, str(report)
    # integer class labels have no gradient: such a loss has no target_grad to check
    has_target_grad = jp.get_loss(name).target_grad is not None
    assert has_target_grad != jp.get_loss(name).integer_labels
    assert [lc.index for lc in report.layers] == ["dL/dy", "dL/dt"][:1 + has_target_grad]


def test_a_wrong_loss_gradient_is_blamed_on_the_loss():
    mse = jp.get_loss("mse")
    wrong = jp.make_loss("mse_wrong", mse.value, lambda y, t: (y - t) / y.size,
                         reduction="mean_all", from_logits=False)
    assert not jp.check_loss(wrong).ok
    model = jp.mlp([3, 4, 2], "tanh", "identity")
    params = model.init(jax.random.key(0))
    x, t = jnp.ones((4, 3)), jnp.zeros((4, 2))
    report = jp.check_gradients(model, wrong, params, x, t)
    assert not report.ok and report.first_failure is None
    assert "look at the loss's grad" in report.verdict()


# -- no false alarms at the usual non-differentiable or cancelling points -------------------


def PairMax():
    """The max of each pair of features; the gradient goes to the first maximal one (as a
    max-pool does): at a tie, hand-written and autodiff gradients are both valid, and differ."""

    def forward(x):
        a, b = x[..., 0::2], x[..., 1::2]
        return jnp.maximum(a, b), b > a

    def backward(second, dy):
        return jnp.stack([jnp.where(second, 0, dy), jnp.where(second, dy, 0)], -1).reshape(
            dy.shape[:-1] + (-1,))

    layer = jp.elementwise("pairmax", forward, backward)

    def init(key, in_shape):
        return (), (), tuple(in_shape[:-1]) + (in_shape[-1] // 2,)

    return jp.Layer(init, layer.forward, layer.backward, name="pairmax")


@pytest.mark.long
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64], ids=["f32", "f64"])
def test_relu_zeros_into_a_max_and_a_bias_before_centring_pass(dtype):
    """ReLU's zeros meet in PairMax (exact ties: without the per-layer jitter this fails);
    Dense's bias feeds Center, which removes the batch mean, so its exact gradient is 0."""
    layers = [jp.Dense(8), Center(), jp.Relu(), PairMax(), jp.Dense(3)]
    model, params, state, x, t = problem(layers, 0, dtype, batch=16)
    report = jp.check_gradients(model, "mse", params, x, t, state=state)
    assert report.ok, str(report)
    bias = next(leaf for leaf in report.leaves if leaf.name == "layer 0 Dense(8) b")
    assert bias.grad_ok
