"""Run folders that tell the truth after any interruption: locks, refusals, resume, Ctrl-C,
SIGTERM, SIGKILL, full disks, populations that all diverge (issue 11, section 1)."""

import errno
import json
import os
import signal
import subprocess
import sys
import time
import types

import jax
import numpy as np
import pytest

import jaxprop as jp
from jaxprop import checkpoint, runs
from jaxprop.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
XOR = ["train", "--no-plots", "--log-every", "50"]  # the classic XOR run, short


def _cli(capsys, *argv):
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def _one_line_error(capsys, argv, needle):
    rc, out, err = _cli(capsys, *argv)
    assert rc == 2, (argv, rc, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], (argv, err)
    assert "Traceback" not in err and "allow_pickle" not in err
    return lines[0]


def _losses(folder):
    return np.load(folder / "losses.npy", allow_pickle=False)


def _history(folder):
    lines = (folder / "history.jsonl").read_text().splitlines()
    return [json.loads(line)["epoch"] for line in lines]


def test_a_new_run_never_replaces_or_splices_an_old_one(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert _cli(capsys, *XOR, "--epochs", "200", "--out", "r")[0] == 0
    old = checkpoint.load(tmp_path / "r")
    _one_line_error(capsys, [*XOR, "--epochs", "100", "--out", "r"],
                    "r already holds a checkpoint at epoch 200; continue it with --resume r, or "
                    "replace it with --force (or give another --out)")
    assert checkpoint.load(tmp_path / "r").epoch == old.epoch  # untouched
    # --force replaces it: nothing of the old run is left in its files
    assert _cli(capsys, *XOR, "--epochs", "100", "--out", "r", "--force")[0] == 0
    assert _losses(tmp_path / "r").shape == (100,) and _history(tmp_path / "r") == [50, 100]
    assert json.loads((tmp_path / "r" / "metrics.json").read_text())["epoch"] == 100
    # without --out the default folder counts up instead of replacing runs/xor
    for expected in ("runs/xor", "runs/xor-2"):
        rc, out, _ = _cli(capsys, *XOR, "--epochs", "50")
        assert rc == 0 and f"saved to {expected}/" in out
    _one_line_error(capsys, [*XOR, "--out", ""], "--out is empty")
    assert not (tmp_path / ".lock").exists() and not (tmp_path / "r" / ".lock").exists()


def test_resume_keeps_every_epoch_and_refuses_foreign_folders(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert _cli(capsys, *XOR, "--epochs", "100", "--out", "a")[0] == 0
    # into the same folder and into a new one: losses and history from epoch 1
    assert _cli(capsys, "train", "--resume", "a", "--epochs", "150")[0] == 0
    assert _cli(capsys, "train", "--resume", "a", "--epochs", "250", "--out", "b")[0] == 0
    full = _cli(capsys, *XOR, "--epochs", "250", "--out", "full")[0]
    assert full == 0
    np.testing.assert_array_equal(_losses(tmp_path / "b"), _losses(tmp_path / "full"))
    assert _history(tmp_path / "b") == [50, 100, 150, 200, 250]
    assert checkpoint.load(tmp_path / "b").losses.shape == (250,)
    assert (tmp_path / "b" / "loss_curve.png").exists()  # drawn from all 250 losses
    # a folder holding another run's files is refused, whichever way round
    assert _cli(capsys, *XOR, "--epochs", "50", "--hidden", "3", "--out", "other")[0] == 0
    _one_line_error(capsys, ["train", "--resume", "a", "--epochs", "300", "--out", "other"],
                    "not the run whose results are in other")
    (tmp_path / "a" / "metrics.json").write_text(
        (tmp_path / "other" / "metrics.json").read_text())  # a folder whose files lie
    _one_line_error(capsys, ["train", "--resume", "a", "--epochs", "300"],
                    "their configs differ in hidden")


def _edit_header(path, **changes):
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    header = json.loads(arrays.pop("__header__").tobytes())
    for key, value in changes.items():
        if key == "config":
            header["config"].update(value)
        else:
            header[key] = value
    np.savez(path, __header__=np.frombuffer(json.dumps(header).encode(), np.uint8), **arrays)


@pytest.mark.parametrize("damage, needle", [
    (lambda p: checkpoint.save(p, checkpoint.load(p).restore(_template())),
     "holds no jaxprop train config (it was saved from the Python API?)"),
    (lambda p: p.write_bytes(b"\x80\x04K\x01."), "a Python pickle"),
    (lambda p: p.write_text("epoch,loss\n1,0.5\n"), "not a jaxprop checkpoint"),
    (lambda p: _edit_header(p, config={"hidden": "four"}), "the saved config's 'hidden' is"),
    (lambda p: _edit_header(p, config={"lr": True}), "the saved config's 'lr' is"),
    (lambda p: _edit_header(p, epoch=-3), "corrupt checkpoint header (epoch -3"),
    (lambda p: _edit_header(p, epoch=60), "epoch losses for epoch 60"),
    (lambda p: _edit_header(p, key_impl="nonsense"), "key_impl"),
], ids=["python-api", "pickle", "text", "hidden", "lr", "epoch", "losses", "key"])
def test_resume_of_a_foreign_or_edited_checkpoint_is_one_clear_error(tmp_path, capsys, damage,
                                                                     needle):
    assert _cli(capsys, *XOR, "--epochs", "50", "--out", str(tmp_path / "r"))[0] == 0
    damage(tmp_path / "r" / "checkpoint.npz")
    _one_line_error(capsys, ["train", "--resume", str(tmp_path / "r"), "--epochs", "100"], needle)


def _template():
    import jax
    import optax

    import jaxprop as jp
    from jaxprop.train import init_state

    return init_state(jp.mlp([2, 4, 1], "sigmoid", "sigmoid"), optax.sgd(0.1), jax.random.key(0))


def test_a_full_disk_while_plotting_says_training_finished(tmp_path, capsys, monkeypatch):
    def full(*args, **kwargs):
        open(args[1], "wb").write(b"\x89PNG half")
        raise OSError(errno.ENOSPC, "No space left on device")

    from jaxprop import plots

    monkeypatch.setattr(plots, "loss_curve", full)
    rc, out, err = _cli(capsys, "train", "--epochs", "100", "--out", str(tmp_path / "r"))
    assert rc == 0 and "train" in out
    assert "training finished" in err and "checkpoint, metrics.json, losses.npy" in err
    assert "No space left on device" in err
    m = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert m["status"] == "finished" and m["epoch"] == 100
    assert not (tmp_path / "r" / "loss_curve.png").exists()  # no half-written plot


def test_a_full_disk_while_saving_keeps_the_last_checkpoint(tmp_path, capsys, monkeypatch):
    real, calls = checkpoint.save, []

    def fills_up(*args, **kwargs):
        calls.append(1)
        if len(calls) > 3:  # the start, epochs 50 and 100 are saved; epoch 150 is not
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(runs.ckpt, "save", fills_up)
    line = _one_line_error(capsys, [*XOR, "--epochs", "500", "--out", str(tmp_path / "r")],
                           "No space left on device")
    assert "the checkpoint of epoch 100" in line and "--resume" in line
    monkeypatch.undo()
    assert checkpoint.load(tmp_path / "r").losses.shape == (100,)
    assert not [p for p in os.listdir(tmp_path / "r") if p.endswith(".tmp")]


def test_a_population_whose_members_all_diverge_exits_1(tmp_path, capsys):
    rc, _, err = _cli(capsys, "train", "--dataset", "moons", "--population", "3", "--activation",
                      "relu", "--loss", "mse", "--output-activation", "identity", "--optimizer",
                      "sgd", "--lr", "100", "--epochs", "50", "--no-plots",
                      "--out", str(tmp_path / "p"))
    assert rc == 1 and "every member diverged" in err
    m = json.loads((tmp_path / "p" / "metrics.json").read_text())
    assert m["status"] == "diverged" and m["finished"] == 0 and m["diverged"] == 3
    assert [r["status"] for r in m["population"]] == ["diverged"] * 3


@pytest.mark.parametrize("argv, needle", [
    (["--population", str(10**12)], "out of memory: --population 1000000000000 needs about"),
    (["--seed", str(2**64)], "--seed must be an integer from 0 to 4294967295"),
    (["--epochs", str(2**31)], "--epochs must be at most 2,147,483,647"),
    (["--dataset", "moons", "--loss", "bce", "--output-activation", "identity"],
     "loss bce takes probabilities"),
    (["--dataset", "moons", "--loss", "bce", "--output-activation", "relu"],
     "loss bce takes probabilities"),
    (["--dataset", "digits", "--output-activation", "softmax"], "takes logits"),
    (["--dataset", "moons", "--task", "regression"], "--task regression applies only"),
    (["--coordinator", "127.0.0.1:1"], "need --data-parallel"),
], ids=["population-memory", "seed", "epochs", "bce-identity", "bce-relu", "softmax-ce",
        "task", "coordinator"])
def test_bad_train_arguments_exit_2_with_one_line(tmp_path, capsys, argv, needle):
    _one_line_error(capsys, ["train", *argv, "--out", str(tmp_path / "r")], needle)
    assert not (tmp_path / "r").exists()


def test_integer_label_loss_trains_from_the_cli(tmp_path, capsys):
    rc, out, _ = _cli(capsys, "train", "--dataset", "digits", "--epochs", "2", "--loss",
                      "sparse_softmax_cross_entropy", "--no-plots", "--out", str(tmp_path / "r"))
    m = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert rc == 0 and m["train_accuracy"] > 0.8


# --------------------------------------------------------------------------------------------
# Signals and kills (subprocesses; XOR chunks of ~1 s so a stop lands inside one)

LONG = ["train", "--epochs", "100000000", "--log-every", "400000", "--no-plots"]


def _start(tmp_path, *argv):
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "JAX_PLATFORMS": "cpu"}
    return subprocess.Popen([sys.executable, "-m", "jaxprop", *argv], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_first_chunk(tmp_path, proc, folder="r"):
    """Until the run has logged (and checkpointed) its first chunk."""
    deadline, history = time.time() + 120, tmp_path / folder / "history.jsonl"
    while not (history.exists() and history.stat().st_size):
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.05)


@pytest.mark.long
@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)],
                         ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_within_a_second_and_saves(tmp_path, sig, code):
    proc = _start(tmp_path, *LONG, "--out", "r")
    try:
        _wait_for_first_chunk(tmp_path, proc)
        if sig == signal.SIGINT:  # meanwhile a second run into the folder is refused
            other = _start(tmp_path, *LONG, "--out", "r")
            _, err = other.communicate(timeout=120)
            assert other.returncode == 2
            assert f"in use by another jaxprop run (PID {proc.pid}" in err
        time.sleep(0.3)
        t0 = time.perf_counter()
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
        stopped = time.perf_counter() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, err
    assert stopped < 2.0, stopped  # ~0.1 s measured (load 10 on 2 cores); chunks ~1 s
    assert f"stopped by {sig.name}" in err and "jaxprop train --resume r" in err
    m = json.loads((tmp_path / "r" / "metrics.json").read_text())
    saved = checkpoint.load(tmp_path / "r")
    assert m["status"] == "interrupted" and m["epoch"] == saved.epoch >= 400_000
    assert _losses(tmp_path / "r").shape == (saved.epoch,) == saved.losses.shape
    assert not (tmp_path / "r" / ".lock").exists()


@pytest.mark.long
def test_after_sigkill_the_lock_is_taken_over_and_leftovers_go(tmp_path):
    proc = _start(tmp_path, *LONG, "--out", "r")
    try:
        _wait_for_first_chunk(tmp_path, proc)
    finally:
        proc.kill()
        proc.wait()
    saved = checkpoint.load(tmp_path / "r")
    m = json.loads((tmp_path / "r" / "metrics.json").read_text())
    # the killed run's metrics.json says it was running (its PID is gone), never ahead of the
    # checkpoint (the two are written one after the other: a kill can land in between)
    assert m["status"] == "running" and m["pid"] == proc.pid and m["epoch"] <= saved.epoch
    (tmp_path / "r" / ".checkpoint.npz.k1ll3d.tmp").write_bytes(b"PK half a zip")
    (tmp_path / "r" / ".metrics.json.x.tmp").write_bytes(b"{")
    done = _start(tmp_path, "train", "--resume", "r", "--epochs", str(saved.epoch + 100))
    out, err = done.communicate(timeout=240)
    assert done.returncode == 0, err
    assert sorted(os.listdir(tmp_path / "r")) == sorted(
        ["checkpoint.npz", "decision_boundary.png", "history.csv", "history.jsonl",
         "loss_curve.png", "losses.npy", "metrics.json", "model.npz"])
    assert _losses(tmp_path / "r").shape == (saved.epoch + 100,)
    assert np.isfinite(_losses(tmp_path / "r")).all()


def test_the_final_metrics_are_the_last_records_and_the_collector_is_left_as_it_was(
        tmp_path, capsys):
    """A finished run reports the numbers its last chunk measured on the final state (no
    program compiled for them); ``main`` unfreezes the garbage collector it froze."""
    import gc

    rc, _, err = _cli(capsys, *XOR, "--epochs", "100", "--out", str(tmp_path / "r"))
    assert rc == 0, err
    assert gc.isenabled() and gc.get_freeze_count() == 0
    m = json.loads((tmp_path / "r" / "metrics.json").read_text())
    last = json.loads((tmp_path / "r" / "history.jsonl").read_text().splitlines()[-1])
    for key in runs.FINAL_KEYS:
        assert m[key] == last[key], key
    model, loss, _ = runs.build_model(m["config"], runs.load_dataset(m["config"]))
    ds = runs.training_data(runs.load_dataset(m["config"]), loss)
    saved = checkpoint.load(tmp_path / "r")
    optimizer = runs.get_optimizer(m["config"]["optimizer"], m["config"]["lr"])
    state = saved.restore(jp.init_state(model, optimizer, jax.random.key(0)))
    again = runs.final_metrics(model, loss, state, ds, "f32")
    for key in runs.FINAL_KEYS:
        np.testing.assert_allclose(m[key], again[key], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("population", [0, True, 2.0, "3"])
def test_a_population_size_that_is_no_positive_integer_is_refused_first(tmp_path, population):
    with pytest.raises(ValueError, match=r"^--population must be a positive integer; got "):
        runs.population_run({"out": str(tmp_path / "p")}, population=population, lrs=[0.1])
    assert not (tmp_path / "p").exists()


def test_population_metrics_count_members_by_status_and_xor_solutions():
    from jaxprop.scale.population import PopulationResult

    res = PopulationResult(None, np.array([0.1, np.nan, 0.3, 0.2]),
                           np.array([1.0, np.nan, 0.5, 1.0]), np.array([0, 1, 0, 1]),
                           np.array([0.5, 0.5, 2.0, 2.0]), None)
    from jaxprop import data

    xor, moons = data.load("xor"), data.load("moons")
    assert (xor.solved_accuracy, moons.solved_accuracy) == (1.0, None)  # the dataset's fact
    config = {"epochs": 7, "population": 2, "lr_sweep": [0.5, 2.0]}
    m = runs.population_metrics(config, res, 1.5, solved_accuracy=xor.solved_accuracy)
    assert (m["status"], m["epoch"], m["members"], m["finished"], m["diverged"]) == (
        "finished", 7, 4, 3, 1)
    assert m["median_final_loss"] == pytest.approx(0.2) and m["wall_time"] == 1.5
    assert m["solved"] == 2 and m["solved_by_lr"] == {"0.5": 1, "2.0": 1}
    assert [r["status"] for r in m["population"]] == ["finished", "diverged", "finished",
                                                      "finished"]
    json.dumps(m, allow_nan=False)
    assert "solved" not in runs.population_metrics(config, res, 1.5,
                                                   solved_accuracy=moons.solved_accuracy)


def _model_cfg(**kw):
    return {"model": None, "hidden": [4], "activation": "tanh", "output_activation": None,
            "loss": None, "init": "glorot", **kw}


BINARY = types.SimpleNamespace(example_shape=(2,), num_classes=2, num_outputs=1, name="xor")


@pytest.mark.parametrize("cfg, loss, out_act, n_layers", [
    (_model_cfg(), "bce_with_logits", "identity", 4),
    (_model_cfg(loss="sse_half", output_activation="sigmoid"), "sse_half", "sigmoid", 4),
    (_model_cfg(model="dense(3)-relu-dense(1)-sigmoid", loss="bce"), "bce", "sigmoid", 4),
    (_model_cfg(model="dense(3)-relu-dense(1)"), "bce_with_logits", "identity", 4),
    (_model_cfg(model="dense(3)-relu-dense(1)-leaky_relu(0.2)", loss="mse"), "mse",
     "leaky_relu(0.2)", 4),
])
def test_build_model_returns_what_it_decided_and_leaves_cfg_alone(cfg, loss, out_act, n_layers):
    before = dict(cfg)
    model, got_loss, got_out_act = runs.build_model(cfg, BINARY)
    assert cfg == before
    assert (got_loss, got_out_act) == (loss, out_act)
    assert len(model.layers) == n_layers and model.layers[-1].spec == out_act
    assert model.layers[-1].is_activation


def test_build_model_refuses_two_output_activations():
    cfg = _model_cfg(model="dense(1)-sigmoid", output_activation="identity", loss="bce")
    with pytest.raises(ValueError, match="ends with sigmoid but the output activation is "
                                         "identity: give it once"):
        runs.build_model(cfg, BINARY)


@pytest.mark.long
@pytest.mark.parametrize("delay", [0.3, 0.6, 1.0, 2.0])
@pytest.mark.parametrize("twice", [False, True], ids=["once", "twice"])
def test_ctrl_c_at_any_moment_of_the_start_leaves_in_one_line(tmp_path, delay, twice):
    """Ctrl-C while JAX imports (it could crash in native code), while the command parses,
    compiles or trains, and a second Ctrl-C 10 ms later: exit 130, no traceback. (Not in the
    interpreter's own first tens of milliseconds, before any of jaxprop runs.)"""
    proc = _start(tmp_path, *LONG, "--out", "r")
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    if twice:
        time.sleep(0.01)
        proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "Exception ignored" not in err, err
