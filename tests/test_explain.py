"""`jaxprop explain`: the classic worked examples to 1e-6, JSON structure, options, bad specs."""

import copy
import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxprop.tools import explain as ex
from jaxprop.cli import main

KEYS = ["z", "a", "da", "delta", "dadz", "dW", "db", "W_after", "b_after"]


def close(got, want, tol=1e-6):
    got, want = np.asarray(got, dtype=float), np.asarray(want, dtype=float)
    np.testing.assert_allclose(got, want, atol=tol, rtol=0)


# --------------------------------------------------------------------------------------------
# The classic examples


def test_2_2_1_matches_corrected_hand_calculation():
    r = ex.explain(ex.load_example("2-2-1"))
    hid, out = r["steps"][0]["layers"]
    close(hid["z"], [[0.28, 0.315]])
    close(hid["a"], [[0.569546, 0.578105]])  # y3, y4 (the copied text's y4 = 0.59 is a slip)
    close(out["z"], [[0.691159]])
    close(out["a"], [[0.666225]])  # y5
    # delta = dL/dz = (y - t) f'(z): the textbook's (t - y) f'(z) with the sign flipped.
    close(out["delta"], [[0.036963]])  # textbook delta5 = -0.036963
    close(hid["delta"], [[0.002719, 0.008114]])  # textbook delta3, delta4 = -0.002719, -0.008114
    close(out["dW"], [[0.021052], [0.021369]])
    close(out["W_after"], [[0.278948], [0.878631]])
    close(hid["dW"], [[0.000952, 0.002840], [0.001903, 0.005680]])
    close(hid["W_after"], [[0.199048, 0.297160], [0.298097, 0.294320]])
    close(hid["b_after"], [0.0, 0.0], tol=0)  # biases fixed
    close(out["b_after"], [0.0], tol=0)
    close(r["steps"][0]["loss"], 0.013815)
    close(r["final_loss"], 0.012884)


def test_2_2_2_matches_corrected_hand_calculation():
    r = ex.explain(ex.load_example("2-2-2"))
    hid, out = r["steps"][0]["layers"]
    close(hid["z"], [[0.505, 0.541]])
    close(hid["a"], [[0.623634, 0.632045]])
    close(out["z"], [[0.844681, 1.033453]])
    close(out["a"], [[0.699450, 0.737585]])
    close(r["steps"][0]["loss"], 0.233453)  # not the widely copied 0.22661423
    close(out["delta"], [[0.136527, -0.041114]])
    close(hid["delta"], [[0.006873, 0.002526]])
    close(out["W_after"], [[0.307429, 0.462820], [0.156854, 0.412993]])
    close(hid["W_after"], [[0.249656, 0.349874], [0.149313, 0.279747]])  # w1 (x1 -> h1) = 0.249656
    assert hid["b_after"] == [0.45, 0.45] and out["b_after"] == [0.5, 0.5]
    close(r["final_loss"], 0.225433)


def test_json_structure_exactly():
    r = ex.explain(ex.load_example("2-2-2"), steps=2)
    assert list(r) == ["steps", "final_loss"]
    assert isinstance(r["final_loss"], float) and len(r["steps"]) == 2
    for step in r["steps"]:
        assert list(step) == ["loss", "layers"] and isinstance(step["loss"], float)
        assert len(step["layers"]) == 2
        for layer in step["layers"]:
            assert list(layer) == KEYS
            assert all(isinstance(v, float) for v in jax.tree.leaves(layer))
        shapes = [{k: np.shape(v) for k, v in layer.items()} for layer in step["layers"]]
        assert shapes[0] == {"z": (1, 2), "a": (1, 2), "da": (1, 2), "delta": (1, 2),
                             "dadz": (1, 2), "dW": (2, 2), "db": (2,), "W_after": (2, 2),
                             "b_after": (2,)}
    # step 2 starts from step 1's updated weights, and its loss is step 1's loss after update
    one = ex.explain(ex.load_example("2-2-2"))
    assert r["steps"][1]["loss"] == pytest.approx(one["final_loss"], abs=1e-15)
    assert json.loads(json.dumps(r)) == r


def test_steps_override_and_multi_step_descent():
    spec = ex.load_example("2-2-1")
    assert len(ex.explain(spec)["steps"]) == 1
    r = ex.explain(spec, steps=30)
    assert len(r["steps"]) == 30
    losses = [s["loss"] for s in r["steps"]] + [r["final_loss"]]
    assert r["final_loss"] < r["steps"][0]["loss"]
    assert all(b < a for a, b in zip(losses, losses[1:]))
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        ex.explain(spec, steps=0)


def _spec(**overrides):
    d = {
        "layers": [
            {"W": [[0.1, -0.2, 0.3], [0.4, 0.5, -0.6]], "b": [0.1, 0.2, 0.3], "activation": "tanh"},
            {"W": [[0.7, -0.1], [0.2, 0.3], [-0.5, 0.4]], "b": [-0.1, 0.05], "activation": "relu"},
            {"W": [[0.3], [-0.8]], "activation": "identity"},
        ],
        "input": [[0.5, -1.0], [1.5, 0.25], [-0.3, 0.8]],
        "target": [[0.2], [-0.4], [1.0]],
        "loss": "mse",
        "learning_rate": 0.1,
    }
    d.update(overrides)
    return d


@pytest.mark.x64
def test_update_biases_and_agreement_with_autodiff():
    """A 2-3-2-1 batch-of-3 network: every quantity against jax.grad / a NumPy forward."""
    d = _spec()
    r = ex.explain(d)
    spec = ex.load_spec(d)
    assert spec.steps == 1 and spec.update_biases and spec.layers[2].b.tolist() == [0.0]
    acts = [jnp.tanh, jax.nn.relu, lambda z: z]
    params = [(jnp.asarray(ls.W), jnp.asarray(ls.b)) for ls in spec.layers]

    def loss(params):
        a = jnp.asarray(spec.input)
        for (W, b), f in zip(params, acts, strict=True):
            a = f(a @ W + b)
        return jnp.mean((a - spec.target) ** 2)

    grads = jax.grad(loss)(params)
    close(r["steps"][0]["loss"], loss(params), 1e-12)
    a = spec.input
    for (W, b), (gW, gb), f, got in zip(params, grads, acts, r["steps"][0]["layers"], strict=True):
        z = a @ np.asarray(W) + np.asarray(b)
        a = np.asarray(f(z))
        close(got["z"], z, 1e-12)
        close(got["a"], a, 1e-12)
        close(got["dW"], gW, 1e-12)
        close(got["db"], gb, 1e-12)
        close(got["W_after"], W - 0.1 * gW, 1e-12)
        close(got["b_after"], b - 0.1 * gb, 1e-12)
    # the last layer's delta is dL/dz directly
    close(r["steps"][0]["layers"][2]["delta"], 2 * (a - spec.target) / a.size, 1e-12)
    # dL/da: the loss gradient for the last layer, the next layer's W @ delta before it
    got = r["steps"][0]["layers"]
    close(got[2]["da"], 2 * (a - spec.target) / a.size, 1e-12)
    for k in (0, 1):
        close(got[k]["da"], np.asarray(got[k + 1]["delta"]) @ spec.layers[k + 1].W.T, 1e-12)

    fixed = ex.explain(_spec(update_biases=False), steps=3)
    for step in fixed["steps"]:
        for ls, got in zip(spec.layers, step["layers"], strict=True):
            assert got["b_after"] == ls.b.tolist()
            assert any(v != 0 for v in got["db"])  # the gradient is still reported


def test_defaults_and_flat_vectors():
    d = {"layers": [{"W": [[0.2], [0.3]]}], "input": [0.35, 0.7], "target": [0.5],
         "learning_rate": 1}
    spec = ex.load_spec(d)
    assert (spec.loss, spec.steps, spec.update_biases) == ("sse_half", 1, True)
    assert spec.layers[0].activation == "sigmoid" and spec.layers[0].b.tolist() == [0.0]
    assert spec.input.shape == (1, 2) and spec.target.shape == (1, 1)


# --------------------------------------------------------------------------------------------
# Bad specs: ValueError naming the problem; the CLI prints one line and exits 2.


def _layer(i, **kw):
    def f(d):
        d["layers"][i].update(kw)
    return f


def _set(**kw):
    return lambda d: d.update(kw)


def _drop(key, layer=None):
    def f(d):
        del (d if layer is None else d["layers"][layer])[key]
    return f


BAD = [
    ("missing key", _drop("learning_rate"), ["missing required key", "'learning_rate'"]),
    ("missing W", _drop("W", layer=1), ["layers[1]", "'W'"]),
    ("unknown key", _set(learning_rte=0.1), ["unknown key", "'learning_rte'"]),
    ("layers empty", _set(layers=[]), ["'layers'", "non-empty"]),
    ("ragged W", _layer(0, W=[[0.1, 0.2, 0.3], [0.4, 0.5]]),
     ["layers[0].W", "ragged", "row 1 has 2"]),
    ("non-numeric", _layer(1, W=[[0.7, -0.1], [0.2, "x"], [-0.5, 0.4]]),
     ["layers[1].W[1][1]", "'x'", "not a number"]),
    ("boolean entry", _set(input=[[True, 1.0], [1.0, 1.0], [1.0, 1.0]]),
     ["input[0][0]", "not a number"]),
    ("W rows vs previous width", _layer(1, W=[[0.7, -0.1], [0.2, 0.3]]),
     ["layers[1].W has shape (2, 2)", "layers[0]", "(2, 3)", "width 3"]),
    ("W rows vs input width", _layer(0, W=[[0.1, 0.2, 0.3]]),
     ["layers[0].W has shape (1, 3)", "input", "(3, 2)", "width 2"]),
    ("b wrong length", _layer(0, b=[0.1, 0.2]), ["layers[0].b has length 2", "(2, 3)", "needs 3"]),
    ("row counts", _set(target=[[0.2], [-0.4]]),
     ["input has 3 row", "(3, 2)", "target has 2", "(2, 1)"]),
    ("target width", _set(target=[[0.2, 1], [-0.4, 1], [1.0, 1]]),
     ["target has shape (3, 2)", "layers[2]", "(2, 1)", "1 column"]),
    ("unknown activation", _layer(1, activation="sigmoidd"),
     ["layers[1]", "unknown activation 'sigmoidd'", "known:"]),
    ("unknown loss", _set(loss="l2"), ["unknown loss 'l2'", "sse_half"]),
    ("zero learning rate", _set(learning_rate=0), ["learning_rate must be a positive", "0"]),
    ("negative learning rate", _set(learning_rate=-0.5), ["learning_rate must be a positive"]),
    ("zero steps", _set(steps=0), ["steps must be a positive integer", "0"]),
    ("fractional steps", _set(steps=1.5), ["steps must be a positive integer", "1.5"]),
    ("update_biases not bool", _set(update_biases="yes"), ["update_biases must be true or false"]),
    ("NaN in W", _layer(2, W=[[float("nan")], [0.1]]), ["layers[2].W[0][0]", "NaN/Inf"]),
    ("Inf in target", _set(target=[[0.2], [float("inf")], [1.0]]), ["target[1][0]", "NaN/Inf"]),
    ("spec not an object", lambda d: [1, 2], ["JSON object", "a list"]),
]


@pytest.mark.parametrize("mutate, expected", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_spec(mutate, expected, tmp_path, capsys):
    d = copy.deepcopy(_spec())
    d = mutate(d) or d
    with pytest.raises(ValueError) as e:
        ex.load_spec(d)
    for s in expected:
        assert s in str(e.value), (s, str(e.value))
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(d))  # Python's json writes NaN/Infinity, which it also reads
    assert main(["explain", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith("jaxprop: error:")
    for s in expected:
        assert s in err


def test_the_schema_tables_are_the_spec():
    """The field tables _validate walks hold the Spec's fields, in the order messages list."""
    assert [f.name for f in ex.SPEC_SCHEMA.fields] == ["layers", "input", "target",
                                                       "learning_rate", "loss", "steps",
                                                       "update_biases", "description"]
    assert set(ex.Spec._fields) == {f.name for f in ex.SPEC_SCHEMA.fields}
    assert ex.REQUIRED_KEYS == ("layers", "input", "target", "learning_rate")
    assert ex.OPTIONAL_KEYS == {"loss": "sse_half", "steps": 1, "update_biases": True,
                                "description": ""}
    assert ex.LAYER_KEYS == ("W", "b", "activation")


EXACT = [
    (_drop("learning_rate"), "spec: missing required key(s) 'learning_rate' (required: layers, "
                             "input, target, learning_rate)"),
    (_set(zz=1, aa=2), "spec: unknown key(s) 'aa', 'zz' (allowed: layers, input, target, "
                       "learning_rate, loss, steps, update_biases, description)"),
    (_set(layers=[1]), "layers[0] must be an object with 'W' (and optional 'b', 'activation'), "
                       "got a int"),
    (_layer(0, c=1), "layers[0]: unknown key(s) 'c' (allowed: W, b, activation)"),
    (_layer(1, activation=None), "layers[1]: unknown activation None; known: sigmoid, tanh, "
                                 "relu, leaky_relu, gelu, gelu_tanh, softplus, identity, softmax"),
    (_set(loss=["mse"]), "unknown loss ['mse']; known: sse_half, mse, bce, bce_with_logits, "
                         "softmax_cross_entropy, sparse_softmax_cross_entropy"),
    (_set(learning_rate=True), "learning_rate must be a positive finite number, got True"),
    (_set(steps=True), "steps must be a positive integer, got True"),
    (_set(update_biases=1), "update_biases must be true or false, got 1"),
    (_set(description=None), "description must be a string, got null"),
]


@pytest.mark.parametrize("mutate, message", EXACT)
def test_bad_spec_messages_word_for_word(mutate, message):
    d = copy.deepcopy(_spec())
    mutate(d)
    with pytest.raises(ValueError) as e:
        ex.load_spec(d)
    assert str(e.value) == message


def test_null_biases_are_zeros_and_integral_float_steps_count():
    d = _spec(steps=2.0)
    d["layers"][0]["b"] = None
    spec = ex.load_spec(d)
    assert spec.layers[0].b.tolist() == [0.0, 0.0, 0.0] and spec.steps == 2
    assert isinstance(spec.steps, int) and isinstance(spec.learning_rate, float)


def test_bad_files_and_arguments(tmp_path, capsys):
    bad_json = tmp_path / "bad.json"
    bad_json.write_text('{\n  "layers": [\n    {"W": [[1, 2]],}\n  ]\n}\n')
    cases = [
        (["explain", str(tmp_path / "missing.json")], ["cannot read spec file", "missing.json"]),
        (["explain", str(tmp_path)], ["cannot read spec file"]),
        (["explain", str(bad_json)], ["invalid JSON at line 3, column 20"]),
        (["explain"], ["exactly one of SPEC.json, --example NAME or --model TEXT"]),
        (["explain", str(bad_json), "--example", "2-2-1"], ["exactly one"]),
        (["explain", "--example", "nope"], ["unknown example 'nope'", "2-2-1", "2-2-2"]),
        (["explain", "--example", "2-2-1", "--steps", "0"], ["--steps", "positive integer"]),
        (["explain", "--example", "2-2-1", "--steps", "x"], ["--steps", "positive integer"]),
    ]
    for argv, expected in cases:
        assert main(argv) == 2, argv
        out, err = capsys.readouterr()
        assert out == "" and err.count("\n") == 1, (argv, err)
        for s in expected:
            assert s in err, (argv, s, err)
    with pytest.raises(ValueError, match="invalid JSON at line 3, column 20"):
        ex.load_spec(bad_json)


def test_huge_steps_numbers_and_nesting_are_clear_errors(tmp_path, capsys):
    """issue 11: --steps 1e23 grew memory without bound; numbers too large for a float64 and
    JSON nested 100,000 deep gave tracebacks."""
    base = json.dumps(_spec())
    w = json.dumps(_spec()["layers"][0]["W"][0][0])
    cases = {
        "steps": (base, ["--steps", "100000000000000000000000"], "at most 10,000"),
        "steps-in-spec": (base[:-1] + ', "steps": 1e23}', [], "at most 10,000"),
        "huge-float": (base.replace(w, "1e400", 1), [], "too large for a float64"),
        "huge-int": (base.replace(w, "1" + "0" * 400, 1), [], "too large for a float64"),
        "huge-lr": (base.replace('"learning_rate": 0.1', '"learning_rate": 1' + "0" * 400),
                    [], "learning_rate must be a positive finite number"),
        "too-many-digits": (base.replace(w, "1" * 5000, 1), [], "cannot read the JSON"),
        "deep": ('{"layers": ' + "[" * 100_000 + "]" * 100_000 + "}", [], "nested too deeply"),
    }
    for name, (text, args, message) in cases.items():
        path = tmp_path / f"{name}.json"
        path.write_text(text)
        assert main(["explain", str(path), *args]) == 2, name
        out, err = capsys.readouterr()
        assert out == "" and err.count("\n") == 1 and message in err, (name, err)
    nested = _spec()
    nested["input"] = [[[[[[1.0]]]]]]
    with pytest.raises(ValueError, match=r"input\[0\]\[0\] is \[\[\[\.\.\.\]\]\] \(a list\)"):
        ex.load_spec(nested)
    with pytest.raises(ValueError, match="integer class labels"):
        ex.load_spec(_spec(loss="sparse_softmax_cross_entropy"))


def test_divergence_is_a_clear_error():
    d = _spec(learning_rate=1e300, loss="sse_half")
    d["layers"][1]["activation"] = "identity"
    with pytest.raises(ValueError, match="diverged"):
        ex.explain(d, steps=3)


# --------------------------------------------------------------------------------------------
# CLI


def test_cli_json_and_steps_override(capsys):
    assert main(["explain", "--example", "2-2-1", "--json", "--steps", "3"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert len(r["steps"]) == 3
    close(r["steps"][0]["layers"][1]["W_after"], [[0.278948], [0.878631]])


def test_cli_spec_file_and_tables(tmp_path, capsys):
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(json.loads(
        (ex.resources.files("jaxprop") / "examples" / "2-2-2.json").read_text())))
    assert main(["explain", str(path)]) == 0
    out = capsys.readouterr().out
    for s in ["0.699450", "0.737585", "0.233453", "0.249656", "0.225433", "dL/dz", "layers[1]"]:
        assert s in out, s


def test_cli_list_examples(capsys):
    assert main(["explain", "--list-examples"]) == 0
    names = [line.split("\t")[0] for line in capsys.readouterr().out.splitlines()]
    assert names == ["2-2-1", "2-2-2", "xor"]


def test_xor_example_is_the_classic_setting():
    """The bundled XOR: the four patterns of jaxprop.data, 2-4-1 sigmoid, sum of squares,
    learning rate 0.1, 10,000 steps; its first steps go downhill."""
    from jaxprop.data import xor

    spec = ex.load_example("xor")
    x, t = xor()
    assert spec.input.tolist() == np.asarray(x).tolist()
    assert spec.target.tolist() == np.asarray(t).tolist()
    assert [ls.W.shape for ls in spec.layers] == [(2, 4), (4, 1)]
    assert [ls.activation for ls in spec.layers] == ["sigmoid", "sigmoid"]
    assert (spec.loss, spec.learning_rate, spec.steps) == ("sse_half", 0.1, 10_000)
    r = ex.explain(spec, steps=3)
    losses = [s["loss"] for s in r["steps"]] + [r["final_loss"]]
    assert all(b < a for a, b in zip(losses, losses[1:]))


@pytest.mark.long
def test_xor_example_learns_xor_in_its_10000_steps():
    spec = ex.load_example("xor")
    r = ex.explain(spec)
    y = np.asarray(r["steps"][-1]["layers"][-1]["a"])
    assert np.array_equal(np.round(y), spec.target) and r["final_loss"] < 0.01


@pytest.mark.long
@pytest.mark.x64
def test_subprocess_json_float64_without_global_x64():
    """A fresh process (x64 off): the CLI JSON is float64-exact and explain leaves x64 off."""
    out = subprocess.run(
        [sys.executable, "-m", "jaxprop", "explain", "--example", "2-2-1", "--json"],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout
    r = json.loads(out)
    s = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    h = s(np.array([0.35, 0.7]) @ np.array([[0.2, 0.3], [0.3, 0.3]]))
    y = s(h @ np.array([0.3, 0.9]))
    close(r["steps"][0]["layers"][0]["a"], [h], 1e-15)
    close(r["steps"][0]["layers"][1]["a"], [[y]], 1e-15)
    close(r["steps"][0]["layers"][1]["W_after"], [[0.278948], [0.878631]])

    code = (
        "import jax, jax.numpy as jnp; from jaxprop.tools.explain import explain, load_example; "
        "explain(load_example('2-2-1')); print(jax.config.jax_enable_x64, jnp.ones(1).dtype)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    assert out.split() == ["False", "float32"]
