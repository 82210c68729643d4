"""Logs that tools read (issue 18): history.csv in every run folder, TensorBoard event files
with ``jaxprop train --tensorboard`` and ``jp.TensorBoardLogger`` as a ``fit`` callback."""

import csv
import json
import sys

import jax
import numpy as np
import pytest

import jaxprop as jp
from jaxprop import checkpoint, logs, runs
from jaxprop.cli import main

XOR = ["train", "--no-plots", "--log-every", "50"]
# the tags of a classification record and the record keys they hold
RECORD_TAGS = {"loss/epoch": "loss", "loss/train": "train_loss", "loss/test": "test_loss",
               "accuracy/train": "train_accuracy", "accuracy/test": "test_accuracy",
               "time": "time", "learning_rate": "learning_rate"}
XOR_LEAVES = ("0.dense.W", "0.dense.b", "2.dense.W", "2.dense.b", "all")


def _cli(capsys, *argv):
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def _jsonl(folder):
    return [json.loads(line) for line in (folder / "history.jsonl").read_text().splitlines()]


def _csv(folder):
    with open(folder / "history.csv", newline="") as f:
        return list(csv.DictReader(f))


def _same_records(rows, records):
    """The CSV rows hold the JSON records: every key, every value (empty cell: no value)."""
    assert len(rows) == len(records)
    for row, record in zip(rows, records):
        assert {k: json.loads(v) for k, v in row.items() if v != ""} == {
            k: v for k, v in record.items() if v is not None}


def _scalars(logdir):
    """``{tag: [(step, value), ...]}`` by TensorBoard's own reader, in step order."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(logdir))
    events.Reload()
    return {tag: sorted((e.step, e.value) for e in events.Scalars(tag))
            for tag in events.Tags()["scalars"]}


def test_tensorboard_events_hold_the_records_and_the_norms_also_after_resume(tmp_path, capsys):
    out = tmp_path / "r"
    assert _cli(capsys, *XOR, "--epochs", "100", "--out", str(out), "--tensorboard")[0] == 0
    assert _cli(capsys, *XOR, "--resume", str(out), "--epochs", "150", "--tensorboard")[0] == 0
    records, scalars = _jsonl(out), _scalars(out / runs.TENSORBOARD_DIR)
    assert set(scalars) == {*RECORD_TAGS, *(f"{kind}/{leaf}" for kind in
                                            ("param_norm", "grad_norm") for leaf in XOR_LEAVES)}
    for tag, key in RECORD_TAGS.items():  # the values are float32 in the event files
        assert scalars[tag] == [(r["epoch"], np.float32(r[key])) for r in records], tag
    assert [step for step, _ in scalars["grad_norm/0.dense.W"]] == [50, 100, 150]

    # the last norms are those of the final params and of jaxprop's gradient on them
    cfg = json.loads((out / "metrics.json").read_text())["config"]
    ds = runs.load_dataset(cfg)
    model, loss, _ = runs.build_model(cfg, ds)
    optimizer = runs.get_optimizer(cfg["optimizer"], cfg["lr"])
    params = checkpoint.load(out).restore(jp.init_state(model, optimizer,
                                                        jax.random.key(0))).params
    _, grads = jp.value_and_grad(model, loss, params, ds.x_train, ds.y_train, train=False)
    for i, name in ((0, "W"), (2, "b")):
        tag = f"{i}.dense.{name}"
        np.testing.assert_allclose(scalars[f"param_norm/{tag}"][-1][1],
                                   np.linalg.norm(params[i][name]), rtol=1e-6)
        np.testing.assert_allclose(scalars[f"grad_norm/{tag}"][-1][1],
                                   np.linalg.norm(grads[i][name]), rtol=1e-5)
    total = np.sqrt(sum(np.sum(np.square(g)) for g in jax.tree.leaves(grads)))
    np.testing.assert_allclose(scalars["grad_norm/all"][-1][1], total, rtol=1e-5)

    # history.csv holds history.jsonl's records, rewritten on resume
    _same_records(_csv(out), records)
    assert [r["epoch"] for r in records] == [50, 100, 150]

    # a fresh run that replaces this one leaves none of its events behind
    assert _cli(capsys, *XOR, "--epochs", "50", "--out", str(out), "--force")[0] == 0
    assert not (out / runs.TENSORBOARD_DIR).exists()
    _same_records(_csv(out), _jsonl(out))


def test_a_run_resumed_into_a_new_folder_logs_the_records_before_it(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    assert _cli(capsys, *XOR, "--epochs", "100", "--out", str(a))[0] == 0
    assert not (a / runs.TENSORBOARD_DIR).exists()  # only when asked
    assert _cli(capsys, *XOR, "--resume", str(a), "--epochs", "150", "--out", str(b),
                "--tensorboard")[0] == 0
    scalars = _scalars(b / runs.TENSORBOARD_DIR)
    assert [s for s, _ in scalars["loss/train"]] == [50, 100, 150]  # from the checkpoint
    assert [s for s, _ in scalars["grad_norm/all"]] == [150]  # norms of states it had
    _same_records(_csv(b), _jsonl(b))


def test_tensorboard_without_the_writer_is_one_line_before_anything_is_made(
        tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # import tensorboardX fails
    rc, _, err = _cli(capsys, *XOR, "--out", str(tmp_path / "r"), "--tensorboard")
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and "pip install 'jaxprop[tensorboard]'" in lines[0]
    assert "Traceback" not in err and not (tmp_path / "r").exists()


def test_tensorboard_logs_single_runs_only(tmp_path, capsys):
    rc, _, err = _cli(capsys, *XOR, "--population", "2", "--tensorboard",
                      "--out", str(tmp_path / "p"))
    assert rc == 2 and "--tensorboard logs a single run" in err
    assert not (tmp_path / "p").exists()


def test_record_scalars_tag_every_number():
    record = {"epoch": 7, "loss": 0.5, "train_loss": 0.4, "test_rmse": 2.0, "test_r2": None,
              "learning_rate": 0.01, "time": 1.5, "note": "text", "flag": True}
    assert logs.record_scalars(record) == {"loss/epoch": 0.5, "loss/train": 0.4,
                                           "rmse/test": 2.0, "learning_rate": 0.01, "time": 1.5}


def test_csv_history_appends_and_rewrites_for_a_new_column(tmp_path):
    path = tmp_path / "history.csv"
    history = logs.CsvHistory(path, [{"epoch": 1, "loss": 0.5}])
    history.append({"epoch": 2, "loss": 0.25})
    assert path.read_text() == "epoch,loss\n1,0.5\n2,0.25\n"
    history.append({"epoch": 3, "loss": 0.125, "learning_rate": 0.1, "test_r2": None})
    history.close()
    assert path.read_text() == ("epoch,loss,learning_rate,test_r2\n1,0.5,,\n2,0.25,,\n"
                                "3,0.125,0.1,\n")
    jp.write_history_csv(history.records, tmp_path / "again.csv")
    assert (tmp_path / "again.csv").read_text() == path.read_text()


def test_tensorboard_logger_as_a_fit_callback_uses_no_autodiff(tmp_path, monkeypatch):
    from jaxprop.data import xor

    x, t = xor()
    model = jp.mlp([2, 4, 1], "sigmoid", "sigmoid", init="normal")
    for name in ("grad", "value_and_grad", "vjp", "jvp"):  # the gradient norms: by hand
        monkeypatch.setattr(jax, name, None)
    with jp.TensorBoardLogger(tmp_path / "tb", model, "sse_half", (x, t)) as logger:
        params, history = jp.fit(model, "sse_half", 0.5, (x, t), epochs=20, log_every=10,
                                 key=jax.random.key(0), callback=logger)
    monkeypatch.undo()
    scalars = _scalars(tmp_path / "tb")
    assert [s for s, _ in scalars["grad_norm/2.dense.W"]] == [10, 20]
    _, grads = jp.value_and_grad(model, "sse_half", params, x, t)
    np.testing.assert_allclose(scalars["grad_norm/2.dense.W"][-1][1],
                               np.linalg.norm(grads[2]["W"]), rtol=1e-5)
    jp.write_history_csv(history, tmp_path / "history.csv")
    _same_records(_csv(tmp_path), history.records)


def test_the_logger_needs_model_loss_and_data_together(tmp_path):
    with pytest.raises(ValueError, match="need the model, the loss and the data"):
        jp.TensorBoardLogger(tmp_path, None, "mse", (np.zeros((2, 1)), np.zeros((2, 1))))
