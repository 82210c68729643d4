"""check_layer draws inputs from several distributions (issue 19, part 1): a bug that lives only
where beta * x < -4 is caught by default and named with its draw; its correct twin passes;
the user's own draw (``inputs=``, ``--input-scale/--input-range/--inputs``) is checked too."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxprop as jp
from jaxprop.cli import main
from jaxprop.tools.gradcheck import DEFAULT_BATCH, DRAWS
from jaxprop.tools.gradcheck_report import ERROR_LEGEND, VERDICT_WIDTH

SWISH = '''
import jax
import jax.numpy as jnp
import jaxprop as jp


def Swish(bug=False):
    """y = x sigmoid(beta x); with ``bug`` its backward treats beta x < -4 as saturated."""
    def init(key, in_shape):
        return {"beta": jnp.ones(())}, (), tuple(in_shape)

    def forward(params, state, x, *, key=None, train=True):
        return x * jax.nn.sigmoid(params["beta"] * x), x, state

    def backward(params, x, dy):
        b = params["beta"]
        z = b * x
        s = jax.nn.sigmoid(z)
        dz = s * (1 - s)
        if bug:
            dz = jnp.where(z < -4, 0.0, dz)
        return {"beta": jnp.sum(dy * x * x * dz)}, dy * (s + x * b * dz)

    return jp.Layer(init, forward, backward, name="swish")


def BuggySwish():
    return Swish(bug=True)
'''


@pytest.fixture(scope="module")
def swish(tmp_path_factory):
    path = tmp_path_factory.mktemp("user") / "swish_layers.py"
    path.write_text(SWISH)
    ns = {}
    exec(compile(SWISH, str(path), "exec"), ns)  # noqa: S102 - the test's own code
    return ns["Swish"], path


def test_a_bug_beyond_normal_inputs_is_caught_and_its_draw_named(swish):
    Swish, _ = swish
    # N(0, 1) alone (the check before issue 19) misses it
    assert jp.check_layer(Swish(bug=True), (8,), draws="normal").ok
    report = jp.check_layer(Swish(bug=True), (8,))
    assert not report.ok
    assert [lc.draw for lc in report.layers] == ["normal", "wide x10", "near-kink"]
    failing = {lc.draw for lc in report.layer_failures}
    assert "normal" not in failing and failing, str(report)
    first = report.first_failure
    assert f"{first.draw} inputs" in report.verdict()
    assert report.verdict().startswith("FAILED: swish: dx disagrees with jax.vjp float32")
    assert len(report.verdict()) <= VERDICT_WIDTH


def test_the_correct_twin_passes_every_draw(swish):
    Swish, _ = swish
    report = jp.check_layer(Swish(), (8,), inputs=(-30.0, -4.0))
    assert report.ok, str(report)
    assert [lc.draw for lc in report.layers] == ["normal", "wide x10", "near-kink", "[-30, -4]"]
    assert report.verdict().startswith("OK: swish: backward agrees for dx, beta at 4 points")


def test_the_users_draw_scale_range_or_array(swish):
    Swish, _ = swish
    bug = Swish(bug=True)
    only = jp.check_layer(bug, (8,), draws=(), inputs=(-8.0, -4.0))
    assert not only.ok and [lc.draw for lc in only.layers] == ["[-8, -4]"]
    assert "at the random params, [-8, -4] inputs" in only.verdict()
    assert not jp.check_layer(bug, (8,), draws=(), inputs=20.0).ok
    x = np.full((2, 8), -6.0, np.float32)
    given = jp.check_layer(bug, (8,), draws=(), inputs=x)
    assert not given.ok and given.layers[0].draw == "given"
    assert jp.check_layer(Swish(), (8,), draws=(), inputs=x).ok


@pytest.mark.parametrize("inputs, message", [
    ("wide", "inputs must be a scale"), (-1.0, "inputs .a scale. must be >= 0"),
    ((3.0, 1.0), "lo < hi"), (np.zeros((2, 3)), r"inputs must have shape \(n, \*in_shape\)"),
])
def test_bad_inputs_are_one_clear_error(swish, inputs, message):
    Swish, _ = swish
    with pytest.raises(ValueError, match=message):
        jp.check_layer(Swish(), (8,), inputs=inputs)


def test_unknown_draw_is_named():
    with pytest.raises(ValueError, match="unknown input draw 'huge'; known: normal, wide, kinks"):
        jp.check_layer(jp.Tanh(), (3,), draws=("huge",))
    assert list(DRAWS) == ["normal", "wide", "kinks"]


def test_reports_read_in_one_line_with_details_below(swish):
    Swish, _ = swish
    report = jp.check_layer(Swish(bug=True), (8,))
    lines = str(report).splitlines()
    # the table, the one-line legend of its one error measure, the verdict, then the details
    legend = lines.index(ERROR_LEGEND)
    assert lines[legend + 1] == report.verdict() and len(report.verdict()) <= VERDICT_WIDTH
    assert "\n".join(lines[legend + 2:]) == report.details()
    assert lines[0].split() == ["quantity", "shape", "inputs", "error", "vs", "ok"]
    details = report.details()
    assert "tolerances: jax.vjp float32 rtol 1e-05" in details and "batch 8" in details
    assert "wide x10 inputs" in details and "near-kink inputs" in details


def test_cli_and_python_share_the_default_batch(swish, capsys):
    _, path = swish
    assert jp.check_layer(jp.Tanh(), (3,)).settings["batch"] == DEFAULT_BATCH
    assert main(["check", "--layer", f"{path}:Swish", "--in-shape", "8"]) == 0
    assert f"batch {DEFAULT_BATCH}" in capsys.readouterr().out


def test_cli_input_options(swish, capsys, tmp_path):
    _, path = swish
    argv = ["check", "--layer", f"{path}:BuggySwish", "--in-shape", "8"]
    assert main(argv + ["--input-range=-8,-4"]) == 1
    out = capsys.readouterr().out
    assert "[-8, -4] inputs" in out and "FAILED: swish" in out
    npy = tmp_path / "x.npy"
    np.save(npy, np.full((3, 8), -5.0, np.float32))
    assert main(argv[:3] + ["--in-shape", "8", "--inputs", str(npy)]) == 1
    assert "given" in capsys.readouterr().out
    assert main(argv + ["--input-range", "4,1"]) == 2
    assert "LO < HI" in capsys.readouterr().err
    assert main(argv + ["--input-scale", "2", "--input-range", "1,2"]) == 2


@pytest.mark.long
def test_cli_model_checks_at_the_users_inputs(swish, capsys):
    _, path = swish
    argv = ["check", "--sizes", "4,6,2", "--activation", "tanh", "--input-scale", "30"]
    assert main(argv) == 0
    assert "OK: all 4 gradient leaves agree" in capsys.readouterr().out
    assert main(["check", "--preset", "xor", "--input-scale", "3"]) == 2


@pytest.mark.long
@pytest.mark.parametrize("seed", range(5))
def test_no_false_alarm_for_builtin_activations_at_any_draw(seed):
    for name in jp.ACTIVATIONS:
        report = jp.check_layer(jp.activation(name), (7,), key=jax.random.key(seed))
        assert report.ok, str(report)
    assert jp.check_layer(jp.Dense(5, dtype=jnp.float32), (7,), key=jax.random.key(seed)).ok


@pytest.mark.long
def test_the_swish_bug_at_20_seeds(swish):
    """Caught at every seed by default (N(0, 1) alone: almost never); the twin never fails."""
    Swish, _ = swish
    keys = [jax.random.key(seed) for seed in range(20)]
    assert all(not jp.check_layer(Swish(bug=True), (8,), key=k).ok for k in keys)
    assert sum(not jp.check_layer(Swish(bug=True), (8,), key=k, draws="normal").ok
               for k in keys) <= 2
    assert all(jp.check_layer(Swish(), (8,), key=k).ok for k in keys)


def test_a_float_draw_for_a_layer_on_token_ids_is_refused():
    with pytest.raises(ValueError, match=r"Embedding.* takes token ids \(0..6\)"):
        jp.check_layer(jp.Embedding(7, 3), (5,), inputs=3.0)
