"""Run folders: train from a config and write everything a run leaves behind.

A config is a plain dict (what ``jaxprop train`` resolves from its arguments and saves in every
checkpoint, so ``--resume`` rebuilds the same run)::

    {"dataset", "data_dir", "csv", "label_column", "seed", "hidden", "activation",
     "output_activation", "loss", "init", "optimizer", "lr", "epochs", "batch_size",
     "drop_last", "log_every", "out", "precision", "model"}

(``precision``: ``f32``, ``bf16`` or ``highest``, see :mod:`jaxprop.train.precision`; a config
saved without it trains in ``f32``. ``model`` is a textual architecture
(``"conv(16,3)-relu-maxpool(2)-flatten-dense(10)"``, see :mod:`jaxprop.core.spec`) or ``None``
for the MLP that ``hidden`` and ``activation`` describe.)

:func:`train_run` writes to ``cfg["out"]``: ``metrics.json`` (config, final train/test loss and
accuracy, wall time, compile time, device), ``history.jsonl`` (one line per logged epoch),
``checkpoint.npz`` (saved atomically after every logged epoch), ``losses.npy`` (every epoch's
training loss), ``loss_curve.png`` and, for 2-D inputs, ``decision_boundary.png``.
:func:`population_run` writes ``metrics.json`` with one record per member and
``population_losses.png``. Nothing here prints; the CLI reports progress through callbacks.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable, NamedTuple

import jax
import numpy as np

from jaxprop import checkpoint as ckpt
from jaxprop.core.checks import check_output_fits_loss, output_shape
from jaxprop.core.layers import ACTIVATIONS
from jaxprop.core.layers import activation as activation_layer
from jaxprop.core.losses import Loss, get_loss
from jaxprop.core.network import mlp, serial
from jaxprop.core.spec import parse_model
from jaxprop.data.preprocessing import decode_targets
from jaxprop.scale.population import PopulationResult, fit_population
from jaxprop.train.fit import TrainingDiverged, fit_state
from jaxprop.train.optimizers import get_optimizer, optimizer_alias
from jaxprop.train.step import init_state, make_epoch_fn, make_eval_fn

# Options that define the run; on --resume they come from the checkpoint.
MODEL_KEYS = ("dataset", "data_dir", "csv", "label_column", "seed", "hidden", "activation",
              "output_activation", "loss", "optimizer", "lr", "batch_size", "init", "precision",
              "model")


# --------------------------------------------------------------------------------------------
# From a config to data, model and loss


def load_dataset(cfg: dict):
    """The config's :class:`~jaxprop.data.Dataset` (split and standardised by ``cfg["seed"]``)."""
    from jaxprop import data

    kwargs = {"seed": cfg["seed"]}
    if cfg["dataset"] in ("mnist", "fashion-mnist"):
        if not Path(cfg["data_dir"]).is_dir():
            raise FileNotFoundError(f"--data-dir {cfg['data_dir']}: no such directory")
        kwargs["data_dir"] = cfg["data_dir"]
    if cfg["dataset"] == "csv":
        kwargs["path"] = cfg["csv"]
        lc = cfg["label_column"]
        if lc is not None:
            kwargs["label_column"] = int(lc) if str(lc).lstrip("-").isdigit() else lc
    return data.load(cfg["dataset"], **kwargs)


def task_defaults(loss: str | None, output_activation: str | None, num_classes: int):
    """``(loss, output_activation)`` for a classification task: binary (one 0/1 output) or
    multiclass (one-hot); what is given is kept, what is missing follows the loss's facts."""
    binary = num_classes == 2
    if loss is None:
        loss = "bce_with_logits" if binary else "softmax_cross_entropy"
    facts = get_loss(loss)
    if facts.categorical and binary:
        raise ValueError(f"{loss} needs one-hot targets but this dataset is binary "
                         "(one 0/1 output): use --loss bce_with_logits")
    if output_activation is None:
        if facts.from_logits:
            output_activation = "identity"
        elif facts.input_range == (0, 1) or binary:
            output_activation = "sigmoid"
        else:
            output_activation = "identity"
    return loss, output_activation


def build_model(cfg: dict, ds):
    """``(model, loss_name)`` for the config and the dataset's shapes; fills in cfg's loss and
    output activation when they were left to the task.

    With ``cfg["model"]`` (an architecture text) the network is that text, followed by the
    output activation the task calls for unless the text ends with an activation of its own;
    otherwise an MLP of ``cfg["hidden"]`` (images are flattened first)."""
    text = cfg.get("model")
    shape = ds.example_shape
    body = None
    if text:
        body = parse_model(text, shape)
        last = body.layers[-1]
        if last.name in ACTIVATIONS:  # the text names the output activation itself
            if cfg["output_activation"] not in (None, last.spec):
                raise ValueError(f"the architecture ends with {last.spec} but the output "
                                 f"activation is {cfg['output_activation']}: give it once")
            cfg["output_activation"] = last.spec
    cfg["loss"], cfg["output_activation"] = task_defaults(
        cfg["loss"], cfg["output_activation"], ds.num_classes)
    if body is None:
        model = mlp([shape if len(shape) > 1 else shape[0], *cfg["hidden"], ds.num_outputs],
                    cfg["activation"], cfg["output_activation"], init=cfg["init"])
    else:
        tail = [] if body.layers[-1].name in ACTIVATIONS \
            else [activation_layer(cfg["output_activation"])]
        model = serial(*body.layers, *tail, in_shape=shape)
        try:
            out = output_shape(model, shape)
        except ValueError as e:
            raise ValueError(f"architecture {text!r} on {ds.name} examples of shape {shape}: "
                             f"{e}") from None
        if out != (ds.num_outputs,):
            raise ValueError(f"architecture {text!r} gives outputs of shape {out} but "
                             f"{ds.name} needs {ds.num_outputs} per example: end it with "
                             f"dense({ds.num_outputs})")
    check_output_fits_loss(model, cfg["loss"])
    return model, cfg["loss"]


# --------------------------------------------------------------------------------------------
# A single run


class RunResult(NamedTuple):
    """What :func:`train_run` did: the ``metrics`` it wrote, the folder, and the
    :class:`~jaxprop.train.TrainingDiverged` error when the loss diverged (else ``None``)."""

    metrics: dict
    out: Path
    diverged: TrainingDiverged | None = None


def train_run(cfg: dict, saved=None, *, plots_on: bool = True, data_parallel: bool = False,
              on_record: Callable[[dict], None] | None = None) -> RunResult:
    """Train the run ``cfg`` describes (continuing the checkpoint ``saved`` when given) and
    write its folder ``cfg["out"]``.

    Args:
      cfg: the run's config (module docstring).
      saved: a loaded :class:`~jaxprop.checkpoint.Checkpoint` to resume, or ``None``.
      plots_on: write the PNG plots.
      data_parallel: shard the training set over every local device.
      on_record: called with each logged record (epoch, losses, accuracies, time).

    Returns:
      a :class:`RunResult`.
    """
    ds = load_dataset(cfg)
    model, loss = build_model(cfg, ds)
    if data_parallel:  # before anything on disk changes: the batch must split evenly
        from jaxprop.scale.parallel import check_data_parallel, data_parallel_inputs

        check_data_parallel(len(ds.x_train))
    optimizer = get_optimizer(cfg["optimizer"], cfg["lr"])
    # a model that couples its batch (BatchNorm) refuses padded minibatches: before any file
    make_epoch_fn(model, loss, optimizer, len(ds.x_train), cfg["batch_size"], cfg["drop_last"])
    out = Path(cfg["out"])
    out.mkdir(parents=True, exist_ok=True)
    state = init_state(model, optimizer, jax.random.key(cfg["seed"]))
    prev_losses = np.zeros(0)
    if saved is not None:
        state = saved.restore(state)
        if (out / "losses.npy").exists():
            prev_losses = np.load(out / "losses.npy", allow_pickle=False)
        prev_losses = prev_losses[: saved.epoch]
    elif (out / "history.jsonl").exists():
        (out / "history.jsonl").unlink()  # a fresh run replaces an old one in the same folder
    if data_parallel:
        state, ds = data_parallel_inputs(state, ds)
    config = dict(cfg)
    history_file = open(out / "history.jsonl", "a")

    def on_chunk(st, record):
        ckpt.save(out, st, config)
        history_file.write(json.dumps(record) + "\n")
        history_file.flush()
        if on_record is not None:
            on_record(record)

    t0 = time.perf_counter()
    status, diverged = "finished", None
    try:
        state, history = fit_state(
            model, loss, optimizer, ds, epochs=cfg["epochs"], batch_size=cfg["batch_size"],
            state=state, log_every=cfg["log_every"], callback=on_chunk,
            drop_last=cfg["drop_last"], precision=cfg.get("precision", "f32"))
    except TrainingDiverged as e:
        status, diverged, history = "diverged", e, e.history
        ckpt.save(out, e.state, config)  # the last good state (already on disk, or the start)
        state = e.state
    finally:
        history_file.close()
    wall = time.perf_counter() - t0
    if saved is None and status == "finished" and not history.records:
        ckpt.save(out, state, config)

    losses = np.concatenate([prev_losses, history.losses])
    np.save(out / "losses.npy", losses)
    last = history.records[-1] if history.records else None
    if status == "finished" and last is not None and "test_loss" in last:
        final = {k: last[k] for k in ("train_loss", "train_accuracy", "test_loss",
                                      "test_accuracy")}
    else:
        final = final_metrics(model, loss, state, ds, cfg.get("precision", "f32"))
    metrics = {
        "status": status, "config": config, "epoch": int(state.epoch), **final,
        "wall_time": wall, "compile_time": history.compile_time,
        "device": device_name(), "resumed_from": saved.epoch if saved is not None else None,
    }
    if diverged is not None:
        metrics["diverged_at_epoch"] = diverged.epoch
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    if plots_on:
        run_plots(out, model, loss, state, ds, losses, history.records)
    return RunResult(metrics, out, diverged)


def final_metrics(model, loss, state, ds, precision=None) -> dict:
    """Train and test loss and accuracy of ``state`` on ``ds`` (evaluation mode, computed as
    under ``precision``)."""
    evaluate = jax.jit(make_eval_fn(model, loss, precision=precision))
    out = {}
    for split, x, t in (("train", ds.x_train, ds.y_train), ("test", ds.x_test, ds.y_test)):
        value, acc = evaluate(state.params, x, t, state.model_state)
        out[f"{split}_loss"], out[f"{split}_accuracy"] = float(value), float(acc)
    return out


def device_name() -> str:
    """``"cpu: cpu (x1)"``: the platform, kind and count of the default devices."""
    d = jax.devices()[0]
    return f"{d.platform}: {d.device_kind} (x{jax.device_count()})"


def run_plots(out: Path, model, loss: str | Loss, state, ds, losses, records) -> None:
    """``loss_curve.png``, and ``decision_boundary.png`` for 2-D inputs."""
    from jaxprop import plots  # matplotlib loads only when a plot is drawn (0.3 s)

    loss = get_loss(loss)
    plots.loss_curve(losses, out / "loss_curve.png", records=records,
                     title=f"{ds.name}: training loss ({loss.name})")
    if ds.x_train.ndim == 2 and ds.x_train.shape[-1] == 2:
        apply = jax.jit(lambda p, s, g: model.apply(p, g, s))
        threshold = 0.0 if loss.from_logits else 0.5

        def classes(y):
            y = np.asarray(y)
            return (y[:, 0] > threshold).astype(int) if y.shape[-1] == 1 else y.argmax(-1)

        plots.decision_boundary(
            lambda g: classes(apply(state.params, state.model_state, g)), ds.x_train,
            decode_targets(ds.y_train), out / "decision_boundary.png", x_test=ds.x_test,
            labels_test=decode_targets(ds.y_test), title=f"{ds.name}: decision boundary")


# --------------------------------------------------------------------------------------------
# A population


def population_run(cfg: dict, *, population: int = 1, lrs, plots_on: bool = True) -> dict:
    """Train ``population`` networks per learning rate in ``lrs`` and write the run to
    ``cfg["out"]``; returns the metrics.

    Members are the grid ``lrs x seeds``, seeds ``seed, seed + 1, ..., seed + population - 1``
    (member with seed ``s`` starts exactly like ``jaxprop train --seed s``), all in one
    compiled call, on the training split. Writes ``metrics.json`` with ``"population":
    [{"seed", "lr", "final_loss", "accuracy"}, ...]`` (plus ``"solved"`` for the XOR dataset)
    and ``population_losses.png``.
    """
    if not isinstance(population, (int, np.integer)) or isinstance(population, bool) \
            or population < 1:
        raise ValueError(f"--population must be a positive integer; got {population}")
    alias = optimizer_alias(cfg["optimizer"])
    ds = load_dataset(cfg)
    model, loss = build_model(cfg, ds)
    lrs = [float(lr) for lr in lrs]
    seeds = np.tile(cfg["seed"] + np.arange(population), len(lrs))
    member_lrs = np.repeat(lrs, population)
    out = Path(cfg["out"])
    out.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    res = fit_population(model, loss, alias, (ds.x_train, ds.y_train), seeds=seeds,
                         lrs=member_lrs, epochs=cfg["epochs"], batch_size=cfg["batch_size"],
                         drop_last=cfg["drop_last"], precision=cfg.get("precision", "f32"))
    wall = time.perf_counter() - t0
    finite = res.final_loss[np.isfinite(res.final_loss)]
    metrics = {
        "status": "finished",
        "config": {**cfg, "population": population, "lr_sweep": lrs},
        "epoch": cfg["epochs"],
        "members": len(seeds),
        "diverged": int(len(seeds) - finite.size),
        "median_final_loss": float(np.median(finite)) if finite.size else None,
        "wall_time": wall,
        "device": f"{jax.devices()[0].platform} (x{jax.device_count()})",
    }
    if ds.name == "xor":
        metrics["solved"] = int(res.solved.sum())
        metrics["solved_by_lr"] = {str(lr): int(res.solved[member_lrs == lr].sum()) for lr in lrs}
    metrics["population"] = population_records(res)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, allow_nan=False) + "\n")
    if plots_on:
        from jaxprop import plots

        plots.population_histogram(
            res, out / "population_losses.png",
            title=f"{ds.name}: {len(seeds)} networks"
            + (f", {metrics['solved']} solved" if "solved" in metrics else ""))
    return metrics


def population_records(result: PopulationResult) -> list[dict]:
    """``[{"seed", "lr", "final_loss", "accuracy"}, ...]`` for JSON (NaN/Inf become ``None``)."""

    def num(v):
        v = float(v)
        return v if np.isfinite(v) else None

    seeds = result.seeds if result.seeds is not None else [None] * len(result.final_loss)
    lrs = result.lrs if result.lrs is not None else [None] * len(result.final_loss)
    return [
        {"seed": None if s is None else int(s), "lr": None if lr is None else float(lr),
         "final_loss": num(f), "accuracy": num(a)}
        for s, lr, f, a in zip(seeds, lrs, result.final_loss, result.accuracy)
    ]
