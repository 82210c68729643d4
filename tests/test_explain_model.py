"""`jaxprop explain --model`: any small architecture, every activation and loss, against autodiff.

The trace's numbers (values, dL/da, deltas, weight gradients, updates) equal ``jax.grad`` of
the same forward pass; models that are not Dense + activation come as tables of values; a
model above the size limit is refused with one line.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxprop.cli import main
from jaxprop.core.losses import get_loss
from jaxprop.core.spec import parse_model
from jaxprop.tools import explain as ex
from jaxprop.tools.explain_diagram import diagram
from jaxprop.tools.explain_html import render_html
from jaxprop.tools.explain_view import table_view, view

CHAINS = [  # (architecture, the same forward's activations written with jax.nn, loss)
    pytest.param("dense(3)-relu-dense(3)-tanh-dense(3)",
                 [jax.nn.relu, jnp.tanh, lambda z: z], "softmax_cross_entropy",
                 id="relu-tanh-ce"),
    pytest.param("dense(3)-leaky_relu(0.2)-dense(3)-softmax",  # softmax couples its units
                 [lambda z: jax.nn.leaky_relu(z, 0.2), lambda z: jax.nn.softmax(z, axis=-1)],
                 "mse", id="leaky-softmax-mse", marks=pytest.mark.long),
]
TABLES = "conv(3,2,padding=valid)-layernorm-flatten-dense(1)"


def _chain_autodiff(spec, acts, loss, params):
    """Per layer ``(z, a, dL/da, dL/dz, dL/dW, dL/db)`` by jax.grad of a plain jnp forward in
    which zeros are added to every z and a (their gradients are dL/dz and dL/da)."""
    x, t = jnp.asarray(spec.input), jnp.asarray(spec.target)

    def forward(params, dz, da):
        zs, as_, a = [], [], x
        for (W, b), f, ez, ea in zip(params, acts, dz, da):
            zs.append(a @ W + b + ez)
            a = f(zs[-1]) + ea
            as_.append(a)
        return get_loss(loss).value(a, t), (zs, as_)

    widths = [W.shape[1] for W, _ in params]
    zeros = [jnp.zeros((x.shape[0], w)) for w in widths]
    (_, (zs, as_)), (gp, gz, ga) = jax.jit(jax.value_and_grad(
        forward, argnums=(0, 1, 2), has_aux=True))(params, zeros, zeros)
    return [(z, a, d_a, d_z, gW, gb) for z, a, d_a, d_z, (gW, gb) in zip(zs, as_, ga, gz, gp)]


@pytest.mark.x64
@pytest.mark.parametrize("text, acts, loss", CHAINS)
def test_chain_trace_equals_autodiff(text, acts, loss):
    spec = ex.from_model(text, 2, loss=loss, learning_rate=0.3, batch=3, seed=1)
    assert isinstance(spec, ex.Spec)
    r = ex.explain(spec, steps=2)
    params = [(jnp.asarray(ls.W), jnp.asarray(ls.b)) for ls in spec.layers]
    for step in r["steps"]:
        want = _chain_autodiff(spec, acts, loss, params)
        for got, (z, a, d_a, d_z, gW, gb) in zip(step["layers"], want):
            for key, value in (("z", z), ("a", a), ("da", d_a), ("delta", d_z), ("dW", gW),
                               ("db", gb)):
                np.testing.assert_allclose(got[key], value, rtol=1e-10, atol=1e-12,
                                           err_msg=key)
            # the activation's own derivative: delta = dL/da * f'(z), or dL/da @ Jacobian
            dadz = np.asarray(got["dadz"])
            local = (np.einsum("ek,ekj->ej", got["da"], dadz) if dadz.ndim == 3
                     else np.asarray(got["da"]) * dadz)
            np.testing.assert_allclose(local, got["delta"], rtol=1e-10, atol=1e-12)
        params = [(W - 0.3 * gW, b - 0.3 * gb) for (W, b), (*_, gW, gb) in zip(params, want)]
        for got, (W, b) in zip(step["layers"], params):
            np.testing.assert_allclose(got["W_after"], W, rtol=1e-12, atol=1e-14)
            np.testing.assert_allclose(got["b_after"], b, rtol=1e-12, atol=1e-14)
    couple = [np.ndim(x["dadz"]) == 3 for x in r["steps"][0]["layers"]]
    assert couple == ["softmax" in text and k == len(couple) - 1 for k in range(len(couple))]
    assert not view(spec, r)["article_sign"]  # no dL/dy = y - t: the textbook sign note is off
    assert "textbook" not in diagram(view(spec, r))


def test_article_sign_note_only_where_it_applies():
    spec = ex.load_example("2-2-1")
    assert view(spec, ex.explain(spec))["article_sign"]
    assert "textbooks writing" in diagram(view(spec, ex.explain(spec)))


@pytest.mark.x64
def test_table_trace_of_conv_and_layernorm_equals_autodiff():
    spec = ex.from_model(TABLES, (3, 3, 1), loss="mse", learning_rate=0.1, seed=0)
    assert isinstance(spec, ex.TableSpec)
    r = ex.explain(spec, steps=2)
    model, loss = parse_model(TABLES, (3, 3, 1)), get_loss("mse")
    x, t = jnp.asarray(spec.input), jnp.asarray(spec.target)

    def forward(params, eps):
        outs, y = [], x
        for layer, p, e in zip(model.layers, params, eps):
            y = layer.forward(p, (), y)[0] + e
            outs.append(y)
        return loss.value(y, t), outs

    params = jax.tree.map(jnp.asarray, spec.params)
    grad = jax.jit(jax.value_and_grad(forward, argnums=(0, 1), has_aux=True))
    zeros = [jnp.zeros((2, *shape)) for shape in ((2, 2, 3), (2, 2, 3), (12,), (1,))]
    for step in r["steps"]:
        (value, outs), (gp, ge) = grad(params, zeros)
        assert step["loss"] == pytest.approx(float(value), rel=1e-12)
        for got, y, dy, g, p in zip(step["layers"], outs, ge, gp, params):
            np.testing.assert_allclose(got["output"], y, rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(got["doutput"], dy, rtol=1e-9, atol=1e-12)
            for name in got["grads"]:
                np.testing.assert_allclose(got["grads"][name], g[name], rtol=1e-9, atol=1e-12)
                np.testing.assert_allclose(got["params_after"][name], p[name] - 0.1 * g[name],
                                           rtol=1e-12, atol=1e-12)
        params = jax.tree.map(lambda p, g: p - 0.1 * g, params, gp)
    assert [x["layer"] for x in r["steps"][0]["layers"]] == [
        "conv(3,2,padding=valid)", "layernorm", "flatten", "dense(1)"]


def test_tables_rendered_in_the_terminal_and_on_the_page(capsys):
    spec = ex.from_model(TABLES, (3, 3, 1), steps=2)
    r = ex.explain(spec)
    v = table_view(spec, r)
    ln = v["steps"][1]["layers"][1]
    assert ln["shape"] == [2, 2, 3] and len(ln["index"]) == 12 and ln["index"][1] == "0,0,1"
    assert [row[0] for row in ln["params"]][:2] == ["offset[0]", "offset[1]"]
    page = render_html(spec, r)
    assert "layers[${l}] ${esc(r.layer)}" in page and "<svg id=\"net\"" not in page
    assert json.loads(page.split('id="data">')[1].split("</script>")[0]) == json.loads(
        json.dumps(v))
    assert main(["explain", "--model", TABLES, "--in-shape", "3,3,1", "--steps", "2",
                 "--diagram"]) == 0
    out = capsys.readouterr().out
    assert "layers[1]: layernorm" in out and "Step 1/2" in out and "Step 2/2" in out
    assert f"{ln['output'][0][1]:.6f}" in out and f"{ln['params'][2][2]:.6f}" in out


def test_size_limit_and_bad_settings_are_one_line_errors(capsys):
    with pytest.raises(ValueError, match=r"has 41 units .*Dense\(40\) 40, Dense\(1\) 1\); "
                                         r"explain draws at most 30"):
        ex.from_model("dense(40)-relu-dense(1)", 2)
    cases = [
        (dict(text="dense(2)", in_shape=0), "in_shape must be positive integers"),
        (dict(text="dense(2)", in_shape=2, loss="sparse_softmax_cross_entropy"),
         "takes integer class labels"),
        (dict(text="dense(2)", in_shape=2, batch=99), "batch"),
        (dict(text="dense(2)", in_shape=2, learning_rate=-1), "learning_rate must be"),
        (dict(text="dense(2)", in_shape=2, loss="nope"), "unknown loss 'nope'"),
        (dict(text="densee(2)", in_shape=2), "unknown layer"),
        (dict(text="dense(2)", in_shape=2, loss="bce"), "loss bce takes probabilities"),
        (dict(text="dense(2)-softmax", in_shape=2, loss="softmax_cross_entropy"),
         "takes logits"),
    ]
    for kw, message in cases:
        with pytest.raises(ValueError, match=message):
            ex.from_model(kw.pop("text"), kw.pop("in_shape"), **kw)
    for argv, message in [
        (["--model", "dense(40)", "--in-shape", "2"], "explain draws at most 30"),
        (["--model", "dense(2)"], "--model needs --in-shape"),
        (["--example", "2-2-1", "--loss", "mse"], "--loss only with --model TEXT"),
        (["--example", "2-2-1", "--model", "dense(2)", "--in-shape", "2"], "exactly one of"),
        (["--model", "dense(2)", "--in-shape", "2", "--lr", "-1"], "--lr must be a positive"),
    ]:
        assert main(["explain", *argv]) == 2, argv
        out, err = capsys.readouterr()
        assert out == "" and err.count("\n") == 1 and message in err, (argv, err)


def test_cli_model_path_json_diagram_and_page(tmp_path, capsys):
    argv = ["explain", "--model", "dense(2)-tanh-dense(1)-sigmoid", "--in-shape", "2",
            "--loss", "bce", "--lr", "0.5", "--batch", "3", "--seed", "4"]
    assert main([*argv, "--json", "--steps", "2"]) == 0
    r = json.loads(capsys.readouterr().out)
    spec = ex.from_model("dense(2)-tanh-dense(1)-sigmoid", 2, loss="bce", learning_rate=0.5,
                         batch=3, seed=4)
    assert r == ex.explain(spec, steps=2)
    assert [len(r["steps"][0]["layers"][k]["z"]) for k in (0, 1)] == [3, 3]
    assert main([*argv, "--diagram"]) == 0
    out = capsys.readouterr().out
    assert "layers[0]: tanh" in out and "da/dz" in out and "textbook" not in out
    page = tmp_path / "m.html"
    assert main([*argv, "--html", str(page)]) == 0
    assert "dense(2)-tanh-dense(1)-sigmoid on 3 random example(s), seed 4" in page.read_text()
    assert main([*argv]) == 0
    assert "Network 2 → 2 → 1" in capsys.readouterr().out
