"""``jaxprop train`` by subprocess: the XOR default, resume, divergence, bad arguments."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def jaxprop(*args, cwd):
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "JAX_PLATFORMS": "cpu"}
    return subprocess.run([sys.executable, "-m", "jaxprop", "train", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_no_arguments_trains_xor_and_writes_the_run(tmp_path):
    r = jaxprop(cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "runs" / "xor"
    for name in ("metrics.json", "history.jsonl", "checkpoint.npz", "loss_curve.png",
                 "decision_boundary.png"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "finished" and metrics["epoch"] == 10_000
    assert metrics["train_accuracy"] == 1.0 and metrics["test_accuracy"] == 1.0
    assert metrics["config"]["loss"] == "sse_half" and metrics["config"]["lr"] == 0.1
    for key in ("wall_time", "compile_time", "device", "train_loss", "test_loss"):
        assert key in metrics
    lines = (out / "history.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == list(range(1000, 10_001, 1000))
    assert "train" in r.stdout and "test" in r.stdout  # the final table


@pytest.mark.long
def test_resume_equals_the_uninterrupted_run(tmp_path):
    common = ["--epochs", "60", "--batch-size", "3", "--log-every", "20", "--no-plots"]
    assert jaxprop(*common, "--out", "full", cwd=tmp_path).returncode == 0
    part = ["--epochs", "40", "--batch-size", "3", "--log-every", "20", "--no-plots"]
    assert jaxprop(*part, "--out", "part", cwd=tmp_path).returncode == 0
    r = jaxprop("--resume", "part", "--epochs", "60", "--no-plots", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    with np.load(tmp_path / "full" / "checkpoint.npz") as a, \
            np.load(tmp_path / "part" / "checkpoint.npz") as b:
        for name in a.files:
            if name != "__header__":
                np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    metrics = json.loads((tmp_path / "part" / "metrics.json").read_text())
    assert metrics["resumed_from"] == 40 and metrics["epoch"] == 60
    assert len((tmp_path / "part" / "history.jsonl").read_text().splitlines()) == 3


def test_divergence_exits_1_and_keeps_the_last_good_checkpoint(tmp_path):
    r = jaxprop("--dataset", "moons", "--activation", "relu", "--loss", "mse",
                "--output-activation", "identity", "--optimizer", "sgd", "--lr", "100",
                "--epochs", "50", "--log-every", "1", "--no-plots", "--out", "run", cwd=tmp_path)
    assert r.returncode == 1, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "diverged at epoch" in lines[0]
    assert "smaller learning rate" in lines[0]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["status"] == "diverged"
    with np.load(tmp_path / "run" / "checkpoint.npz") as z:
        header = json.loads(z["__header__"].tobytes())
        assert header["epoch"] == metrics["diverged_at_epoch"] - 1
        assert all(np.all(np.isfinite(z[n])) for n in z.files if n.startswith("params/"))


@pytest.mark.long
@pytest.mark.parametrize("args, needle", [
    (["--dataset", "cifar"], "invalid choice"),
    (["--epochs", "-5"], "--epochs"),
    (["--dataset", "mnist", "--data-dir", "no/such/dir"], "no/such/dir"),
    (["--hidden", "64,x"], "--hidden"),
    (["--lr", "0"], "--lr"),
    (["--resume", "no/such/run"], "no checkpoint"),
    (["--dataset", "digits", "--model", "conv(16,3)-swish"], "unknown layer 'swish'"),
    (["--dataset", "digits", "--model", "conv(16)"], "usage: conv(features,kernel"),
    (["--dataset", "digits", "--model", "dense(10)", "--hidden", "4"], "--hidden"),
    (["--dataset", "moons", "--model", "conv(4,3)-flatten-dense(1)"], "images of shape"),
    (["--dataset", "digits", "--model", "flatten-dense(9)"], "end it with dense(10)"),
    (["--dataset", "digits", "--model", "dense(64)-relu-dense(10)"],
     "put flatten before the first dense, e.g. flatten-dense(64)-relu-dense(10)"),
    (["--dataset", "digits", "--model", "flatten-batchnorm-dense(10)"], "couples the examples"),
])
def test_bad_arguments_give_one_line_and_exit_2(tmp_path, args, needle):
    r = jaxprop(*args, cwd=tmp_path)
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], r.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.long
def test_model_text_trains_a_cnn_and_resume_rebuilds_it(tmp_path):
    text = "conv(4,3)-relu-maxpool(2)-flatten-dense(10)"
    r = jaxprop("--dataset", "digits", "--model", text, "--epochs", "2", "--no-plots",
                "--out", "cnn", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    with np.load(tmp_path / "cnn" / "checkpoint.npz") as z:
        header = json.loads(z["__header__"].tobytes())
    assert header["config"]["model"] == text and header["config"]["hidden"] is None
    assert header["config"]["output_activation"] == "identity"
    assert [leaf["shape"] for leaf in header["trees"]["params"]["leaves"]][:2] == [[3, 3, 1, 4],
                                                                                  [4]]
    r = jaxprop("--resume", "cnn", "--epochs", "3", "--no-plots", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    metrics = json.loads((tmp_path / "cnn" / "metrics.json").read_text())
    assert metrics["resumed_from"] == 2 and metrics["epoch"] == 3
    assert metrics["config"]["model"] == text and metrics["test_accuracy"] > 0.8
    r = jaxprop("--resume", "cnn", "--epochs", "4", "--model", "flatten-dense(10)", cwd=tmp_path)
    assert r.returncode == 2 and "--model differs" in r.stderr


def test_the_command_exits_quickly_but_runs_every_exit_handler(tmp_path):
    """``jaxprop`` skips freeing the interpreter's objects, not the atexit handlers (JAX's
    backends and a multi-process run's shutdown are among them) nor the last output."""
    marker = tmp_path / "handler-ran"
    code = ("import atexit, sys\n"
            f"atexit.register(lambda: open({str(marker)!r}, 'w').write('yes'))\n"
            "sys.argv = ['jaxprop', 'train', '--no-plots', '--epochs', '50', '--log-every', '50',"
            f" '--out', {str(tmp_path / 'r')!r}]\n"
            "from jaxprop.cli import command\n"
            "command()\n"
            "raise SystemExit(99)  # never reached: command() exits with main's code\n")
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "JAX_PLATFORMS": "cpu"}
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert marker.read_text() == "yes"
    assert "saved to" in r.stdout  # the table's last line made it out
    bad = subprocess.run([sys.executable, "-m", "jaxprop", "train", "--epochs", "-1"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "epochs" in bad.stderr
