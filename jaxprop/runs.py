"""Run folders: train from a config and write everything a run leaves behind, truthfully.

A config is a plain dict (what ``jaxprop train`` resolves from its arguments and saves in every
checkpoint, so ``--resume`` rebuilds the same run)::

    {"dataset", "data_dir", "csv", "label_column", "task", "seed", "hidden", "activation",
     "output_activation", "loss", "init", "optimizer", "lr", "epochs", "batch_size",
     "drop_last", "log_every", "out", "precision", "model", "lr_schedule", "warmup_epochs",
     "lr_decay", "weight_decay", "early_stopping", "validation_fraction"}

A sequence dataset (``text``, ``reverse``, ``sort``) adds ``"text"`` (the UTF-8 file of
``text``, ``None``: the default corpus), ``"context"`` (tokens per example) and ``"blocks"``,
``"features"``, ``"heads"`` (the GPT :func:`~jaxprop.core.sequence.gpt` trained when
``model`` is ``None``); its metrics add ``unigram_loss`` (the entropy of the training set's
token frequencies, the loss of the best model that ignores context) and the perplexities
(``exp`` of the losses; every record too).

(``precision``: ``f32``, ``bf16`` or ``highest``, see :mod:`jaxprop.train.precision`; a config
saved without it trains in ``f32``. ``model`` is a textual architecture
(``"conv(16,3)-relu-maxpool(2)-flatten-dense(10)"``, see :mod:`jaxprop.core.spec`) or ``None``
for the MLP that ``hidden`` and ``activation`` describe. ``lr_schedule`` names a schedule of
:data:`~jaxprop.train.optimizers.SCHEDULES` spanning the run's ``epochs``, with
``warmup_epochs`` and ``lr_decay`` (its final fraction, ``None``: the schedule's default);
``weight_decay``: see :func:`~jaxprop.train.optimizers.make_optimizer` (``None``: the
optimizer's own); ``early_stopping``: a patience in epochs or ``None``;
``validation_fraction``: the share of the training set held out as the validation split
(:func:`~jaxprop.data.validation_split`, seeded by ``seed``) or ``None``. A config saved
without these keys trains as before: constant rate, none of the rest.)

:func:`train_run` writes to ``cfg["out"]``: ``checkpoint.npz`` (saved atomically at the start
and after every logged epoch, with the training loss of every epoch so far and the logged records, so the
folder can always be rebuilt from it), ``history.jsonl`` (one line per logged epoch),
``history.csv`` (the same records as a table, see :mod:`jaxprop.logs`),
``losses.npy`` (every epoch's training loss, from epoch 1, across resumes), ``metrics.json``
(``"status"``: ``running`` while training, then ``finished``, ``diverged`` or ``interrupted``;
with early stopping ``stopped_early``, ``best_epoch`` and ``last_epoch``; config, final losses and accuracy, or RMSE and R² for a regression, wall time, compile time,
device), ``model.npz`` (what ``jaxprop predict`` needs: the model, the class names, the input
columns and the standardisation, see :func:`jaxprop.predict.save_predictor`; with early
stopping, the best epoch's params), ``best.npz`` (with early stopping: the checkpoint of the
best epoch so far), ``loss_curve.png`` and, for 2-D inputs, ``decision_boundary.png`` (a
regression: ``predicted_vs_actual.png``); with ``tensorboard``, TensorBoard event files in
``tensorboard/`` (:class:`jaxprop.logs.TensorBoardLogger`; a fresh run deletes those of the run
it replaces, a resumed one adds its own). :func:`population_run` writes ``metrics.json`` with one
record per member and ``population_losses.png``.

**Folder rules.** A process writes a folder only while holding its lock (``.lock``, naming its
PID; the kernel releases it when the process dies, so a lock left by a killed run is taken
over). A new run refuses a folder that holds a run unless told to replace it (``force``); a
resumed run refuses a folder whose files belong to another run. Temporary files that a killed
save left behind are deleted when the next run takes the lock. With ``jax.distributed``, only
process 0 writes. Nothing here prints; the CLI reports progress through callbacks.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import hashlib
import json
import os
import stat
import time
from pathlib import Path
from typing import Callable, NamedTuple

import jax
import numpy as np

from jaxprop import checkpoint as ckpt
from jaxprop import logs
from jaxprop.core.checks import check_output_fits_loss, output_shape
from jaxprop.core.layers import Layer
from jaxprop.core.layers import activation as activation_layer
from jaxprop.core.losses import Loss, get_loss
from jaxprop.core.network import mlp, output_for_loss, serial
from jaxprop.core.spec import parse_model
from jaxprop.core.validate import is_int
from jaxprop.train.memory import check_training_fits
from jaxprop.data import DATASETS, SEQUENCE_DATASETS, validation_split
from jaxprop.data.text import SEQUENCE, unigram_entropy
from jaxprop.data.preprocessing import decode_targets
from jaxprop.predict import PREDICTOR, save_predictor
from jaxprop.scale.population import PopulationResult, check_population_memory, fit_population
from jaxprop.train.fit import (
    TrainingDiverged,
    TrainingInterrupted,
    fit_state,
    host_array,
    to_host,
)
from jaxprop.train.early_stopping import Best
from jaxprop.train.optimizers import (  # get_optimizer: the plain optimizer, for callers
    get_optimizer,
    get_schedule,
    make_optimizer,
    make_schedule,
    optimizer_alias,
)
from jaxprop.train.step import (
    init_state,
    key_from_seed,
    make_epoch_fn,
    make_eval_fn,
    steps_per_epoch,
)

# Options that define the run; on --resume they come from the checkpoint.
MODEL_KEYS = ("dataset", "data_dir", "csv", "label_column", "task", "seed", "hidden",
              "activation", "output_activation", "loss", "optimizer", "lr", "batch_size", "init",
              "precision", "model", "lr_schedule", "warmup_epochs", "lr_decay", "weight_decay",
              "early_stopping", "validation_fraction", "text", "context", "blocks", "features",
              "heads")
# Every key a jaxprop train config holds, and the types --resume accepts from a checkpoint
# (OPTIONAL_CONFIG_TYPES: keys that configs saved by earlier versions lack).
CONFIG_TYPES = {
    "dataset": str, "data_dir": (str, type(None)), "csv": (str, type(None)),
    "label_column": (str, int, type(None)), "seed": int, "hidden": (list, type(None)),
    "activation": (str, list, type(None)), "output_activation": (str, type(None)), "loss": (str, type(None)),
    "init": (str, type(None)), "optimizer": str, "lr": (int, float), "epochs": int,
    "batch_size": (int, type(None)), "drop_last": bool, "log_every": int, "out": str,
}
OPTIONAL_CONFIG_TYPES = {
    "task": (str, type(None)), "precision": str, "model": (str, type(None)),
    "lr_schedule": str, "warmup_epochs": int, "lr_decay": (int, float, type(None)),
    "weight_decay": (int, float, type(None)), "early_stopping": (int, type(None)),
    "validation_fraction": (float, type(None)), "text": (str, type(None)),
    "context": (int, type(None)), "blocks": (int, type(None)), "features": (int, type(None)),
    "heads": (int, type(None)), "layer_modules": dict,
}
# What a config saved without them means (runs before these options).
TRAINING_DEFAULTS = {"lr_schedule": "constant", "warmup_epochs": 0, "lr_decay": None,
                     "weight_decay": None, "early_stopping": None, "validation_fraction": None}

# Every file a run or a population writes (a fresh run clears them, so nothing is spliced).
RUN_FILES = ("checkpoint.npz", "metrics.json", "history.jsonl", "history.csv", "losses.npy",
             "model.npz", "best.npz", "loss_curve.png", "decision_boundary.png",
             "population_losses.png", "predicted_vs_actual.png")
# The folder of a run's TensorBoard event files (a fresh run deletes the event files in it).
TENSORBOARD_DIR = "tensorboard"
LOCK_NAME = ".lock"


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
    if cfg["dataset"] in SEQUENCE_DATASETS:
        kwargs["context"] = cfg.get("context")
        if cfg["dataset"] == "text":
            kwargs["path"] = cfg.get("text")
    if cfg["dataset"] == "csv":
        kwargs["path"] = cfg["csv"]
        kwargs["task"] = cfg.get("task") or "classification"
        lc = cfg["label_column"]
        if lc is not None:
            kwargs["label_column"] = int(lc) if str(lc).lstrip("-").isdigit() else lc
    return data.load(cfg["dataset"], **kwargs)


def task_defaults(loss: str | None, output_activation: str | None, num_classes: int):
    """``(loss, output_activation)`` for the task: a regression (``num_classes == 0``: one
    real output, ``mse``), binary (one 0/1 output) or multiclass (one-hot); what is given is
    kept, what is missing follows the loss's facts."""
    if num_classes == 0:
        loss = loss or "mse"
        facts = get_loss(loss)
        if facts.from_logits or facts.categorical or facts.integer_labels or facts.input_range:
            raise ValueError(f"--loss {loss} is a classification loss; a regression takes mse "
                             "or sse_half")
        return loss, output_activation or "identity"
    binary = num_classes == 2
    if loss is None:
        loss = "bce_with_logits" if binary else "softmax_cross_entropy"
    facts = get_loss(loss)
    if facts.categorical and binary:
        raise ValueError(f"{loss} needs one-hot targets but this dataset is binary "
                         "(one 0/1 output): use --loss bce_with_logits")
    if output_activation is None:  # a binary task's one output is a probability, unless a logit
        output_activation = "sigmoid" if binary and not facts.from_logits \
            else output_for_loss(facts)
    return loss, output_activation


def build_model(cfg: dict, ds):
    """``(model, loss, output_activation)`` for the config and the dataset's shapes: the loss
    and output activation the model was built with, those of ``cfg`` or, where it leaves them
    out, those the task calls for (``cfg`` itself is left as it is).

    With ``cfg["model"]`` (an architecture text) the network is that text, followed by the
    output activation the task calls for unless the text ends with an activation of its own;
    otherwise an MLP of ``cfg["hidden"]`` (images are flattened first)."""
    if getattr(ds, "task", None) == SEQUENCE:
        return _sequence_model(cfg, ds)
    text, shape, out_act = cfg.get("model"), ds.example_shape, cfg["output_activation"]
    body = parse_model(text, shape) if text else None
    ends_with_activation = body is not None and body.layers[-1].is_activation
    if ends_with_activation:  # the text names the output activation itself
        last = body.layers[-1]
        if out_act not in (None, last.spec):
            raise ValueError(f"the architecture ends with {last.spec} but the output "
                             f"activation is {out_act}: give it once")
        out_act = last.spec
    loss, out_act = task_defaults(cfg["loss"], out_act, ds.num_classes)
    width = ds.num_classes if get_loss(loss).integer_labels else ds.num_outputs
    if body is None:
        model = mlp([shape if len(shape) > 1 else shape[0], *cfg["hidden"], width],
                    cfg["activation"], out_act, init=cfg["init"])
    else:
        tail = [] if ends_with_activation else [activation_layer(out_act)]
        model = serial(*body.layers, *tail, in_shape=shape)
        try:
            out = output_shape(model, shape)
        except ValueError as e:
            raise ValueError(f"architecture {text!r} on {ds.name} examples of shape {shape}: "
                             f"{e}") from None
        if out != (width,):
            raise ValueError(f"architecture {text!r} gives outputs of shape {out} but "
                             f"{ds.name} needs {width} per example: "
                             f"{_output_advice(text, out, width)}")
    check_output_fits_loss(model, loss)
    return model, loss, out_act


# The GPT a sequence dataset trains when the config names no architecture:
# (blocks, features, heads) per dataset.
GPT_SIZES = {"text": (4, 128, 4), "reverse": (2, 64, 4), "sort": (2, 64, 4)}


def gpt_sizes(cfg: dict) -> tuple[int, int, int]:
    """``(blocks, features, heads)`` of the config's GPT: its own, else the dataset's."""
    default = GPT_SIZES.get(cfg["dataset"], GPT_SIZES["text"])
    return tuple(default[i] if cfg.get(key) is None else cfg[key]
                 for i, key in enumerate(("blocks", "features", "heads")))


def _sequence_model(cfg: dict, ds):
    """``(model, loss, "identity")`` for a sequence dataset: ``cfg["model"]`` (an architecture
    text on token ids) or :func:`~jaxprop.core.sequence.gpt` of :func:`gpt_sizes`, giving
    logits ``(context, vocabulary)`` per example; the loss on integer labels
    (``sparse_softmax_cross_entropy`` unless given)."""
    from jaxprop.core.sequence import gpt

    loss = cfg["loss"] or "sparse_softmax_cross_entropy"
    if not get_loss(loss).integer_labels:
        raise ValueError(f"--loss {loss} does not take integer labels; {ds.name} predicts "
                         "the next token: use sparse_softmax_cross_entropy")
    if cfg["output_activation"] not in (None, "identity"):
        raise ValueError(f"--output-activation {cfg['output_activation']}: a sequence model "
                         "gives logits (identity)")
    shape, want = ds.example_shape, (*ds.example_shape, ds.num_classes)
    text = cfg.get("model")
    if text:
        model = parse_model(text, shape)
    else:
        blocks, features, heads = gpt_sizes(cfg)
        model = gpt(ds.num_classes, blocks=blocks, features=features, heads=heads,
                    context=shape[0])
    try:
        out = output_shape(model, shape)
    except ValueError as e:
        raise ValueError(f"architecture {text!r} on {ds.name} tokens of shape {shape}: "
                         f"{e}") from None
    if out != want:
        raise ValueError(f"the model gives outputs of shape {out} per example but {ds.name} "
                         f"needs logits {want} (context, vocabulary): end it with "
                         f"dense({ds.num_classes})")
    check_output_fits_loss(model, loss)
    return model, loss, "identity"


def _output_advice(text: str, out: tuple, width: int) -> str:
    """How to mend architecture ``text`` whose per-example output has shape ``out`` where the
    task needs ``(width,)``: more than one axis per example needs a flatten before the first
    dense (or before the output, when the text has no dense)."""
    if len(out) <= 1:
        return f"end it with dense({width})"
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text + "-"):  # the top level only, not inside residual(...)
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "-" and depth == 0:
            parts, start = [*parts, text[start:i]], i + 1
    first = next((i for i, part in enumerate(parts) if part.startswith("dense")), None)
    if first is None:
        return f"end it with flatten-dense({width})"
    fixed = [*parts[:first], "flatten", *parts[first:]]
    fixed += [] if fixed[-1] == f"dense({width})" else [f"dense({width})"]
    fixed = "-".join(fixed)
    return f"put flatten before the first dense, e.g. {fixed}"


def training_data(ds, loss: str | Loss):
    """``ds`` with the targets ``loss`` takes: class indices for a loss on integer labels (a
    sequence dataset's targets already are)."""
    if not get_loss(loss).integer_labels or ds.task == SEQUENCE:
        return ds
    return ds._replace(y_train=decode_targets(ds.y_train), y_test=decode_targets(ds.y_test),
                       y_val=None if ds.y_val is None else decode_targets(ds.y_val))


# --------------------------------------------------------------------------------------------
# The folder: lock, hygiene, atomic writes


class RunLock:
    """The lock on a run folder: ``DIR/.lock`` holding the holder's PID.

    ``fcntl.flock`` on the file (where the platform has it), so a lock left by a process that
    died is free again; the PID is only for messages. Use as a context manager.
    """

    def __init__(self, folder: str | os.PathLike):
        self.path = Path(folder) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        try:
            import fcntl
        except ImportError:  # no flock (Windows): a PID file, taken over when its PID is gone
            return self._acquire_pid_file()
        while True:
            fd = _open_lock_file(self.path, os.O_RDWR | os.O_CREAT)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = _read_pid(fd)
                os.close(fd)
                raise ValueError(f"{self.path.parent} is in use by another jaxprop run (PID "
                                 f"{holder or '?'}, lock file {self.path}); wait for it or use "
                                 "another --out") from None
            try:  # the file we locked must still be the lock file (not one just released)
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def _acquire_pid_file(self) -> "RunLock":
        try:
            fd = _open_lock_file(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL)
        except FileExistsError:
            holder = self.path.read_text().strip()
            if holder.isdigit() and _pid_alive(int(holder)):
                raise ValueError(f"{self.path.parent} is in use by another jaxprop run (PID "
                                 f"{holder}); wait for it or use another --out") from None
            self.path.unlink(missing_ok=True)  # a stale lock of a process that is gone
            return self._acquire_pid_file()
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self._fd)  # closing releases the flock
            self._fd = None

    def __enter__(self):
        return self if self._fd is not None else self.acquire()

    def __exit__(self, *exc):
        self.release()


def _open_lock_file(path: Path, flags: int) -> int:
    """``os.open`` of a lock file that never follows a symbolic link (a link planted there
    would have its target truncated) and is a regular file; ``ValueError`` otherwise."""
    nofollow = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags | nofollow, 0o644)
    except OSError as e:
        if e.errno != errno.ELOOP:  # (FileExistsError, a folder that went, ...)
            raise
        raise ValueError(f"{path} is a symbolic link; a run's lock file must be a plain file "
                         "(remove it if no run is using the folder)") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ValueError(f"{path} is not a plain file; a run's lock file must be one (remove "
                         "it if no run is using the folder)")
    return fd


def _read_pid(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        return os.read(fd, 32).decode(errors="replace").strip()
    except OSError:
        return ""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _write_json(path: Path, obj) -> None:
    ckpt.write_atomic(path, (json.dumps(obj, indent=2, allow_nan=False) + "\n").encode())


def _write_losses(path: Path, losses) -> None:
    import io

    buf = io.BytesIO()
    np.save(buf, np.asarray(losses), allow_pickle=False)
    ckpt.write_atomic(path, buf.getvalue())


def holds_run(folder: Path) -> str | None:
    """What run ``folder`` holds, in words (``None`` when it holds none)."""
    if (folder / ckpt.FILENAME).exists():
        try:
            return f"a checkpoint at epoch {ckpt.load(folder).epoch}"
        except ValueError:
            return "a checkpoint (unreadable)"
    if (folder / "metrics.json").exists():
        return "the results of a run (metrics.json, no checkpoint: a population?)"
    return None


def open_folder(out, *, fresh: bool, force: bool = False) -> RunLock:
    """Lock ``out`` (created if needed), delete stale temporaries and, for a ``fresh`` run,
    refuse a folder that holds a run unless ``force`` (then clear its run files)."""
    if not str(out).strip():
        raise ValueError("the output folder is an empty name; give --out DIR")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder")
    out.mkdir(parents=True, exist_ok=True)
    lock = RunLock(out).acquire()
    try:
        ckpt.remove_stale_temporaries(out, RUN_FILES)
        if fresh:
            held = holds_run(out)
            if held and not force:
                resume = f"continue it with --resume {out}, or " if (
                    out / ckpt.FILENAME).exists() else ""
                raise ValueError(f"{out} already holds {held}; {resume}replace it with --force "
                                 "(or give another --out)")
            for name in RUN_FILES:
                (out / name).unlink(missing_ok=True)
            logs.remove_events(out / TENSORBOARD_DIR)
    except BaseException:
        lock.release()
        raise
    return lock


def check_saved_config(cfg: dict, path) -> None:
    """Raise ``ValueError`` unless ``cfg`` (from a checkpoint) is a ``jaxprop train`` config
    with the types it writes: a checkpoint of the Python API holds none, an edited one may
    hold anything."""
    if not cfg:
        raise ValueError(f"{path} holds no jaxprop train config (it was saved from the Python "
                         "API?); --resume continues runs of jaxprop train only: load it with "
                         "jaxprop.checkpoint.load and train with fit_state(state=...)")
    def fits(value, types):
        types = types if isinstance(types, tuple) else (types,)
        return isinstance(value, types) and (bool in types or not isinstance(value, bool))

    for key, types in {**CONFIG_TYPES, **OPTIONAL_CONFIG_TYPES}.items():
        if key in OPTIONAL_CONFIG_TYPES and key not in cfg:
            continue
        value = cfg.get(key)
        bad = key not in cfg or not fits(value, types)
        if key == "hidden" and not bad and value is not None:
            bad = not all(fits(h, int) for h in value)
        if key == "layer_modules" and not bad:  # {layer name: the module registering it}
            bad = not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())
        if bad:
            raise ValueError(f"{path}: the saved config's {key!r} is "
                             f"{'missing' if key not in cfg else repr(value)[:60]}, not what "
                             "jaxprop train writes (an edited header?); --resume refused")
    if cfg["dataset"] not in DATASETS or cfg.get("task") not in (None, "classification",
                                                                  "regression"):
        raise ValueError(f"{path}: the saved config names an unknown dataset or task "
                         f"({cfg['dataset']!r}, {cfg.get('task')!r}; an edited header?)")


def check_resume_folder(out: Path, saved) -> None:
    """Refuse to resume ``saved`` into ``out`` when ``out``'s files belong to another run."""
    metrics = out / "metrics.json"
    if metrics.exists():
        try:
            config = json.loads(metrics.read_text()).get("config") or {}
        except (ValueError, AttributeError):
            config = {}
        differ = [k for k in MODEL_KEYS if k in config and config.get(k) != saved.config.get(k)]
        if differ:
            raise ValueError(
                f"{saved.path} is not the run whose results are in {out} (their configs differ "
                f"in {', '.join(differ)}); resume into its own folder, or give --out NEW")
    if (out / ckpt.FILENAME).exists() and Path(saved.path).resolve() != (
            out / ckpt.FILENAME).resolve():
        raise ValueError(f"{out} already holds another checkpoint; resume into its own "
                         f"folder, or give another --out")


# --------------------------------------------------------------------------------------------
# A single run


class RunResult(NamedTuple):
    """What :func:`train_run` did: the ``metrics`` it wrote, the folder, the
    :class:`~jaxprop.train.TrainingDiverged` error when the loss diverged, whether it was
    ``interrupted`` and, when writing the plots failed (a full disk), why."""

    metrics: dict
    out: Path
    diverged: TrainingDiverged | None = None
    interrupted: bool = False
    plot_error: str | None = None


class PeerLost(RuntimeError):
    """A process of a multi-process run was lost mid-run (a collective failed): the folder
    says ``interrupted`` at the last finished epoch, which ``--resume`` with every process
    continues."""


def _first_line(error: BaseException) -> str:
    return str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__


class RunWriteError(OSError):
    """Writing the run folder failed (a full disk); the message says what is intact."""


def train_run(cfg: dict, saved=None, *, plots_on: bool = True, data_parallel: bool = False,
              on_record: Callable[[dict], None] | None = None,
              should_stop: Callable[[], bool] | None = None, force: bool = False,
              tensorboard: bool = False) -> RunResult:
    """Train the run ``cfg`` describes (continuing the checkpoint ``saved`` when given) and
    write its folder ``cfg["out"]``.

    Args:
      cfg: the run's config (module docstring).
      saved: a loaded :class:`~jaxprop.checkpoint.Checkpoint` to resume, or ``None``.
      plots_on: write the PNG plots.
      data_parallel: split the training set over every device (of every process, under
        ``jax.distributed``; only process 0 writes the folder).
      on_record: called with each logged record (epoch, losses, accuracies, time).
      should_stop: polled during training; when true, the run stops at once, keeps the last
        finished epoch and says ``"status": "interrupted"``.
      force: replace a run already in the folder (a fresh run refuses one otherwise).
      tensorboard: also write TensorBoard event files to ``tensorboard/`` in the folder (a
        ``ValueError`` before anything else when tensorboardX is not installed).

    Returns:
      a :class:`RunResult`.
    """
    if tensorboard:
        logs.summary_writer_class()  # not installed: say so before anything is loaded or made
    cfg = {**cfg, **{key: cfg.get(key, default) for key, default in TRAINING_DEFAULTS.items()}}
    if saved is not None:
        check_resumable(cfg, saved)
    check_same_config(cfg)
    ds = load_dataset(cfg)
    model, loss, output_activation = build_model(cfg, ds)
    cfg = {**cfg, "loss": loss, "output_activation": output_activation}
    ds = training_data(held_out(ds, cfg), loss)
    rate = run_schedule(cfg, len(ds.x_train))
    optimizer = make_optimizer(cfg["optimizer"], rate, weight_decay=cfg["weight_decay"])
    # a model that couples its batch (BatchNorm) refuses padded minibatches: before any file
    make_epoch_fn(model, loss, optimizer, len(ds.x_train), cfg["batch_size"], cfg["drop_last"])
    # a model too large for this machine is refused before anything is allocated or written
    n_test = len(ds.x_test) if ds.x_test is not None else 0
    check_training_fits(model, optimizer, ds.x_train.shape[1:], len(ds.x_train),
                        cfg["batch_size"], max(len(ds.x_train), n_test), dtype=ds.x_train.dtype)
    run = _Run(cfg, saved, model, loss, optimizer, ds, plots_on, data_parallel, on_record,
               should_stop, rate)
    state, files = _starting_point(run, tensorboard)
    if should_stop is not None and should_stop():  # asked to stop before anything is written
        raise KeyboardInterrupt
    with _locked_folder(files, saved, force):
        return _train_in_folder(run, state, files)


def check_same_config(cfg: dict) -> None:
    """In a multi-process run, ``ValueError`` in every process unless all were started with
    the same config (``out`` apart: only process 0 writes), naming the settings that differ;
    nothing in a single process. (A mismatch otherwise trains different programs that hang
    in their collectives, or silently mixes two runs.)"""
    if jax.process_count() == 1:
        return
    from jax.experimental import multihost_utils

    keys = sorted(k for k in cfg if k != "out")
    digests = np.array([int.from_bytes(hashlib.sha256(json.dumps(
        [k, cfg[k]], sort_keys=True, default=str).encode()).digest()[:4], "little")
        for k in keys] + [len(keys)], np.uint32)
    every = np.asarray(multihost_utils.process_allgather(digests))
    if every.ndim != 2 or every.shape[1] != len(digests):
        raise ValueError("the processes of this run were started with different settings")
    differ = [k for i, k in enumerate(keys) if len(set(every[:, i].tolist())) > 1]
    if differ or len(set(every[:, -1].tolist())) > 1:
        raise ValueError(
            f"the processes of this run were started with different settings "
            f"({', '.join(differ) or 'the set of options'}); start every process with the same "
            "options (only --process-id, and --out, which only process 0 uses, may differ)")


def held_out(ds, cfg: dict):
    """``ds`` with the validation split ``cfg["validation_fraction"]`` asks for (seeded by
    ``cfg["seed"]``), or as it is."""
    fraction = cfg.get("validation_fraction")
    return ds if fraction is None else validation_split(ds, fraction, seed=cfg["seed"])


def run_schedule(cfg: dict, n_examples: int):
    """The run's learning rate: ``cfg["lr"]`` or the schedule ``cfg["lr_schedule"]`` over its
    ``epochs`` (:func:`~jaxprop.train.optimizers.make_schedule`), counted in steps of
    ``n_examples`` training examples."""
    steps = steps_per_epoch(n_examples, cfg["batch_size"], cfg["drop_last"])
    return make_schedule(cfg["lr_schedule"], cfg["lr"], warmup_steps=cfg["warmup_epochs"] * steps,
                         total_steps=cfg["epochs"] * steps, final_fraction=cfg["lr_decay"])


def stopped_early(saved) -> dict | None:
    """The record at which the run of checkpoint ``saved`` stopped early, or ``None``."""
    return next((r for r in saved.history or () if r.get("stopped_early")), None)


def check_resumable(cfg: dict, saved) -> None:
    """``ValueError`` when the checkpoint ``saved`` cannot continue as ``cfg`` asks: its run
    stopped early (it is finished), or ``cfg`` changes the epochs its decaying learning-rate
    schedule spans."""
    stop = stopped_early(saved)
    if stop is not None:
        raise ValueError(f"{saved.path}: the run stopped early at epoch {stop['epoch']} (best "
                         f"epoch {stop.get('best_epoch')}, whose params model.npz holds); it is "
                         "finished: start a new run to train further")
    span = saved.config.get("epochs")
    if cfg["epochs"] != span and get_schedule(cfg["lr_schedule"]).final is not None:
        raise ValueError(f"the {cfg['lr_schedule']} learning-rate schedule of {saved.path} "
                         f"spans its {span} epochs; --resume keeps it: leave --epochs at {span}")


class _Run(NamedTuple):
    """A single run as :func:`train_run` resolved it: what it trains and how it reports."""

    cfg: dict
    saved: object  # the Checkpoint resumed, or None
    model: Layer
    loss: str
    optimizer: object  # an optax GradientTransformation
    ds: object  # the Dataset, with the targets the loss takes
    plots_on: bool
    data_parallel: bool
    on_record: Callable[[dict], None] | None
    should_stop: Callable[[], bool] | None
    rate: object = None  # the learning rate: a number or an optax schedule (for the records)


def _starting_point(run: _Run, tensorboard: bool = False):
    """``(state, files)``: the state training starts from (fresh from ``cfg["seed"]``, or the
    checkpoint's) and the run's :class:`_RunFiles`, holding the history before it (and, with
    ``tensorboard``, how to make its logger)."""
    cfg, saved = run.cfg, run.saved
    state = init_state(run.model, run.optimizer, key_from_seed(cfg["seed"]))
    prev_losses, prev_records = np.zeros(0, np.float32), []
    best = None
    if saved is not None:
        template, state = state, saved.restore(state)
        prev_losses, prev_records = _saved_history(saved)
        best = _saved_best(cfg, saved, template, prev_records)
    writer = jax.process_index() == 0  # with jax.distributed, only process 0 writes
    logger = functools.partial(logs.TensorBoardLogger, model=run.model, loss=run.loss,
                               data=run.ds) if tensorboard else None
    return state, _RunFiles(Path(cfg["out"]), dict(cfg), saved, prev_losses, prev_records,
                            writer, logger, best)


def _saved_best(cfg: dict, saved, template, records) -> Best | None:
    """With early stopping, the best epoch before the checkpoint ``saved``: its ``best.npz``
    (next to it) and the loss its record monitored; ``None`` when there is none."""
    path = Path(saved.path).parent / "best.npz"
    if cfg["early_stopping"] is None or not path.exists():
        return None
    best = ckpt.load(path)
    monitor = "val_loss" if cfg["validation_fraction"] is not None else "test_loss"
    value = next((r.get(monitor) for r in records if r.get("epoch") == best.epoch), None)
    if value is None or best.epoch > saved.epoch:
        return None
    return Best(best.epoch, float(value), best.restore(template))


@contextlib.contextmanager
def _locked_folder(files: _RunFiles, saved, force: bool):
    """The run folder, locked (and checked for a resumed run) while the writer trains in it."""
    if not files.writer:
        yield
        return
    with open_folder(files.out, fresh=saved is None, force=force):
        if saved is not None:
            check_resume_folder(files.out, saved)
        yield


def _saved_history(saved):
    """``(losses, records)`` of the epochs before ``saved``: from the checkpoint itself, or
    (files from older versions) from the folder's ``losses.npy``/``history.jsonl``, with NaN
    for epochs no file remembers."""
    records = [r for r in (saved.history or []) if r.get("epoch", 0) <= saved.epoch]
    if saved.losses is not None:
        return np.asarray(saved.losses), records
    folder = Path(saved.path).parent
    losses = np.full(saved.epoch, np.nan, np.float32)
    try:
        old = np.load(folder / "losses.npy", allow_pickle=False)
        n = min(len(old), saved.epoch)
        losses[:n] = old[:n]
    except (OSError, ValueError):
        pass
    if not records and (folder / "history.jsonl").exists():
        for line in (folder / "history.jsonl").read_text().splitlines():
            try:
                r = json.loads(line)
            except ValueError:
                continue
            if isinstance(r, dict) and r.get("epoch", 0) <= saved.epoch:
                records.append(r)
    return losses, records


class _RunFiles:
    """The files of one run while it trains: every chunk's checkpoint (with the losses and
    records so far), ``losses.npy``, ``history.jsonl``, ``history.csv``, the ``running``
    status and, with a ``logger`` (``logdir -> fit callback``), the TensorBoard events. Only
    the writer (process 0) touches the disk."""

    def __init__(self, out: Path, config: dict, saved, losses, records, writer: bool,
                 logger: Callable | None = None, best: Best | None = None):
        self.out, self.config, self.saved, self.writer = out, config, saved, writer
        self.best = best  # with early stopping, the best epoch before the run resumed
        self.losses = [losses]  # fit_state appends each finished chunk's losses (losses_out)
        self.records = list(records)
        self._history = self._csv = None
        self._make_logger, self._logger = logger, None

    def start(self, state) -> None:
        """Before training: the starting state's checkpoint (so a run killed in its first
        chunk can be resumed), the history so far, and the ``running`` status."""
        if self.writer:
            self.save(state)
            ckpt.write_atomic(self.out / "history.jsonl",
                         "".join(json.dumps(r) + "\n" for r in self.records).encode())
            self._csv = logs.CsvHistory(self.out / "history.csv", self.records)
            self.status("running", int(np.asarray(state.epoch)))
            self._history = open(self.out / "history.jsonl", "a")
            if self._make_logger is not None:
                self._start_logger()

    def _start_logger(self) -> None:
        """The TensorBoard logger; into a folder without events (a resumed run's new
        ``--out``), the records so far first."""
        logdir = self.out / TENSORBOARD_DIR
        replay = not logs.has_events(logdir)
        self._logger = self._make_logger(logdir)
        for record in self.records if replay else ():
            self._logger.write_record(record)

    def status(self, status: str, epoch: int, **more) -> None:
        _write_json(self.out / "metrics.json", {
            "status": status, "config": self.config, "epoch": int(epoch), "pid": os.getpid(),
            "resumed_from": self.saved.epoch if self.saved is not None else None,
            "last_record": self.records[-1] if self.records else None, **more})

    def failed(self, error: BaseException, status: str | None = None) -> int:
        """An error ended training: ``metrics.json`` says ``status`` (default ``failed``;
        ``interrupted`` for a KeyboardInterrupt) at the last saved epoch, with the error, when
        it can be written. Returns that epoch."""
        if status is None:
            status = "interrupted" if isinstance(error, KeyboardInterrupt) else "failed"
        epoch = self.records[-1]["epoch"] if self.records else (
            self.saved.epoch if self.saved is not None else 0)
        if not self.writer:
            return epoch
        try:
            self.status(status, epoch, error=f"{type(error).__name__}: {error}"[:500])
        except (OSError, ValueError):
            pass  # the error that ended training is the one to report
        return epoch

    def all_losses(self) -> np.ndarray:
        return np.concatenate(self.losses)

    def save(self, state) -> None:
        """The checkpoint of ``state`` with every loss and record so far, and ``losses.npy``."""
        losses = self.all_losses()
        ckpt.save(self.out, to_host(state), self.config, losses=losses, history=self.records)
        _write_losses(self.out / "losses.npy", losses)

    def chunk(self, state, record) -> None:
        """After each finished chunk (``fit_state``'s callback)."""
        self.records.append(record)
        if not self.writer:
            return
        try:
            self.save(state)
            if record.get("best_epoch") == record["epoch"]:  # early stopping's new best
                ckpt.save(self.out / "best.npz", to_host(state), self.config)
            self._history.write(json.dumps(record) + "\n")
            self._history.flush()
            self._csv.append(record)
            self.status("running", record["epoch"])
        except OSError as e:
            raise _write_error(self.out, e, "checkpoint.npz") from None
        if self._logger is not None:
            self._logger(state, record)

    def close(self) -> None:
        for f in (self._history, self._csv, self._logger):
            if f is not None:
                f.close()


def _train_in_folder(run: _Run, state, files: _RunFiles) -> RunResult:
    """Train ``run`` from ``state``, ``files`` saving every chunk, then write its results."""
    try:
        files.start(state)
    except OSError as e:
        raise _write_error(files.out, e, "checkpoint.npz") from None
    try:
        outcome = _fit_run(run, state, files)
    except jax.errors.JaxRuntimeError as e:
        if jax.process_count() == 1:
            files.failed(e)
            raise
        # a collective failed: another process of the run is gone (killed, its host lost)
        epoch = files.failed(e, status="interrupted")
        raise PeerLost(f"lost a process of the multi-process run ({_first_line(e)}); the "
                       f"folder keeps epoch {epoch}: start every process again with --resume "
                       f"{files.out}") from None
    except BaseException as e:  # no folder says "running" for a process that has gone
        files.failed(e)
        raise
    metrics = _run_metrics(run, outcome, files)
    interrupted = outcome.status == "interrupted"
    if not files.writer:
        return RunResult(metrics, files.out, outcome.diverged, interrupted)
    plot_error = _write_results(run, outcome, files, metrics)
    return RunResult(metrics, files.out, outcome.diverged, interrupted, plot_error)


class _Outcome(NamedTuple):
    """How a run's training ended: ``status`` (``finished``, ``diverged`` or ``interrupted``),
    the :class:`~jaxprop.train.TrainingDiverged` error, the last state, its history and the
    wall time."""

    status: str
    diverged: TrainingDiverged | None
    state: object
    history: object
    wall: float


def _fit_run(run: _Run, state, files: _RunFiles) -> _Outcome:
    """``fit_state`` on the run, each chunk saved by ``files`` and reported to ``on_record``; a
    divergence or a stop ends it with that status instead of an error."""
    def on_chunk(st, record):
        if run.ds.task == SEQUENCE:
            record.update(perplexities(record))
        files.chunk(st, record)
        if run.on_record is not None:
            run.on_record(record)

    cfg, mesh = run.cfg, _data_mesh() if run.data_parallel else None
    status, diverged, t0 = "finished", None, time.perf_counter()
    try:
        state, history = fit_state(
            run.model, run.loss, run.optimizer, run.ds, epochs=cfg["epochs"],
            batch_size=cfg["batch_size"], state=state, log_every=cfg["log_every"],
            callback=on_chunk, drop_last=cfg["drop_last"], should_stop=run.should_stop,
            mesh=mesh, losses_out=files.losses, precision=cfg.get("precision", "f32"),
            early_stopping=cfg["early_stopping"], best=files.best, learning_rate=run.rate,
            progress=False)
    except TrainingDiverged as e:
        status, diverged, history, state = "diverged", e, e.history, e.state
    except TrainingInterrupted as e:
        status, history, state = "interrupted", e.history, e.state
    finally:
        files.close()
    return _Outcome(status, diverged, state, history, time.perf_counter() - t0)


def _data_mesh():
    """The mesh of every device for data parallel training (imported only when asked for)."""
    from jaxprop.scale.parallel import data_mesh

    return data_mesh()


def _run_metrics(run: _Run, outcome: _Outcome, files: _RunFiles) -> dict:
    """What ``metrics.json`` says of a single run that ended as ``outcome``."""
    metrics = {
        "status": outcome.status, "config": files.config,
        "epoch": int(np.asarray(outcome.state.epoch)), **_final(run, outcome, files.records),
        "wall_time": outcome.wall, "compile_time": outcome.history.compile_time,
        "device": device_name(), "processes": jax.process_count(),
        "resumed_from": run.saved.epoch if run.saved is not None else None,
    }
    if outcome.diverged is not None:
        metrics["diverged_at_epoch"] = outcome.diverged.epoch
    if run.ds.task == SEQUENCE:
        metrics.update(perplexities(metrics),
                       unigram_loss=unigram_entropy(run.ds.y_train, run.ds.num_classes))
    if run.cfg["early_stopping"] is not None:
        metrics.update(stopped_early=outcome.history.stopped_early,
                       best_epoch=outcome.history.best_epoch,
                       last_epoch=files.records[-1]["epoch"] if files.records else
                       metrics["epoch"])
    return metrics


def _final(run: _Run, outcome: _Outcome, records: list) -> dict:
    """The final losses and accuracies: a stopped run's last record (no new compilation), a
    finished classification's last record when it evaluated the final state, else
    :func:`final_metrics`."""
    last = records[-1] if records else {}
    if outcome.status == "interrupted":
        return {k: v for k, v in last.items() if k.startswith(("train_", "test_", "val_"))}
    epoch = int(np.asarray(outcome.state.epoch))  # early stopping: the best, not the last
    at = next((r for r in reversed(records) if r.get("epoch") == epoch), {})
    val = {k: v for k, v in at.items() if k.startswith("val_")}
    if (outcome.status == "finished" and run.ds.task != "regression"
            and all(k in at for k in FINAL_KEYS)):
        # a chunk evaluated this very state, with the same function, in evaluation mode
        return {**{k: at[k] for k in FINAL_KEYS}, **val}
    return {**final_metrics(run.model, run.loss, outcome.state, run.ds,
                            run.cfg.get("precision", "f32")), **val}


def _write_results(run: _Run, outcome: _Outcome, files: _RunFiles, metrics: dict) -> str | None:
    """``model.npz``, ``metrics.json`` and, unless stopped or turned off, the plots; returns
    why the plots could not be written, or ``None``."""
    out = files.out
    try:  # the checkpoint already holds the state: saved at the start or after its chunk
        save_predictor(out / PREDICTOR, run.model, outcome.state, run.ds, run.cfg)
        _write_json(out / "metrics.json", metrics)
    except OSError as e:
        raise _write_error(out, e, "the results") from None
    if not run.plots_on or outcome.status == "interrupted":
        return None
    return run_plots(out, run.model, run.loss, outcome.state, run.ds, files.all_losses(),
                     files.records, cfg=run.cfg)


def _write_error(out: Path, error: OSError, what: str) -> RunWriteError:
    try:
        epoch = ckpt.load(out).epoch
        intact = (f"the checkpoint of epoch {epoch} ({out / ckpt.FILENAME}, with every epoch's "
                  f"loss) is intact; free some space and continue with --resume {out}")
    except (OSError, ValueError):
        intact = "no checkpoint was saved"
    return RunWriteError(f"cannot write {what} in {out} ({error.strerror or error}); {intact}")


FINAL_KEYS = ("train_loss", "train_accuracy", "test_loss", "test_accuracy")


def perplexities(record: dict) -> dict:
    """``{"train_perplexity", ...}``: ``exp`` of each split's loss in ``record`` (a sequence
    model's loss is the mean cross-entropy per token, in nats); ``None`` where it overflows."""
    out = {}
    for split in ("train", "val", "test"):
        value = record.get(f"{split}_loss")
        if value is not None:
            out[f"{split}_perplexity"] = float(np.exp(value)) if value < 700 else None
    return out


def final_metrics(model, loss, state, ds, precision=None) -> dict:
    """Train and test loss and accuracy of ``state`` on ``ds``, in evaluation mode.

    For a regression: loss, RMSE and R² in the units of the data (undoing the target scaling).

    Args:
      model: the trained model.
      loss: a loss name or :class:`~jaxprop.Loss`.
      state: the :class:`~jaxprop.train.TrainState` (its params and model state are used).
      ds: the :class:`~jaxprop.data.Dataset`, with the targets ``loss`` takes.
      precision: the precision policy the classification figures are computed under (a name
        from ``PRECISIONS``, or ``None``); a regression's are computed without it.

    Returns:
      ``{"train_loss", "train_accuracy", "test_loss", "test_accuracy"}``; for a regression
      ``{"train_loss", "train_rmse", "train_r2", "test_loss", ...}`` (R² ``None`` for constant
      targets).
    """
    params = jax.tree.map(host_array, state.params)
    model_state = jax.tree.map(host_array, state.model_state)
    out = {}
    if ds.task == "regression":
        apply = jax.jit(lambda p, s, x: model.apply(p, x, s))
        std = (ds.scaling or {}).get("y_std", 1.0)
        for split, x, t in (("train", ds.x_train, ds.y_train), ("test", ds.x_test, ds.y_test)):
            y = apply(params, model_state, x)
            out[f"{split}_loss"] = float(get_loss(loss).value(y, t))
            y, t = np.asarray(y, np.float64), np.asarray(t, np.float64)
            err = (y - t) * std  # in the target's units
            out[f"{split}_rmse"] = float(np.sqrt(np.mean(err ** 2)))
            ss_tot = np.sum(((t - t.mean()) * std) ** 2)
            out[f"{split}_r2"] = float(1 - np.sum(err ** 2) / ss_tot) if ss_tot > 0 else None
        return out
    evaluate = jax.jit(make_eval_fn(model, loss, precision=precision))
    for split, x, t in (("train", ds.x_train, ds.y_train), ("test", ds.x_test, ds.y_test)):
        value, acc = evaluate(params, x, t, model_state)
        out[f"{split}_loss"], out[f"{split}_accuracy"] = float(value), float(acc)
    return out


def device_name() -> str:
    """``"cpu: cpu (x1)"``: the platform, kind and count of the default devices."""
    d = jax.devices()[0]
    return f"{d.platform}: {d.device_kind} (x{jax.device_count()})"


def data_label(cfg: dict) -> str:
    """The config's data in words for titles: the CSV file's name (``data.csv``), else the
    dataset's name."""
    return Path(cfg["csv"]).name if cfg.get("csv") else cfg["dataset"]


def run_plots(out: Path, model, loss: str | Loss, state, ds, losses, records, *,
              cfg: dict | None = None) -> str | None:
    """``loss_curve.png``; ``decision_boundary.png`` for 2-D classification inputs;
    ``predicted_vs_actual.png`` (the test split, in the data's units) for a regression.

    The loss axis names the loss and, for a regression, whether the targets were
    standardised. A failed write (a full disk) removes the partial file.

    Args:
      out: the run folder to write into.
      model: the trained model.
      loss: a loss name or :class:`~jaxprop.Loss` (named in the title; a loss on logits puts
        the boundary of a one-output model at 0, else at 0.5).
      state: the :class:`~jaxprop.train.TrainState` whose params draw the boundary.
      ds: the :class:`~jaxprop.data.Dataset`.
      losses: the training loss of every epoch.
      records: the logged records (test losses for the curve).
      cfg: the run's config: the data file named in the titles (:func:`data_label`) and
        the target column on a regression's axes; ``None``: ``ds.name``, no column name.

    Returns:
      ``None``, or why writing them failed.
    """
    from jaxprop import plots  # matplotlib loads only when a plot is drawn (0.3 s)
    from jaxprop.evaluation import evaluate, predicted_classes, target_names

    loss = get_loss(loss)
    name = ds.name if cfg is None else data_label(cfg)
    params = jax.tree.map(host_array, state.params)
    model_state = jax.tree.map(host_array, state.model_state)
    regression = ds.task == "regression"
    target = out / "loss_curve.png"
    try:
        standardised = "y_std" in (ds.scaling or {}) if regression else None
        plots.loss_curve(losses, target, records=records, title=f"{name}: training loss",
                         ylabel=plots.loss_label(loss, standardised))
        if regression:
            target = out / "predicted_vs_actual.png"
            result = evaluate(model, params, ds, loss=loss, state=model_state)
            names = target_names(cfg.get("label_column") if cfg else None, result)
            dataclasses.replace(result, output_names=names).plot(
                target, title=f"{name}: predicted vs actual (test split)")
        elif ds.task != SEQUENCE and ds.x_train.ndim == 2 and ds.x_train.shape[-1] == 2:
            target = out / "decision_boundary.png"
            apply = jax.jit(lambda p, s, g: model.apply(p, g, s))

            def labels(t):
                t = np.asarray(t)
                return t if t.ndim == 1 else decode_targets(t)

            plots.decision_boundary(
                lambda g: predicted_classes(apply(params, model_state, g), loss), ds.x_train,
                labels(ds.y_train), target, x_test=ds.x_test, labels_test=labels(ds.y_test),
                title=f"{name}: decision boundary", feature_names=ds.feature_names,
                class_names=ds.class_names)
    except OSError as e:
        target.unlink(missing_ok=True)
        return f"writing {target.name} failed ({e.strerror or e})"
    return None


# --------------------------------------------------------------------------------------------
# A population


def population_run(cfg: dict, *, population: int = 1, lrs, plots_on: bool = True,
                   force: bool = False) -> dict:
    """Train ``population`` networks per learning rate and write the run to ``cfg["out"]``.

    Members are the grid ``lrs x seeds``, seeds ``seed, seed + 1, ..., seed + population - 1``
    (member with seed ``s`` starts exactly like ``jaxprop train --seed s``), all in one
    compiled call, on the training split. Writes ``metrics.json`` with ``"population":
    [{"seed", "lr", "status", "final_loss", "accuracy"}, ...]`` (``status`` ``finished`` or
    ``diverged``; plus ``"solved"`` for a dataset with a ``solved_accuracy``, XOR) and
    ``population_losses.png``. The
    run's ``"status"`` is ``finished`` when at least one member finished, else ``diverged``.
    A population too large for the device's memory is refused before anything is allocated.

    Args:
      cfg: the run's config (module docstring); ``cfg["seed"]`` is the first seed.
      population: networks per learning rate (a positive int).
      lrs: the learning rates: ``population`` networks for each, with the optimizer
        ``cfg["optimizer"]`` names.
      plots_on: write ``population_losses.png``.
      force: replace a run already in the folder (refused otherwise).

    Returns:
      the metrics written to ``metrics.json`` (with ``"plot_error"`` added when the plot
      could not be written).
    """
    if not is_int(population) or population < 1:
        raise ValueError(f"--population must be a positive integer; got {population}")
    alias = optimizer_alias(cfg["optimizer"])
    ds = load_dataset(cfg)
    model, loss, output_activation = build_model(cfg, ds)
    cfg = {**cfg, "loss": loss, "output_activation": output_activation}
    ds = training_data(ds, loss)
    lrs = [float(lr) for lr in lrs]
    check_population_memory(model, alias(lrs[0]), population * len(lrs), len(ds.x_train),
                            cfg["batch_size"], what=f"--population {population}"
                            + (f" x {len(lrs)} learning rates" if len(lrs) > 1 else ""))
    out = Path(cfg["out"])
    with open_folder(out, fresh=True, force=force):
        t0 = time.perf_counter()
        res = fit_population(model, loss, alias, (ds.x_train, ds.y_train),
                             seeds=np.tile(cfg["seed"] + np.arange(population), len(lrs)),
                             lrs=np.repeat(lrs, population), epochs=cfg["epochs"],
                             batch_size=cfg["batch_size"], drop_last=cfg["drop_last"],
                             precision=cfg.get("precision", "f32"))
        config = {**cfg, "population": population, "lr_sweep": lrs}
        metrics = population_metrics(config, res, time.perf_counter() - t0,
                                     solved_accuracy=ds.solved_accuracy)
        _write_json(out / "metrics.json", metrics)
        plot_error = _population_plot(out, ds.name, res, metrics) if plots_on else None
        if plot_error:
            metrics["plot_error"] = plot_error
    return metrics


def population_metrics(config: dict, result: PopulationResult, wall: float, *,
                       solved_accuracy: float | None = None) -> dict:
    """What a population's ``metrics.json`` says (:func:`population_run`).

    Args:
      config: the run's config with ``"population"`` (networks per learning rate) and
        ``"lr_sweep"`` (the learning rates).
      result: the trained population, one member per seed and learning rate.
      wall: seconds of training.
      solved_accuracy: the dataset's ``solved_accuracy`` (XOR: 1.0): the training accuracy
        at which a member counts as solved; a number adds the ``solved`` counts, ``None``
        (most datasets) none.

    Returns:
      ``{"status", "config", "epoch", "members", "finished", "diverged",
      "median_final_loss", "wall_time", "device", ["solved", "solved_by_lr",] "population"}``.
    """
    members = len(result.final_loss)
    finite = result.final_loss[np.isfinite(result.final_loss)]
    metrics = {
        "status": "finished" if finite.size else "diverged",
        "config": config,
        "epoch": config["epochs"],
        "members": members,
        "finished": int(finite.size),
        "diverged": int(members - finite.size),
        "median_final_loss": float(np.median(finite)) if finite.size else None,
        "wall_time": wall,
        "device": f"{jax.devices()[0].platform} (x{jax.device_count()})",
    }
    if solved_accuracy is not None:
        solved = result.accuracy >= solved_accuracy
        metrics["solved"] = int(solved.sum())
        metrics["solved_by_lr"] = {str(lr): int(solved[result.lrs == lr].sum())
                                   for lr in config["lr_sweep"]}
    metrics["population"] = population_records(result)
    return metrics


def _population_plot(out: Path, dataset: str, result: PopulationResult,
                     metrics: dict) -> str | None:
    """``population_losses.png`` (a failed write removes the partial file); returns why it
    could not be written, or ``None``."""
    from jaxprop import plots

    target = out / "population_losses.png"
    try:
        plots.population_histogram(
            result, target, title=f"{dataset}: {metrics['members']} networks"
            + (f", {metrics['solved']} solved" if "solved" in metrics else ""))
    except OSError as e:
        target.unlink(missing_ok=True)
        return f"writing population_losses.png failed ({e.strerror or e})"
    return None


def population_records(result: PopulationResult) -> list[dict]:
    """``[{"seed", "lr", "status", "final_loss", "accuracy"}, ...]`` for JSON (NaN/Inf become
    ``None``; ``status`` is ``"diverged"`` for a member whose final loss is not finite)."""

    def num(v):
        v = float(v)
        return v if np.isfinite(v) else None

    seeds = result.seeds if result.seeds is not None else [None] * len(result.final_loss)
    lrs = result.lrs if result.lrs is not None else [None] * len(result.final_loss)
    return [
        {"seed": None if s is None else int(s), "lr": None if lr is None else float(lr),
         "status": "finished" if np.isfinite(f) else "diverged",
         "final_loss": num(f), "accuracy": num(a)}
        for s, lr, f, a in zip(seeds, lrs, result.final_loss, result.accuracy)
    ]
