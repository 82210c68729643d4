"""check_gradients and `jaxprop check`: honest gradients pass, a broken layer is caught."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxprop as jp
from jaxprop.cli import main
from jaxprop.tools import presets


def mixed_problem(dtype, batch=8, seed=0):
    model, loss = presets.mixed_preset(dtype)
    kp, kd = jax.random.split(jax.random.key(seed))
    params, _, out_shape = model.init(kp, model.in_shape)
    x, t = presets.make_data(kd, loss, model.in_shape, out_shape, batch, dtype)
    return model, loss, params, x, t


@pytest.mark.long
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64], ids=["f32", "f64"])
def test_mixed_preset_is_ok(dtype):
    model, loss, params, x, t = mixed_problem(dtype)
    assert set(jp.ACTIVATIONS) <= {layer.name for layer in model.layers}
    assert sum(layer.name.startswith("Dense") for layer in model.layers) == 5
    report = jp.check_gradients(model, loss, params, x, t)
    assert report.ok, str(report)
    assert report.dtype == jnp.dtype(dtype).name
    assert report.grad_rtol == (1e-5 if dtype == jnp.float32 else 1e-10)
    assert [c.name for c in report.leaves[:2]] == ["layer 0 Dense(8) W", "layer 0 Dense(8) b"]
    assert len(report.leaves) == 10 and not any(c.sampled for c in report.leaves)
    for c in report.leaves:
        assert c.grad_rel_err <= report.grad_rtol and c.fd_rel_err <= report.fd_rtol
        assert c.fd_coords == c.size and c.dtype == jnp.dtype(dtype).name
    assert report.verdict().startswith("OK: all 10 gradient leaves agree")


def broken_tanh(factor=1.5):
    """tanh whose backward is off by ``factor``: the kind of slip a hand derivation makes."""

    def forward(x):
        y = jnp.tanh(x)
        return y, y

    return jp.elementwise("broken_tanh", forward, lambda y, dy: factor * dy * (1 - y * y))


@pytest.mark.long
@pytest.mark.x64
@pytest.mark.parametrize("factor", [1.5, 1.0 + 1e-4])
def test_broken_layer_is_reported(factor):
    model = jp.serial(
        jp.Dense(6, dtype=jnp.float64), broken_tanh(factor),
        jp.Dense(2, dtype=jnp.float64), jp.activation("identity"),
        in_shape=(3,),
    )  # fmt: skip
    params = model.init(jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (5, 3), jnp.float64)
    t = jax.random.normal(jax.random.key(2), (5, 2), jnp.float64)
    report = jp.check_gradients(model, "mse", params, x, t)
    assert not report.ok
    bad = {c.name for c in report.failures}
    # only the gradients that flow back through the broken layer are wrong
    assert bad == {"layer 0 Dense(6) W", "layer 0 Dense(6) b"}
    for c in report.failures:
        assert not c.grad_ok and not c.fd_ok
    # per-layer checks name the wrong layer itself, not the Dense layer upstream of it
    assert report.first_failure.index == "1" and report.first_failure.name == "broken_tanh"
    assert report.verdict().startswith("FAILED: layer 1 (broken_tanh): dx disagrees")
    assert "2 of 4 gradient leaves disagree: layer 0 Dense(6) W, layer 0 Dense(6) b" \
        in report.details()


@pytest.mark.x64
def test_large_leaves_are_sampled_and_say_so():
    model = jp.mlp([3, 40, 2], "relu", "identity", dtype=jnp.float64)
    params = model.init(jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (4, 3), jnp.float64)
    t = jax.random.normal(jax.random.key(2), (4, 2), jnp.float64)
    report = jp.check_gradients(model, "mse", params, x, t, max_fd_coords=30)
    assert report.ok, str(report)
    sizes = {c.name: (c.fd_coords, c.size, c.sampled) for c in report.leaves}
    assert sizes["layer 0 Dense(40) W"] == (30, 120, True)
    assert sizes["layer 2 Dense(2) b"] == (2, 2, False)
    assert "random 30-coordinate subset of 3 large leaf(s)" in report.details()
    assert "(FD on 30/120)" in str(report)


@pytest.mark.long
def test_cli_check_default_preset_exits_0(capsys):
    assert main(["check"]) == 0
    out = capsys.readouterr().out
    assert "layer 0 Dense(8) W" in out and "OK: all 10 gradient leaves agree" in out


@pytest.mark.x64
def test_cli_check_sizes_float64(capsys):
    argv = ["check", "--sizes", "3,5,4", "--activation", "softplus", "--output-activation",
            "identity", "--loss", "softmax_cross_entropy", "--dtype", "float64", "--batch", "3"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "softplus" in out and "rtol 1e-10 in float64" in out and "OK:" in out


def test_cli_check_exits_1_when_a_gradient_is_wrong(capsys, monkeypatch):
    def broken_preset(dtype=jnp.float32):
        model = jp.serial(jp.Dense(4, dtype=dtype), broken_tanh(), jp.Dense(2, dtype=dtype),
                          in_shape=(3,))
        return model, "mse"

    monkeypatch.setattr(presets, "mixed_preset", broken_preset)
    assert main(["check", "--dtype", "float64"]) == 1
    out = capsys.readouterr().out
    assert "NO" in out and "FAILED: layer 1 (broken_tanh)" in out
    assert "2 of 4 gradient leaves disagree" in out


def test_report_errors_follow_the_documented_definition():
    g, r = np.array([1.0, 0.0, -2.0]), np.array([1.0 + 1e-6, 1e-9, -2.0])
    from jaxprop.tools.gradcheck import ATOL_FRAC, _errors

    abs_err, rel_err, ok = _errors(g, r, rtol=1e-5, scale=2.0)
    assert abs_err == pytest.approx(1e-6)
    atol = 1e-5 * ATOL_FRAC * 2.0
    expected = max(1e-6 / (1 + 1e-6 + atol / 1e-5), 1e-9 / (1e-9 + atol / 1e-5))
    assert rel_err == pytest.approx(expected) and ok == (rel_err <= 1e-5)
    assert ok == np.allclose(g, r, rtol=1e-5, atol=atol)


@pytest.mark.x64
def test_a_step_across_a_relu_kink_is_not_a_failure(monkeypatch):
    """A pre-activation 3e-7 from ReLU's kink: central differences with h = 1e-6 straddle it
    (and are wrong); at h/100 they do not. A true gradient passes, a wrong one would not."""
    from jaxprop.tools import gradcheck

    model = jp.serial(jp.Dense(2, dtype=jnp.float64), jp.Relu(), in_shape=(1,))
    params = [{"W": jnp.array([[1.0, 1.0]]), "b": jnp.array([-1.0 + 3e-7, 0.5])}, ()]
    x, t = jnp.ones((1, 1)), jnp.array([[2.0, -1.0]])
    report = jp.check_gradients(model, "mse", params, x, t, perturb_params=False)
    assert report.ok, str(report)
    monkeypatch.setattr(gradcheck, "FD_STEPS", (1.0,))  # one step only: the kink bites
    report = jp.check_gradients(model, "mse", params, x, t, perturb_params=False)
    assert not report.ok
    bad = {c.name for c in report.failures}
    assert bad == {"layer 0 Dense(2) W", "layer 0 Dense(2) b"}  # both move z_0 across 0
    assert all(c.grad_ok and not c.fd_ok for c in report.failures)


@pytest.mark.long
def test_gradcheck_speed_benchmark_runs(tmp_path):
    """benchmarks/gradcheck_speed.py on a tiny network (no speed is asserted)."""
    import json
    import runpy
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "gradcheck_speed.py"
    main_fn = runpy.run_path(str(script))["main"]
    out = tmp_path / "speed.json"
    result = main_fn(["--sizes", "4,8,3", "--activation", "tanh", "--repeats", "1",
                      "--json", str(out)])
    assert result["ok"] and json.loads(out.read_text())["n_params"] == 4 * 8 + 8 + 8 * 3 + 3
    assert result["check_s"]["median"] > 0 and result["per_layer_cpu_s"]["median"] > 0


def test_a_gradient_that_is_zero_up_to_rounding_is_not_a_failure():
    """A bias before BatchNorm: its exact gradient is 0, hand-written and autodiff both give
    rounding noise of sums of terms as large as the rest of the gradient. A leaf's own scale
    is then noise too; the floor of CANCEL_ULPS ulps of the whole gradient's scale decides."""
    from jaxprop.tools.gradcheck import CANCEL_ULPS, _cancel_floor, _errors, _scale

    g, r = np.array([3e-16, -1e-16]), np.array([-2e-16, 2e-16])
    assert not _errors(g, r, 1e-10, _scale(r, 1.0))[2]  # the leaf's scale alone: "wrong"
    floor = _cancel_floor("float64", 1.0)
    assert floor == pytest.approx(CANCEL_ULPS * np.finfo(np.float64).eps)
    assert _errors(g, r, 1e-10, _scale(r, 1.0), floor)[2]
    wrong = np.array([1e-9, 0.0])  # a real error far above the noise is still caught
    assert not _errors(wrong, r, 1e-10, _scale(r, 1.0), floor)[2]


def test_a_bfloat16_model_gets_the_dtype_error_before_anything_compiles():
    model = jp.mlp([3, 4, 2], "tanh", "identity", dtype=jnp.bfloat16)
    params = model.init(jax.random.key(0))
    x, t = jnp.ones((2, 3)), jnp.ones((2, 2))
    with pytest.raises(ValueError, match=r"dtype must be float32 or float64, got bfloat16 "
                                         r"\(the params' dtype\)"):
        jp.check_gradients(model, "mse", params, x, t)
    with pytest.raises(ValueError, match="dtype must be float32 or float64, got bfloat16"):
        jp.check_gradients(model, "mse", params, x, t, dtype=jnp.bfloat16)


def test_check_gradients_dtype_casts_the_params():
    """dtype=float64 checks a float32 model in float64 (what `jaxprop check --dtype float64`
    asks for), without the caller enabling x64."""
    model = jp.mlp([3, 4, 2], "tanh", "identity")
    params = model.init(jax.random.key(0))
    x, t = jnp.ones((2, 3)), jnp.zeros((2, 2))
    report = jp.check_gradients(model, "mse", params, x, t, dtype=jnp.float64)
    assert report.ok, str(report)
    assert report.dtype == "float64" and {c.dtype for c in report.leaves} == {"float64"}
    assert "rtol 1e-10 in float64" in report.details()


@pytest.mark.parametrize("batch", [0, -1, 2.5, True])
def test_check_loss_refuses_a_bad_batch(batch):
    with pytest.raises(ValueError, match=f"batch must be a positive int, got {batch!r}"):
        jp.check_loss("mse", batch=batch)


@pytest.mark.parametrize("fd_directions", [0, 1.0, True])
def test_check_loss_refuses_bad_fd_directions(fd_directions):
    """True is no count of directions (it used to pass as 1)."""
    with pytest.raises(ValueError, match=f"fd_directions must be a positive int, got "
                                         f"{fd_directions!r}"):
        jp.check_loss("mse", fd_directions=fd_directions)


def test_check_loss_names_its_quantities():
    report = jp.check_loss("softmax_cross_entropy", (3,))
    assert report.ok, str(report)
    assert [q.name for q in report.leaves] == ["dL/dy", "dL/dt"]
    assert "backward agrees for dL/dy, dL/dt" in report.verdict()


def _with_non_finite(params):
    """``params`` with a NaN and an Inf in the first layer's ``W``."""
    w = params[0]["W"]
    return [{**params[0], "W": w.at[0, 1].set(jnp.nan).at[1, 1].set(jnp.inf)}, *params[1:]]


def test_check_gradients_refuses_non_finite_params_and_state_naming_the_leaf():
    """NaN/Inf params (or state) are one ValueError naming the leaf and the count, not a
    report of every gradient disagreeing with an infinite error."""
    model = jp.mlp([3, 4, 2], "tanh", "identity")
    params = model.init(jax.random.key(0))
    x, t = jnp.ones((2, 3)), jnp.zeros((2, 2))
    with pytest.raises(ValueError, match=r"^the given params contain NaN/Inf: params\[0\]\['W'\] "
                                         r"has 2 non-finite value\(s\) of 12; gradients cannot"):
        jp.check_gradients(model, "mse", _with_non_finite(params), x, t)
    with pytest.raises(ValueError, match=r"params\[0\]\['W'\] has 2 non-finite"):
        jp.check_gradients(model, "mse", _with_non_finite(params), x, t, dtype=jnp.float64)
    with pytest.raises(ValueError, match=r"x contains 1 NaN/Inf value"):  # x was checked already
        jp.check_gradients(model, "mse", params, x.at[1, 2].set(jnp.inf), t)
    bn = jp.serial(jp.Dense(4), jp.BatchNorm(), jp.Dense(2), in_shape=(3,))
    p, s = bn.init_with_state(jax.random.key(0))
    s[1] = {**s[1], "var": s[1]["var"].at[3].set(jnp.nan)}
    with pytest.raises(ValueError, match=r"^the state's arrays contain NaN/Inf: "
                                         r"state\[1\]\['var'\] has 1 non-finite value\(s\) of 4"):
        jp.check_gradients(bn, "mse", p, x, t, state=s)


def test_check_layer_refuses_non_finite_params_state_and_inputs():
    model = jp.mlp([2, 3, 1], "tanh", "identity")
    params = _with_non_finite(model.init(jax.random.key(0)))
    with pytest.raises(ValueError, match=r"^the given params contain NaN/Inf: params\['W'\] "
                                         r"has 2 non-finite value\(s\) of 6"):
        jp.check_layer(jp.Dense(3), (2,), params=params[0])
    with pytest.raises(ValueError, match=r"^the inputs contain NaN/Inf: x has 1 non-finite "
                                         r"value\(s\) of 4"):
        jp.check_layer(jp.Dense(3), (2,), x=jnp.array([[1.0, jnp.nan], [0.0, 1.0]]))
    _, state, _ = jp.BatchNorm().init(jax.random.key(0), (3,))
    state = {**state, "mean": state["mean"].at[0].set(-jnp.inf)}
    with pytest.raises(ValueError, match=r"^the state's arrays contain NaN/Inf: "
                                         r"state\['mean'\] has 1 non-finite value\(s\) of 3"):
        jp.check_layer(jp.BatchNorm(), (3,), state=state, train=False)
