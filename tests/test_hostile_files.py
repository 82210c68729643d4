"""Hostile architecture texts and model files: each refused with one clear ValueError, fast,
and nothing inflated that the header does not name (issue #22)."""

from __future__ import annotations

import copy
import io
import zipfile

import jax
import numpy as np
import pytest

import jaxprop as jp
from jaxprop import checkpoint
from jaxprop.checkpoint import NpzMembers, read_npz, write_npz


@pytest.mark.parametrize("text, message", [
    ("residual(" * 400 + "relu" + ")" * 400, "nest 400 deep; at most 16"),
    ("dense(3))", "unbalanced ')' at character 9"),
    ("dense((3)", "1 '(' never closed"),
    ("conv(4,3,padding=same,padding=valid)", "keyword padding is given twice"),
    ("leaky_relu(nan)", "'nan' is not a finite number"),
    ("leaky_relu(inf)", "'inf' is not a finite number"),
    ("dense(1e400)", "'1e400' is not a finite number"),
    ("avgpool(100,padding=same)", "a window of 10,000 positions"),
    ("maxpool(33)", "a window of 1,089 positions"),
])
def test_hostile_architecture_texts_are_refused_at_once(text, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        jp.parse_model(text, (8, 8, 1))


def test_nesting_up_to_the_limit_still_parses():
    text = "residual(" * 15 + "relu" + ")" * 15
    assert jp.parse_model(text, (4,)).spec == text


@pytest.mark.parametrize("slope", [float("nan"), float("inf"), "0.1"])
def test_leaky_relu_refuses_a_slope_that_is_not_a_finite_number(slope):
    with pytest.raises(ValueError, match="negative_slope must be a finite number"):
        jp.LeakyRelu(slope)


def test_the_cli_refuses_a_deeply_nested_model_with_one_line(tmp_path, capsys):
    from jaxprop.cli import main

    text = "residual(" * 40 + "relu" + ")" * 40
    assert main(["train", "--dataset", "xor", "--model", text, "--epochs", "1",
                 "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert "nest 40 deep" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "r").exists()


# --------------------------------------------------------------------------------------------
# jp.load of hostile files


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    model = jp.mlp([2, 3, 1], output_activation="sigmoid")
    params = model.init(jax.random.key(0), (2,))[0]
    path = tmp_path_factory.mktemp("m") / "m.npz"
    jp.save(path, model, params, classes=["a"], mean=np.zeros(2))
    header, members = read_npz(path, "jaxprop-model", "model file")
    return header, {k: members[k] for k in members if k != "__header__"}


def _edits(obj, path=()):
    """Every path into a JSON header."""
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    for k, v in items:
        yield path + (k,)
        yield from _edits(v, path + (k,))


def test_every_damaged_header_field_gives_a_value_error(saved, tmp_path):
    header, arrays = saved
    target = tmp_path / "h.npz"
    for path in _edits(header):
        for value in ("delete", None, 1e300, [10**12]):
            edited = copy.deepcopy(header)
            holder = edited
            for k in path[:-1]:
                holder = holder[k]
            if value == "delete":
                del holder[path[-1]]
            else:
                holder[path[-1]] = value
            write_npz(target, arrays, edited)
            try:
                jp.load(target)
            except ValueError:
                pass  # refused with a message; anything else fails the test


@pytest.mark.parametrize("dtype", [np.int32, np.float16, np.complex64])
def test_params_of_another_dtype_are_refused(saved, tmp_path, dtype):
    header, arrays = saved
    arrays = {**arrays, "params/0": arrays["params/0"].astype(dtype)}
    write_npz(tmp_path / "d.npz", arrays, header)
    with pytest.raises(ValueError, match=rf"params\[0\]\['W'\] is {np.dtype(dtype)}, "
                                         "expected float32"):
        jp.load(tmp_path / "d.npz")


def _with_member(src, dst, name, data: bytes):
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            if info.filename != name:
                zout.writestr(info.filename, zin.read(info.filename))
        zout.writestr(name, data)


def test_a_member_no_header_names_is_never_inflated(saved, tmp_path, monkeypatch):
    header, arrays = saved
    write_npz(tmp_path / "ok.npz", arrays, header)
    buf = io.BytesIO()
    np.save(buf, np.zeros(4 << 20, np.uint8))  # 4 MiB of zeros: a few KiB deflated
    _with_member(tmp_path / "ok.npz", tmp_path / "bomb.npz", "bomb.npy", buf.getvalue())
    loaded = []
    real = NpzMembers._load
    monkeypatch.setattr(NpzMembers, "_load",
                        lambda self, name: loaded.append(name) or real(self, name))
    _, params, extra = jp.load(tmp_path / "bomb.npz")
    assert "bomb" not in loaded and "params/0" in loaded
    assert extra["classes"] == ["a"]


def test_a_member_larger_than_its_leaf_is_refused_before_reading(saved, tmp_path, monkeypatch):
    header, arrays = saved
    write_npz(tmp_path / "ok.npz", arrays, header)
    buf = io.BytesIO()
    np.save(buf, np.zeros((1 << 16,), np.float32))
    _with_member(tmp_path / "ok.npz", tmp_path / "big.npz", "params/0.npy", buf.getvalue())
    loaded = []
    real = NpzMembers._load
    monkeypatch.setattr(NpzMembers, "_load",
                        lambda self, name: loaded.append(name) or real(self, name))
    with pytest.raises(ValueError, match=r"params\[0\]\['W'\]'s array 'params/0' holds "
                                         r"262,272 bytes"):
        jp.load(tmp_path / "big.npz")
    assert "params/0" not in loaded


def test_a_header_larger_than_the_limit_is_refused(saved, tmp_path, monkeypatch):
    header, arrays = saved
    write_npz(tmp_path / "h.npz", arrays, {**header, "extra": {"pad": "x" * 5000}})
    monkeypatch.setattr(checkpoint, "MAX_HEADER_BYTES", 4096)
    with pytest.raises(ValueError, match="a header of"):
        jp.load(tmp_path / "h.npz")


# --------------------------------------------------------------------------------------------
# The run folder's lock


def test_a_planted_symlink_lock_is_refused_and_its_target_untouched(tmp_path, capsys):
    from jaxprop.cli import main

    run = tmp_path / "r"
    run.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (run / ".lock").symlink_to(victim)
    assert main(["train", "--dataset", "xor", "--epochs", "1", "--out", str(run),
                 "--force"]) == 2
    assert "is a symbolic link" in capsys.readouterr().err
    assert victim.read_text() == "precious\n"


def test_a_fifo_lock_is_refused(tmp_path):
    import os

    from jaxprop.runs import RunLock

    os.mkfifo(tmp_path / ".lock")
    with pytest.raises(ValueError, match="is not a plain file"):
        RunLock(tmp_path).acquire()


# --------------------------------------------------------------------------------------------
# A run that fails after it started


def test_a_run_that_fails_after_starting_is_not_left_running(tmp_path, capsys):
    import json

    from jaxprop.cli import main

    run = tmp_path / "r"
    assert main(["train", "--dataset", "xor", "--epochs", "2", "--out", str(run)]) == 0
    header, members = read_npz(run / "checkpoint.npz", checkpoint.FORMAT, "checkpoint")
    arrays = {k: members[k] for k in members if k != "__header__"}
    arrays.update({k: np.full_like(a, np.nan) for k, a in arrays.items()
                   if k.startswith("params/")})
    write_npz(run / "checkpoint.npz", arrays, header)
    assert main(["train", "--resume", str(run), "--epochs", "4"]) == 2
    assert "NaN" in capsys.readouterr().err
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "failed" and metrics["epoch"] == 2
    assert "NaN" in metrics["error"]

