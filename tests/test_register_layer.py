"""Your own layer first-class (``jp.register_layer``): in architecture texts, in ``jp.save``/
``jp.load`` (the module imported by the loader itself, in a fresh process), and at the command
line (``jaxprop train/check --import``, ``check --model TEXT``)."""

import subprocess
import sys
import textwrap
import uuid

import jax
import pytest

import jaxprop as jp
from jaxprop.checkpoint import read_npz
from jaxprop.cli import main
from jaxprop.core import spec as spec_module

SWISH = textwrap.dedent('''
    import jax
    import jaxprop as jp


    def make_swish(beta=1.0):
        def init(key, in_shape):
            return (), (), tuple(in_shape)

        def forward(params, state, x, *, key=None, train=True):
            s = jax.nn.sigmoid(beta * x)
            return x * s, (x, s), state

        def backward(params, residuals, dy):
            x, s = residuals
            return (), dy * (s + beta * x * s * (1 - s))

        return jp.Layer(init, forward, backward, f"Swish({beta:g})")


    Swish = jp.register_layer("swish", make_swish)
''')


@pytest.fixture(autouse=True)
def registry():
    """The layer registry as it was before the test (registering is process-wide)."""
    tables = (spec_module.LAYER_SPECS, spec_module.USER_LAYERS, spec_module.ARGUMENT_PARSERS)
    saved = [dict(t) for t in tables]
    modules = set(sys.modules)
    for name in list(spec_module.USER_LAYERS):  # others' own layers (a docs example) out of the way
        for table in tables:
            table.pop(name, None)
    yield
    for table, before in zip(tables, saved):
        table.clear()
        table.update(before)
    for name in set(sys.modules) - modules:
        if name.startswith(("swish_layers_", "_jaxprop_user_")):
            del sys.modules[name]


@pytest.fixture()
def swish_module(tmp_path, monkeypatch):
    """A module that registers ``swish``, importable by name from ``tmp_path`` (fresh name)."""
    name = f"swish_layers_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(SWISH)
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def test_registered_layer_parses_and_carries_its_text(swish_module):
    module = __import__(swish_module)
    model = jp.parse_model("dense(4)-swish(2.0)-residual(dense(4)-swish)-dense(1)", (3,))
    assert model.spec == "dense(4)-swish(2.0)-residual(dense(4)-swish)-dense(1)"
    assert module.Swish(0.5).spec == "swish(0.5)" and module.Swish().spec == "swish"
    assert spec_module.USER_LAYERS["swish"] == swish_module
    assert jp.check_layer(module.Swish(2.0), (3,)).ok
    with pytest.raises(ValueError, match=r"usage: swish\[\(beta\)\]"):
        jp.parse_model("swish(1,2)", (3,))


def test_own_argument_syntax_and_text():
    def make(*sizes):
        return jp.Reshape(sizes)

    jp.register_layer("shape_as", make, parse=lambda text: (
        tuple(int(s) for s in text.split("x")), {}),
        spec=lambda *sizes: "shape_as(" + "x".join(map(str, sizes)) + ")", usage="shape_as(AxB)")
    model = jp.parse_model("shape_as(2x3)-flatten(2)", (6,))
    assert model.spec == "shape_as(2x3)-flatten(2)"
    assert jp.parse_model(model.spec, (6,)).spec == model.spec
    with pytest.raises(ValueError, match=r"layer 'shape_as\(2xa\)'.*usage: shape_as\(AxB\)"):
        jp.parse_model("shape_as(2xa)", (6,))


def test_clear_errors_on_registering():
    with pytest.raises(ValueError, match="'relu' is a built-in layer"):
        jp.register_layer("relu", jp.Relu)
    with pytest.raises(ValueError, match="lower case"):
        jp.register_layer("Swish", jp.Relu)
    jp.register_layer("twice", jp.Dense, module="one")
    jp.register_layer("twice", jp.Dense, module="one")  # again from the same module: fine
    with pytest.raises(ValueError, match="already registered by module 'one'"):
        jp.register_layer("twice", jp.Dense, module="other")
    jp.register_layer("not_a_layer", lambda: 3)
    with pytest.raises(ValueError, match="returned a int, not a jaxprop Layer"):
        jp.parse_model("not_a_layer", (2,))
    jp.register_layer("takes_list", lambda sizes=(1, 2): jp.Relu())
    with pytest.raises(ValueError, match="give register_layer.*spec="):
        spec_module.LAYER_SPECS["takes_list"][0]([1, 2])


LOAD = textwrap.dedent('''
    import sys
    import jaxprop as jp
    try:
        jp.load(sys.argv[1])
    except ValueError as e:
        print("ERROR", e)
    sys.path.insert(0, sys.argv[2])  # now the module is importable: load imports it itself
    model, params, extra = jp.load(sys.argv[1])
    print("SPEC", model.spec)
''')


def test_save_and_load_in_a_fresh_process_imports_the_module(swish_module, tmp_path):
    __import__(swish_module)
    model = jp.parse_model("dense(3)-swish(2.0)-dense(1)", (2,))
    params = model.init(jax.random.key(0))
    path = jp.save(tmp_path / "model.npz", model, params)
    header, _ = read_npz(path, "jaxprop-model", "model file")
    assert header["layer_modules"] == {"swish": swish_module}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = subprocess.run([sys.executable, "-c", LOAD, str(path), str(tmp_path)],
                         cwd=elsewhere, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert f"layer 'swish' comes from module '{swish_module}', which did not import" \
        in out.stdout
    assert "SPEC dense(3)-swish(2.0)-dense(1)" in out.stdout


def test_cli_train_and_check_with_import(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my_swish.py").write_text(SWISH)
    rc = main(["train", "--model", "dense(4)-swish(2.0)-dense(1)", "--import", "my_swish.py",
               "--epochs", "3", "--out", str(tmp_path / "run"), "--no-plots"])
    assert rc == 0
    model, _, _ = jp.load(tmp_path / "run" / "model.npz")  # swish known in this process
    assert model.spec.startswith("dense(4)-swish(2.0)-dense(1)")
    capsys.readouterr()
    rc = main(["check", "--model", "dense(4)-swish(2.0)-dense(2)", "--in-shape", "3",
               "--import", "my_swish.py", "--batch", "4"])
    out = capsys.readouterr().out
    assert rc == 0 and "Swish(2)" in out
    assert main(["check", "--model", "dense(4)-swish2-dense(2)", "--in-shape", "3"]) == 2
    assert "unknown layer 'swish2'" in capsys.readouterr().err
    assert main(["train", "--import", "no_such_module_here", "--epochs", "1"]) == 2
    assert "no module named 'no_such_module_here'" in capsys.readouterr().err


def test_resume_imports_the_module_the_run_recorded(swish_module, tmp_path, monkeypatch,
                                                    capsys):
    run = str(tmp_path / "run")
    assert main(["train", "--model", "dense(4)-swish(2.0)-dense(1)", "--import", swish_module,
                 "--epochs", "2", "--out", run, "--no-plots"]) == 0
    for name in ("swish",):  # a new process: the layer is unknown until the module runs
        for table in (spec_module.LAYER_SPECS, spec_module.USER_LAYERS,
                      spec_module.ARGUMENT_PARSERS):
            table.pop(name, None)
    sys.modules.pop(swish_module, None)
    assert main(["train", "--resume", run, "--epochs", "4", "--no-plots"]) == 0
    assert "swish" in spec_module.USER_LAYERS
    for table in (spec_module.LAYER_SPECS, spec_module.USER_LAYERS,
                  spec_module.ARGUMENT_PARSERS):
        table.pop("swish", None)
    sys.modules.pop(swish_module, None)
    monkeypatch.syspath_prepend(str(tmp_path / "nowhere"))
    sys.path.remove(str(tmp_path))  # the module cannot be found any more
    capsys.readouterr()
    assert main(["train", "--resume", run, "--epochs", "6", "--no-plots"]) == 2
    assert f"comes from module '{swish_module}', which did not import" in \
        capsys.readouterr().err
