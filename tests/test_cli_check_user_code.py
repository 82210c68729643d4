"""`jaxprop check --layer/--model` on user code: a module on the path or a .py file; exit 0 when
every gradient agrees, 1 when one does not, 2 (one line) for bad arguments."""

import textwrap
import uuid

import pytest

from jaxprop.cli import main

USER_CODE = textwrap.dedent('''
    import jaxprop as jp
    from layer_checks import Scale  # y = x * s (tests/layer_checks.py)

    def BuggyScale():  # forgets s in dx (hidden while s == 1)
        return Scale("forgets_s", name="scale")

    good_scale = Scale()

    def make_model():
        return jp.serial(jp.Dense(8), jp.Tanh(), Scale(), jp.Dense(2), in_shape=(4,))

    def make_buggy_model():
        return jp.serial(jp.Dense(8), jp.Tanh(), BuggyScale(), jp.Dense(2), in_shape=(4,))

    def WrongShape():
        def backward(params, x, dy):
            return {"s": (dy * x).sum(0, keepdims=True)}, dy * params["s"]
        good = Scale()
        return jp.Layer(good.init, good.forward, backward, name="wrong_shape")

    NOT_A_LAYER = 3

    def needs_width(n):
        return jp.Dense(n)
''')


@pytest.fixture()
def user_file(tmp_path):
    path = tmp_path / "my_layers.py"
    path.write_text(USER_CODE)
    return path


@pytest.fixture()
def user_module(tmp_path, monkeypatch):
    """A module importable by name from the current folder (a fresh name per test)."""
    name = f"user_layers_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(USER_CODE)
    monkeypatch.chdir(tmp_path)
    return name


def test_layer_from_a_file_wrong_dx_exits_1(user_file, capsys):
    assert main(["check", "--layer", f"{user_file}:BuggyScale", "--in-shape", "8"]) == 1
    out = capsys.readouterr().out
    assert "FAILED: scale: dx disagrees with jax.vjp float32" in out
    assert "dx" in out and "NO" in out and "in shape (8,), batch 8" in out


def test_layer_from_a_module_by_name_exits_0(user_module, capsys):
    argv = ["check", "--layer", f"{user_module}:good_scale", "--in-shape", "3,8", "--batch",
            "16", "--dtype", "float64"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "OK: scale: backward agrees for dx, s" in out and "(16, 3, 8)" in out


@pytest.mark.long
def test_model_is_checked_layer_by_layer(user_file, capsys):
    assert main(["check", "--model", f"{user_file}:make_model"]) == 0
    assert "OK: all 5 gradient leaves agree" in capsys.readouterr().out
    assert main(["check", "--model", f"{user_file}:make_buggy_model"]) == 1
    out = capsys.readouterr().out
    assert "FAILED: layer 2 (scale): dx disagrees" in out and "at the perturbed params" in out


def test_malformed_backward_exits_1_naming_the_leaf(user_file, capsys):
    assert main(["check", "--layer", f"{user_file}:WrongShape", "--in-shape", "8"]) == 1
    out = capsys.readouterr().out
    assert "FAILED: wrong_shape: dparams['s'] has shape (1, 8) but the parameter has shape (8,)" \
        in out


@pytest.mark.parametrize("args, message", [
    (["--layer", "{file}:BuggyScale"], "--layer needs --in-shape"),
    (["--layer", "nowhere/missing.py:X", "--in-shape", "3"], "no such file"),
    (["--layer", "no_such_module_xyz:X", "--in-shape", "3"], "no module named 'no_such_module_xyz'"),
    (["--layer", "{file}:Nope", "--in-shape", "3"], "has no attribute 'Nope'; it has: BuggyScale"),
    (["--layer", "{file}:NOT_A_LAYER", "--in-shape", "3"], "not a jaxprop Layer"),
    (["--layer", "{file}:needs_width", "--in-shape", "3"], "takes arguments (n)"),
    (["--layer", "{file}", "--in-shape", "3"], "must be MODULE:NAME or path/to/file.py:NAME"),
    (["--layer", "{file}:Scale", "--in-shape", "3,a"], "--in-shape must be positive ints"),
    (["--layer", "{file}:Scale", "--in-shape", "0"], "--in-shape must be positive ints"),
    (["--layer", "{file}:Scale", "--sizes", "3,4", "--in-shape", "3"], "not allowed with"),
    (["--in-shape", "3"], "--in-shape goes with --layer or --model"),
    (["--model", "{file}:good_scale"], "has no input shape: give --in-shape"),
    (["--layer", "{broken}:X", "--in-shape", "3"], "importing"),
    (["--layer", "{file}:Scale", "--in-shape", "3x"], "--in-shape must be positive ints"),
    (["--layer", "{file}:Scale", "--in-shape", "x3"], "--in-shape must be positive ints"),
    (["--model", "{file}:make_model", "--in-shape", "4,,2"], "--in-shape must be positive ints"),
    (["--layer", "{file}:Scale", "--in-shape", "3", "--loss", "mse"],
     "--loss does not go with --layer"),
    (["--layer", "{file}:Scale", "--in-shape", "3", "--activation", "relu"],
     "--activation does not go with --layer"),
    (["--layer", "{file}:Scale", "--in-shape", "3", "--output-activation", "relu"],
     "--output-activation does not go with --layer"),
    (["--layer", "{file}:Scale", "--in-shape", "3", "--max-fd-coords", "8"],
     "--max-fd-coords does not go with --layer"),
    (["--model", "{file}:make_model", "--activation", "relu"],
     "--activation does not go with --model"),
    (["--model", "{file}:make_model", "--output-activation", "relu"],
     "--output-activation does not go with --model"),
    (["--max-fd-coords", "0"], "--max-fd-coords must be >= 1, got 0"),
    (["--model", "{file}:make_model", "--max-fd-coords", "0"],
     "--max-fd-coords must be >= 1, got 0"),
])
def test_bad_arguments_exit_2_with_one_line(user_file, tmp_path, capsys, args, message):
    broken = tmp_path / "broken.py"
    broken.write_text("import jaxprop\nraise RuntimeError('boom')\n")
    argv = ["check"] + [a.format(file=user_file, broken=broken) for a in args]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err


def test_in_shape_forms():
    from jaxprop.cli.check import parse_in_shape

    assert parse_in_shape("8") == parse_in_shape("(8,)") == parse_in_shape("[8]") == (8,)
    assert parse_in_shape("28,28,1") == parse_in_shape("28x28x1") == (28, 28, 1)
    assert parse_in_shape("(28, 28, 1)") == (28, 28, 1)


def test_model_takes_loss_and_max_fd_coords(user_file, capsys):
    argv = ["check", "--model", f"{user_file}:make_model", "--loss", "mse", "--max-fd-coords",
            "4", "--dtype", "float64"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "OK: all 5 gradient leaves agree" in out and "rtol 1e-10 in float64" in out
    assert "random 4-coordinate subset" in out


# --------------------------------------------------------------------------------------------
# Faults that are not the backward's (issue #22)

HOSTILE_CODE = textwrap.dedent('''
    import dataclasses

    import jax.numpy as jnp
    import jaxprop as jp

    def NaNForward():  # a forward that makes NaN from finite inputs
        base = jp.Dense(3)
        def forward(params, state, x, *, key=None, train=True):
            y, r, s = base.forward(params, state, x, key=key, train=train)
            return y * jnp.nan, r, s
        return dataclasses.replace(base, forward=forward)

    def InitDisagrees():  # init says (4,), forward gives (3,)
        base = jp.Dense(3)
        def init(key, in_shape):
            p, s, _ = base.init(key, in_shape)
            return p, s, (4,)
        return dataclasses.replace(base, init=init)
''')


def test_a_module_that_calls_sys_exit_is_no_pass(tmp_path, capsys):
    path = tmp_path / "exits.py"
    path.write_text("import sys\nsys.exit(0)\n")
    assert main(["check", "--layer", f"{path}:X", "--in-shape", "4"]) == 2
    assert "it called sys.exit(0); nothing was checked" in capsys.readouterr().err


def test_a_forward_that_makes_nan_is_blamed_not_the_backward(tmp_path, capsys):
    path = tmp_path / "hostile.py"
    path.write_text(HOSTILE_CODE)
    assert main(["check", "--layer", f"{path}:NaNForward", "--in-shape", "4"]) == 1
    out = capsys.readouterr().out
    assert "its forward gives 24 NaN/Inf value(s) of 24 in float32" in out
    assert "disagrees" not in out


def test_a_forward_whose_shape_is_not_inits_is_refused(tmp_path, capsys):
    path = tmp_path / "hostile.py"
    path.write_text(HOSTILE_CODE)
    assert main(["check", "--layer", f"{path}:InitDisagrees", "--in-shape", "4"]) == 2
    assert ("forward gives examples of shape (3,), but init said (4,)"
            in capsys.readouterr().err)


@pytest.mark.parametrize("args", [
    ["--sizes", "100000,100000,1"],
    ["--layer", "jaxprop:Relu", "--in-shape", "100000,100000"],
])
def test_a_check_that_cannot_fit_is_refused_before_allocating(args, capsys, monkeypatch):
    from jaxprop.train import memory

    monkeypatch.setattr(memory, "device_memory_bytes", lambda: 1 << 30)
    assert main(["check", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("jaxprop: error: out of memory: checking ") and "1.0 GiB" in err


def test_a_float_draw_for_a_model_on_token_ids_exits_2(tmp_path, capsys):
    path = tmp_path / "tokens.py"
    path.write_text("import jaxprop as jp\n\ndef make_model():\n"
                    "    return jp.serial(jp.Embedding(7, 4), jp.Dense(2), in_shape=(5,))\n")
    assert main(["check", "--model", f"{path}:make_model", "--input-scale", "3"]) == 2
    assert "this model takes token ids" in capsys.readouterr().err
