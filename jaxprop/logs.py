"""Logs that other tools read: a history as CSV, and TensorBoard event files.

``history.csv``: one row per logged record; the columns are the union of the records' keys in
the order they first appear (``epoch, loss, train_loss, train_accuracy, test_loss,
test_accuracy, time`` for a classification, then any field a record adds, such as
``learning_rate``); each cell is the JSON of the record's value, empty where the record lacks
the key or holds ``null``. :func:`write_history_csv` writes one at once (atomically);
:class:`CsvHistory` keeps one up to date record by record, as a run folder does.

:class:`TensorBoardLogger` is a ``fit`` callback (``callback(state, record)``) that writes, at
step = the record's epoch, the record's numbers (tags: :func:`record_scalars`), the norm of
every parameter (``param_norm/0.dense.W``, :func:`leaf_tags`) and, given the loss and the
training data, the norm of the full-batch gradient of the training loss
(``grad_norm/0.dense.W``): jaxprop's hand-written backward in evaluation mode, as the record's
``train_loss`` is measured, one compiled program per logger. ``param_norm/all`` and
``grad_norm/all`` are the global norms. The writer is tensorboardX, an optional extra
(``pip install 'jaxprop[tensorboard]'``).
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxprop.checkpoint import write_atomic
from jaxprop.core.backprop import loss_grad_state_fn
from jaxprop.core.checks import validate_data
from jaxprop.core.losses import get_loss
from jaxprop.core.validate import is_number

# What a TensorBoard event file's name starts with (tensorboardX and TensorBoard itself).
EVENTS_PREFIX = "events.out.tfevents."
INSTALL = "pip install 'jaxprop[tensorboard]'"


# --------------------------------------------------------------------------------------------
# history.csv


def csv_columns(records) -> list[str]:
    """The union of the records' keys, in the order they first appear."""
    return list(dict.fromkeys(key for record in records for key in record))


def _row(record: dict, columns) -> list[str]:
    return ["" if record.get(c) is None else json.dumps(record[c]) for c in columns]


def history_csv(records, columns=None) -> str:
    """The CSV text of ``records`` (a header, then one row each; ``columns`` by default
    :func:`csv_columns`)."""
    columns = csv_columns(records) if columns is None else columns
    buf = io.StringIO()
    out = csv.writer(buf, lineterminator="\n")
    out.writerow(columns)
    out.writerows(_row(r, columns) for r in records)
    return buf.getvalue()


def write_history_csv(history, path) -> Path:
    """Write ``history`` (a :class:`~jaxprop.History` or its list of records) to ``path`` as CSV,
    atomically (module docstring); returns the path."""
    records = getattr(history, "records", history)
    return write_atomic(Path(path), history_csv(records).encode())


class CsvHistory:
    """``path`` kept up to date record by record: written at once from ``records``, then a row
    appended (and flushed) per record while the columns stay, or the file rewritten
    atomically when a record brings a column the header lacks."""

    def __init__(self, path, records=()):
        self.path, self.records = Path(path), list(records)
        self.columns, self._file = [], None
        self._rewrite()

    def append(self, record: dict) -> None:
        self.records.append(record)
        if not set(record) <= set(self.columns):
            self._rewrite()
            return
        self._file.write(history_csv([record], self.columns).split("\n", 1)[1])
        self._file.flush()

    def _rewrite(self) -> None:
        self.close()
        self.columns = csv_columns(self.records)
        write_atomic(self.path, history_csv(self.records, self.columns).encode())
        self._file = open(self.path, "a", newline="")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


# --------------------------------------------------------------------------------------------
# TensorBoard


def record_scalars(record: dict) -> dict[str, float]:
    """A record's numbers under TensorBoard tags: ``train_X``/``test_X`` as ``X/train`` and
    ``X/test`` (``loss/train``, ``accuracy/test``, ``rmse/test``), ``loss`` (the training loss
    of the chunk's last epoch, as the steps measured it) as ``loss/epoch``, every other number
    under its own key (``learning_rate``, ``time``). ``epoch`` is the step, not a scalar;
    ``None``, flags and text are left out."""
    scalars = {}
    for key, value in record.items():
        if key == "epoch" or not is_number(value):
            continue
        split, _, name = key.partition("_")
        tag = f"{name}/{split}" if split in ("train", "test") and name else key
        scalars["loss/epoch" if key == "loss" else tag] = float(value)
    return scalars


def _kind(layer) -> str:
    """The word a layer's spec or name starts with, lowercased: ``dense``, ``conv2d``,
    ``residual``."""
    text = getattr(layer, "spec", None) or getattr(layer, "name", "") or "layer"
    match = re.match(r"[A-Za-z0-9_]+", text)
    return match.group(0).lower() if match else "layer"


def _key(k) -> str:
    for attr in ("idx", "key", "name"):  # SequenceKey, DictKey, GetAttrKey
        if hasattr(k, attr):
            return str(getattr(k, attr))
    return str(k)


def leaf_tags(model, params) -> list[str]:
    """A readable name for every leaf of ``params``, in tree order: the layer's index and kind,
    then the rest of the leaf's path, joined by dots (``"0.dense.W"``, ``"2.residual.0.b"``);
    for a model without layers, the path alone."""
    layers = getattr(model, "layers", ())
    tags = []
    for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]:
        parts = [_key(k) for k in path]
        if path and isinstance(path[0], jax.tree_util.SequenceKey) and path[0].idx < len(layers):
            parts.insert(1, _kind(layers[path[0].idx]))
        tags.append(".".join(parts) or "params")
    return tags


def _norm(leaf):
    return jnp.sqrt(jnp.sum(jnp.square(leaf.astype(jnp.promote_types(leaf.dtype, jnp.float32)))))


def grad_norms_fn(model, loss):
    """The jitted ``(params, model_state, x, t) -> (leaf norms, global norm)`` of the full-batch
    gradient of ``loss`` by the hand-written backward, in evaluation mode."""
    gradient = loss_grad_state_fn(model, get_loss(loss))

    def norms(params, model_state, x, t):
        grads = gradient(params, model_state, x, t, None, False)[1]
        leaves = [_norm(g) for g in jax.tree.leaves(grads)]
        return leaves, jnp.sqrt(sum(n ** 2 for n in leaves))

    return jax.jit(norms)


def summary_writer_class():
    """tensorboardX's ``SummaryWriter``; a ``ValueError`` saying how to install it when it is
    missing."""
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        raise ValueError("TensorBoard logs need the tensorboardX package, which is not "
                         f"installed: {INSTALL}") from None
    return SummaryWriter


def has_events(logdir) -> bool:
    """Whether ``logdir`` holds TensorBoard event files."""
    logdir = Path(logdir)
    return logdir.is_dir() and any(p.name.startswith(EVENTS_PREFIX) for p in logdir.iterdir())


def remove_events(logdir) -> None:
    """Delete the TensorBoard event files in ``logdir`` (nothing else), then ``logdir`` itself
    if that leaves it empty."""
    logdir = Path(logdir)
    if not logdir.is_dir():
        return
    for p in logdir.iterdir():
        if p.name.startswith(EVENTS_PREFIX) and p.is_file():
            p.unlink()
    try:
        logdir.rmdir()
    except OSError:
        pass


class TensorBoardLogger:
    """A ``fit`` callback that writes each record to TensorBoard event files in ``logdir``
    (module docstring); use it as a context manager or call :meth:`close`.

    Args:
      logdir: the folder of the event files (created if needed).
      model: the model trained (its layers name the tags); ``None``: tags from the params'
        paths alone.
      loss: a loss name or :class:`~jaxprop.Loss`; with ``data``, the gradient norms.
      data: the training data, a Dataset, ``(x, t)`` or ``(x, t, x_test, t_test)`` (the
        gradient is taken on its training part, whole).
    """

    def __init__(self, logdir, model=None, loss=None, data=None):
        if (loss is None) != (data is None) or (loss is not None and model is None):
            raise ValueError("TensorBoardLogger: the gradient norms need the model, the loss "
                             "and the data (give all three, or the model alone)")
        self.logdir, self.model, self.loss = Path(logdir), model, loss
        self._data = None if data is None else (
            (data.x_train, data.y_train) if hasattr(data, "x_train") else tuple(data[:2]))
        self._grad_norms = None if loss is None else grad_norms_fn(model, loss)
        self._checked = False
        # a file name of its own that sorts after those of earlier loggers (a resumed run's
        # file, even within the same second: tensorboardX names files by the second and
        # truncates an existing one; TensorBoard reads them in the order of their names)
        self.writer = summary_writer_class()(
            str(self.logdir), filename_suffix=f".{time.time_ns()}.{os.getpid()}")

    def __call__(self, state, record: dict) -> None:
        """Write ``record`` and ``state``'s norms at step ``record["epoch"]``."""
        params = state.params
        scalars = {**record_scalars(record), **self._norms("param_norm", params, [
            float(np.linalg.norm(np.asarray(leaf, np.float64).ravel()))
            for leaf in jax.tree.leaves(params)])}
        if self._grad_norms is not None:
            leaves, total = self._grad_norms(params, state.model_state, *self._validated(params))
            scalars.update(self._norms("grad_norm", params, [float(n) for n in leaves],
                                       float(total)))
        self._write(scalars, record)

    def write_record(self, record: dict) -> None:
        """Write a record's numbers alone (a record of the past: no state to take norms of)."""
        self._write(record_scalars(record), record)

    def _write(self, scalars: dict, record: dict) -> None:
        for tag, value in scalars.items():
            self.writer.add_scalar(tag, value, int(record["epoch"]))
        self.writer.flush()

    def _norms(self, prefix: str, params, values: list, total: float | None = None) -> dict:
        """``{prefix/TAG: norm}`` for each leaf, and ``prefix/all``: ``total`` or the global
        norm of ``values``."""
        out = {f"{prefix}/{tag}": v for tag, v in zip(leaf_tags(self.model, params), values)}
        out[f"{prefix}/all"] = float(np.linalg.norm(values)) if total is None else total
        return out

    def _validated(self, params):
        """The training data, checked and cast to the params' dtype on the first call."""
        if not self._checked:
            self._data, self._checked = validate_data(params, *self._data, loss=self.loss,
                                                         model=self.model), True
        return self._data

    def close(self) -> None:
        self.writer.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
