"""Training options of issue #18: learning-rate schedules and weight decay (optax), early
stopping, the validation split and the progress bar, in Python and through ``jaxprop train``."""

import io
import json
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from rich.console import Console

import jaxprop as jp
from jaxprop import checkpoint as ckpt
from jaxprop.cli import build_parser, main
from jaxprop.cli.train import build_config
from jaxprop.data import Dataset, validation_split, xor
from jaxprop.runs import train_run
from jaxprop.train.early_stopping import EarlyStopping
from jaxprop.train.optimizers import SCHEDULES, make_optimizer, make_schedule
from jaxprop.train.progress import console_for
from jaxprop.train.step import steps_per_epoch

KEY = jax.random.key(0)


def xor_model():
    return jp.mlp([2, 4, 1], "sigmoid", "sigmoid", init="normal")


def line_data(n=32, seed=0):
    """A regression whose test targets contradict the training ones: the test loss rises
    once the network fits the training set, so early stopping must stop."""
    x = np.random.default_rng(seed).normal(size=(n, 1)).astype(np.float32)
    return x, 2 * x, x, -2 * x


# --------------------------------------------------------------------------------------------
# Schedules and weight decay


STEPS = np.array([0, 1, 9, 10, 55, 99, 100])


@pytest.mark.parametrize("name, expected", [
    ("cosine", optax.cosine_decay_schedule(0.5, 100, alpha=0.0)),
    ("warmup-cosine", optax.warmup_cosine_decay_schedule(0.0, 0.5, 10, 100, end_value=0.0)),
    ("exponential", optax.exponential_decay(0.5, 100, 0.1)),
])
def test_each_schedule_is_optaxs(name, expected):
    got = make_schedule(name, 0.5, warmup_steps=10 if SCHEDULES[name].warmup else 0,
                        total_steps=100)
    np.testing.assert_allclose([float(got(s)) for s in STEPS],
                               [float(expected(s)) for s in STEPS], rtol=1e-6)


def test_final_fraction_and_the_constant_schedule():
    cosine = make_schedule("cosine", 0.5, total_steps=100, final_fraction=0.2)
    assert float(cosine(100)) == pytest.approx(0.1)
    assert float(make_schedule("exponential", 1.0, total_steps=10,
                               final_fraction=0.5)(10)) == pytest.approx(0.5)
    assert make_schedule("constant", 0.3) == 0.3  # a number: the plain optimizer's state
    assert make_optimizer("sgd", 0.3) is make_optimizer("sgd", 0.3)  # one compiled program


@pytest.mark.parametrize("kwargs, needle", [
    (dict(name="linear"), "unknown learning-rate schedule 'linear'; known: constant, cosine, "
                          "warmup-cosine, exponential"),
    (dict(name="cosine", warmup_steps=5, total_steps=100), "takes no warmup"),
    (dict(name="warmup-cosine", warmup_steps=100, total_steps=100), "fewer than total_steps"),
    (dict(name="constant", final_fraction=0.1), "does not decay"),
    (dict(name="exponential", total_steps=10, final_fraction=0.0), "must be positive"),
    (dict(name="cosine"), "needs total_steps"),
    (dict(name="cosine", total_steps=10, final_fraction=1.5), "final_fraction must be <= 1"),
])
def test_bad_schedules_say_what_is_wrong(kwargs, needle):
    with pytest.raises(ValueError) as e:
        make_schedule(kwargs.pop("name"), 0.1, **kwargs)
    assert needle in str(e.value)


def one_update(optimizer, params, grads):
    updates, _ = optimizer.update(grads, optimizer.init(params), params)
    return optax.apply_updates(params, updates)


def test_weight_decay_is_adamw_for_adam_and_l2_for_sgd():
    params = {"w": jnp.array([1.0, -2.0, 3.0])}
    grads = {"w": jnp.array([0.1, 0.2, -0.3])}
    chex.assert_trees_all_close(
        one_update(make_optimizer("adam", 1e-2, weight_decay=0.1), params, grads),
        one_update(optax.adamw(1e-2, weight_decay=0.1), params, grads))
    decayed = one_update(make_optimizer("sgd", 0.5, weight_decay=0.1), params, grads)
    chex.assert_trees_all_close(decayed, {"w": params["w"] - 0.5 * (grads["w"] + 0.1 * params["w"])})
    with pytest.raises(ValueError, match="weight_decay must be >= 0"):
        make_optimizer("adam", 1e-2, weight_decay=-1.0)


def test_records_report_the_learning_rate_of_each_chunks_last_step():
    x, t = xor()
    steps = steps_per_epoch(4, 2)
    rate = make_schedule("warmup-cosine", 0.5, warmup_steps=2 * steps, total_steps=8 * steps)
    optimizer = make_optimizer("sgd", rate)
    _, history = jp.fit(xor_model(), "sse_half", optimizer, (x, t), epochs=8, batch_size=2,
                        key=KEY, log_every=2, learning_rate=rate)
    assert [r["learning_rate"] for r in history.records] == pytest.approx(
        [float(rate(e * steps - 1)) for e in (2, 4, 6, 8)])
    _, history = jp.fit(xor_model(), "sse_half", 0.1, (x, t), epochs=2, key=KEY)
    assert {r["learning_rate"] for r in history.records} == {0.1}


def test_a_resumed_schedule_continues_where_it_stopped():
    x, t = xor()
    rate = make_schedule("cosine", 0.5, total_steps=12 * 2)
    optimizer = make_optimizer("momentum", rate, weight_decay=1e-3)
    common = dict(batch_size=2, log_every=3)
    full, _ = jp.fit_state(xor_model(), "sse_half", optimizer, (x, t), epochs=12, key=KEY,
                           **common)
    half, _ = jp.fit_state(xor_model(), "sse_half", optimizer, (x, t), epochs=6, key=KEY,
                           **common)
    resumed, _ = jp.fit_state(xor_model(), "sse_half", optimizer, (x, t), epochs=12,
                              state=half, **common)
    chex.assert_trees_all_equal(jax.device_get(resumed.params), jax.device_get(full.params))
    chex.assert_trees_all_equal(jax.device_get(resumed.opt_state),
                                jax.device_get(full.opt_state))


# --------------------------------------------------------------------------------------------
# Early stopping


def test_early_stopping_returns_the_best_epoch_and_says_so():
    model = jp.mlp([1, 1], "identity", "identity")
    state, history = jp.fit_state(model, "mse", 0.05, line_data(), epochs=200, key=KEY,
                                  early_stopping=3)
    test_losses = [r["test_loss"] for r in history.records]
    best = history.best_epoch
    assert history.stopped_early and history.records[-1]["stopped_early"]
    assert best == 1 + int(np.argmin(test_losses)) and int(state.epoch) == best
    assert history.records[-1]["epoch"] == best + 3 == len(history.losses) < 200
    assert all(r["best_epoch"] <= r["epoch"] for r in history.records)
    again, _ = jp.fit_state(model, "mse", 0.05, line_data(), epochs=best, key=KEY,
                            log_every=1)
    chex.assert_trees_all_close(state.params, again.params)


def test_early_stopping_options_and_refusals():
    model = jp.mlp([1, 1], "identity", "identity")
    x, t, *_ = line_data()
    _, history = jp.fit_state(model, "mse", 0.05, line_data(), epochs=40, key=KEY,
                              early_stopping=EarlyStopping(3, min_delta=10.0), log_every=2)
    assert history.stopped_early and history.best_epoch == 2  # nothing improves by 10
    with pytest.raises(ValueError, match="no validation or test data"):
        jp.fit(model, "mse", 0.05, (x, t), epochs=4, key=KEY, early_stopping=2)
    with pytest.raises(ValueError, match="patience must be >= 1"):
        jp.fit(model, "mse", 0.05, line_data(), epochs=4, key=KEY, early_stopping=-1)
    with pytest.raises(ValueError, match="fit evaluates test_loss"):
        jp.fit(model, "mse", 0.05, line_data(), epochs=4, key=KEY,
               early_stopping=EarlyStopping(2, monitor="val_loss"))


# --------------------------------------------------------------------------------------------
# The validation split


def small_dataset(n=10):
    x = np.arange(2 * n, dtype=np.float32).reshape(n, 2)
    y = (np.arange(n) % 2).astype(np.float32)[:, None]
    return Dataset("toy", x, y, x[:3] + 100, y[:3], 2)


def test_validation_split_sizes_determinism_and_the_untouched_test_set():
    ds = small_dataset()
    last = validation_split(ds, 0.25)
    assert len(last.x_train) == 7 and len(last.x_val) == 3  # ceil(0.25 x 10)
    np.testing.assert_array_equal(last.x_val, ds.x_train[7:])
    a, b = validation_split(ds, 0.3, seed=1), validation_split(ds, 0.3, seed=1)
    np.testing.assert_array_equal(a.x_val, b.x_val)
    assert not np.array_equal(a.x_val, validation_split(ds, 0.3, seed=2).x_val)
    rows = np.concatenate([a.x_train, a.x_val])[:, 0]
    assert sorted(rows) == sorted(ds.x_train[:, 0])  # a partition of the training set
    np.testing.assert_array_equal(a.x_test, ds.x_test)
    for fraction in (0, 1, 1.5, -0.1):
        with pytest.raises(ValueError, match="validation_fraction must be strictly between"):
            validation_split(ds, fraction)
    with pytest.raises(ValueError, match="already has a validation split"):
        validation_split(a, 0.2)
    with pytest.raises(ValueError, match="leaves none to train on"):
        validation_split(small_dataset(1), 0.5)


def test_fit_evaluates_the_validation_split_and_leaves_the_test_set():
    ds = validation_split(small_dataset(), 0.3, seed=0)
    model = jp.mlp([2, 1], "identity", "identity")
    _, history = jp.fit(model, "mse", 0.01, ds, epochs=2, key=KEY, accuracy=False)
    assert {"val_loss", "train_loss"} <= set(history.records[-1])
    assert not any(k.startswith("test_") for k in history.records[-1])


# --------------------------------------------------------------------------------------------
# The progress bar


def test_progress_draws_on_a_console_and_is_off_without_a_terminal(monkeypatch):
    x, t = xor()
    out = io.StringIO()
    jp.fit(xor_model(), "sse_half", 0.1, (x, t), epochs=4, key=KEY, log_every=2,
           progress=Console(file=out, force_terminal=True, width=100))
    assert "4/4" in out.getvalue() and "epochs" in out.getvalue() and "loss" in out.getvalue()
    err = io.StringIO()  # not a terminal
    monkeypatch.setattr(sys, "stderr", err)
    jp.fit(xor_model(), "sse_half", 0.1, (x, t), epochs=2, key=KEY)
    assert err.getvalue() == "" and console_for(None) is None

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr(sys, "stderr", Terminal())
    assert console_for(None) is not None and console_for(False) is None
    with pytest.raises(ValueError, match="progress must be"):
        console_for("yes")


# --------------------------------------------------------------------------------------------
# jaxprop train


def train(*args) -> int:
    return main(["train", *args])


def header(path):
    with np.load(path) as z:
        return json.loads(z["__header__"].tobytes())


def test_cli_options_round_trip_through_the_config_and_resume(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert train("--epochs", "6", "--batch-size", "2", "--log-every", "3", "--no-plots",
                 "--lr-schedule", "cosine", "--lr-decay", "0.2", "--weight-decay", "0.001",
                 "--validation-fraction", "0.25", "--early-stopping", "50", "--out", out) == 0
    cfg = header(tmp_path / "run" / "checkpoint.npz")["config"]
    assert {k: cfg[k] for k in ("lr_schedule", "lr_decay", "weight_decay", "warmup_epochs",
                                "validation_fraction", "early_stopping")} == {
        "lr_schedule": "cosine", "lr_decay": 0.2, "weight_decay": 0.001, "warmup_epochs": 0,
        "validation_fraction": 0.25, "early_stopping": 50}
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["stopped_early"] is False and metrics["best_epoch"] <= 6
    assert "val_loss" in metrics and "test_loss" in metrics
    history = [json.loads(line) for line in
               (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
    assert all("learning_rate" in r and "val_loss" in r for r in history)
    capsys.readouterr()
    assert train("--resume", out, "--weight-decay", "0.01") == 2
    assert "--weight-decay differs" in capsys.readouterr().err
    assert train("--resume", out, "--epochs", "8") == 2
    assert "spans its 6 epochs" in capsys.readouterr().err
    assert train("--resume", out, "--no-plots") == 0  # nothing left to train


def test_a_resumed_scheduled_run_equals_the_uninterrupted_one(tmp_path):
    common = ["--epochs", "12", "--batch-size", "3", "--log-every", "4", "--no-plots",
              "--lr-schedule", "warmup-cosine", "--warmup-epochs", "3", "--optimizer", "adam"]
    assert train(*common, "--out", str(tmp_path / "full")) == 0
    cfg = build_config(build_parser("train").parse_args(
        ["train", *common, "--out", str(tmp_path / "part")]))
    done = []
    result = train_run(cfg, plots_on=False, on_record=lambda r: done.append(r["epoch"]),
                       should_stop=lambda: bool(done) and done[-1] >= 8)
    assert result.interrupted and result.metrics["epoch"] == 8
    assert train("--resume", str(tmp_path / "part"), "--no-plots") == 0
    leaves = header(tmp_path / "part" / "checkpoint.npz")["trees"]["opt_state"]["leaves"]
    assert any("count" in leaf["path"] for leaf in leaves)  # the schedule's step count
    with np.load(tmp_path / "full" / "checkpoint.npz") as a, \
            np.load(tmp_path / "part" / "checkpoint.npz") as b:
        assert a.files == b.files
        for name in a.files:
            if name != "__header__":
                np.testing.assert_array_equal(a[name], b[name], err_msg=name)


MOONS = ["--dataset", "moons", "--epochs", "60", "--validation-fraction", "0.2",
         "--early-stopping", "5", "--no-plots"]


def test_cli_early_stopping_keeps_the_best_model_and_refuses_to_resume(tmp_path, capsys):
    out = tmp_path / "moons"
    assert train(*MOONS, "--out", str(out)) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["stopped_early"] and metrics["last_epoch"] == metrics["best_epoch"] + 5
    assert metrics["epoch"] == metrics["best_epoch"] < 60
    assert "stopped early after epoch" in capsys.readouterr().out
    best = ckpt.load(out / "best.npz")
    assert best.epoch == metrics["best_epoch"]
    _, params, _ = jp.load(out / "model.npz")
    for name in best.arrays:
        if name.startswith("params/"):
            leaf = best.arrays[name]
            assert any(np.array_equal(leaf, p) for p in jax.tree.leaves(params)), name
    assert train("--resume", str(out)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "stopped early" in err[0] and "it is finished" in err[0]


@pytest.mark.long
def test_an_interrupted_early_stopping_run_resumes_with_its_best(tmp_path):
    """Interrupted two epochs after its best, the resumed run remembers it (best.npz)."""
    assert train(*MOONS, "--out", str(tmp_path / "full")) == 0
    metrics = json.loads((tmp_path / "full" / "metrics.json").read_text())
    cfg = build_config(build_parser("train").parse_args(
        ["train", *MOONS, "--out", str(tmp_path / "part")]))
    done = []
    result = train_run(cfg, plots_on=False, on_record=lambda r: done.append(r["epoch"]),
                       should_stop=lambda: bool(done) and done[-1] >= metrics["best_epoch"] + 2)
    assert result.interrupted
    assert train("--resume", str(tmp_path / "part"), "--no-plots") == 0
    resumed = json.loads((tmp_path / "part" / "metrics.json").read_text())
    for key in ("epoch", "best_epoch", "last_epoch", "stopped_early", "val_loss", "test_loss"):
        assert resumed[key] == metrics[key], key


@pytest.mark.parametrize("args, needle", [
    (["--lr-schedule", "linear"], "unknown learning-rate schedule 'linear'"),
    (["--early-stopping", "-2"], "--early-stopping must be a positive"),
    (["--validation-fraction", "1"], "--validation-fraction must be strictly between 0 and 1"),
    (["--validation-fraction", "0"], "--validation-fraction must be strictly between 0 and 1"),
    (["--lr-schedule", "warmup-cosine", "--warmup-epochs", "20", "--epochs", "10"],
     "--warmup-epochs 20 must be fewer than --epochs 10"),
    (["--warmup-epochs", "2"], "--warmup-epochs applies to --lr-schedule warmup-cosine"),
    (["--lr-decay", "0.5"], "--lr-decay applies to a decaying --lr-schedule"),
    (["--lr-schedule", "cosine", "--lr-decay", "2"], "--lr-decay must be a fraction"),
    (["--weight-decay", "-1"], "--weight-decay must be a non-negative number"),
    (["--population", "2", "--lr-schedule", "cosine"], "cannot be combined with --population"),
])
def test_bad_values_give_one_line_and_exit_2(tmp_path, capsys, args, needle):
    assert train(*args, "--out", str(tmp_path / "run")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err
    assert not (tmp_path / "run").exists()
