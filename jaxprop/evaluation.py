"""Evaluating a trained model: loss, accuracy and the confusion matrix of a classification;
R², RMSE and MAE of a regression (per output and overall); and their plots.

::

    evaluate(model, params, data, *, loss=None, state=None, batch_size=None) -> Evaluation
    evaluate_run(run, *, csv=None, npy=None, labels=None, batch_size=None) -> Evaluation

The model runs in evaluation mode (``train=False``: no dropout, BatchNorm's running averages),
in one compiled program that maps over batches of ``batch_size`` rows (the last one padded and
masked), so memory is bounded by a batch's activations whatever the number of rows. A regression's
figures are in the data's units: a :class:`~jaxprop.data.Dataset` whose targets were
standardised (``scaling``) has that undone first; its loss stays the one training minimised
(on the targets as trained).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxprop.core.cache import remember
from jaxprop.core.checks import validate_data
from jaxprop.core.losses import Loss, get_loss
from jaxprop.core.validate import check_int
from jaxprop.data.dataset import Dataset
from jaxprop.data.preprocessing import decode_targets, encode_targets, rescale
from jaxprop.train.step import masked_value, regression_metrics

# Rows per batch of the evaluation program when none is given.
DEFAULT_BATCH_SIZE = 1024
TASKS = ("classification", "regression")


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """What :func:`evaluate` measured.

    Every evaluation has ``task``, ``n`` (rows), ``loss`` (``None`` without a loss) and
    ``loss_name``. A classification adds ``accuracy``, ``confusion`` (``(k, k)`` counts: rows
    the true classes, columns the predicted ones) and ``class_names``; a regression adds
    ``r2``, ``rmse``, ``mae`` (the means over the outputs, as scikit-learn's
    ``multioutput="uniform_average"``) and ``r2_outputs``, ``rmse_outputs``, ``mae_outputs``
    (one per output), in the data's units, with ``output_names``. ``predicted`` and ``actual``
    (class indices ``(n,)``, or values ``(n, out)``) are what the plot draws; ``name`` says
    what was evaluated (in plot titles).
    """

    task: str
    n: int
    loss: float | None = None
    loss_name: str | None = None
    accuracy: float | None = None
    confusion: np.ndarray | None = None
    class_names: tuple[str, ...] | None = None
    r2: float | None = None
    rmse: float | None = None
    mae: float | None = None
    r2_outputs: tuple[float, ...] | None = None
    rmse_outputs: tuple[float, ...] | None = None
    mae_outputs: tuple[float, ...] | None = None
    output_names: tuple[str, ...] | None = None
    name: str | None = None
    predicted: np.ndarray | None = dataclasses.field(default=None, repr=False)
    actual: np.ndarray | None = dataclasses.field(default=None, repr=False)

    def to_dict(self) -> dict:
        """The figures as plain JSON values (no per-row arrays)."""
        out = {"task": self.task, "n": self.n, "loss": self.loss, "loss_name": self.loss_name}
        if self.name is not None:
            out["data"] = self.name
        if self.task == "classification":
            out.update(accuracy=self.accuracy, class_names=list(self.class_names),
                       confusion=np.asarray(self.confusion).tolist())
            return out
        out.update(r2=self.r2, rmse=self.rmse, mae=self.mae, outputs=[
            {"name": name, "r2": r2, "rmse": rmse, "mae": mae} for name, r2, rmse, mae in zip(
                self.output_names, self.r2_outputs, self.rmse_outputs, self.mae_outputs)])
        return out

    def plot(self, path=None, *, title: str | None = None):
        """The confusion matrix (a classification) or predicted against actual values (a
        regression) as a :class:`~matplotlib.figure.Figure`, written as PNG to ``path`` when
        given."""
        from jaxprop import plots  # matplotlib loads only when a plot is drawn

        prefix = f"{self.name}: " if self.name else ""
        if self.task == "classification":
            return plots.confusion_matrix(self.confusion, path, class_names=self.class_names,
                                          title=title or f"{prefix}confusion matrix")
        return plots.predicted_vs_actual(self.predicted, self.actual, path,
                                         names=self.output_names,
                                         title=title or f"{prefix}predicted vs actual")


def evaluate(model, params, data, *, loss: str | Loss | None = None, state=None,
             batch_size: int | None = None, task: str | None = None) -> Evaluation:
    """Evaluate ``model`` with ``params`` on ``data`` in evaluation mode.

    Args:
      model: the model.
      params: its params.
      data: a :class:`~jaxprop.data.Dataset` (its test split, with its task, class names and
        target scaling), or ``(x, t)``: targets as training takes them (0/1 ``(n, 1)``,
        one-hot ``(n, k)``, integer labels ``(n,)``, or values ``(n, out)``).
      loss: a loss name or :class:`~jaxprop.Loss`: its value is reported, and a loss on logits
        puts a one-output classifier's boundary at 0 (else 0.5); ``None``: no loss value.
      state: the model state (BatchNorm's running averages), or ``None``.
      batch_size: rows per batch of the compiled evaluation (``None``:
        ``DEFAULT_BATCH_SIZE``).
      task: ``"classification"`` or ``"regression"``; ``None``: the Dataset's, else a
        classification when the loss is one (logits, one-hot, integer labels, a bounded
        input) or the targets are integer labels or 0/1, else a regression.

    Returns:
      the :class:`Evaluation`.
    """
    ds = data if isinstance(data, Dataset) else None
    x, t = _split(data)
    loss = None if loss is None else get_loss(loss)
    task = _task(task, ds, loss, t)
    batch_size = check_int("batch_size", DEFAULT_BATCH_SIZE if batch_size is None else batch_size,
                           minimum=1)
    if loss is None:
        x = validate_data(params, x, model=model)
        y, value = _program(model, None, batch_size)(params, state, x, None)
    else:
        x, t_in = validate_data(params, x, t, loss=loss, model=model)
        y, value = _program(model, loss, batch_size)(params, state, x, t_in)
    common = dict(n=int(x.shape[0]), loss=None if loss is None else float(value),
                  loss_name=None if loss is None else loss.name, name=None if ds is None
                  else ds.name)
    y = np.asarray(y, np.float64)
    if task == "classification":
        return _classification(y, t, loss, ds, common)
    return _regression(y, t, ds, common)


def _split(data):
    """``(x, t)``: a Dataset's test split, or the pair itself."""
    if isinstance(data, Dataset):
        return data.x_test, data.y_test
    if isinstance(data, (tuple, list)) and len(data) == 2:
        x, t = data
        if np.shape(x)[:1] != np.shape(t)[:1]:
            raise ValueError(f"x has {np.shape(x)[:1]} rows but t has {np.shape(t)[:1]}: one "
                             "target per example")
        return x, t
    raise ValueError("data must be a Dataset or (x, t)")


def _task(task, ds, loss, t) -> str:
    """The task: given, the Dataset's, or told from the loss's facts and the targets."""
    if task is not None:
        if task not in TASKS:
            raise ValueError(f"task must be one of {', '.join(TASKS)}; got {task!r}")
        return task
    if ds is not None:
        return "regression" if ds.task == "regression" else "classification"
    if loss is not None and (loss.integer_labels or loss.categorical or loss.from_logits
                             or loss.input_range is not None):
        return "classification"
    t = np.asarray(t)
    if t.ndim == 1 and np.issubdtype(t.dtype, np.integer):
        return "classification"
    return "classification" if t.ndim == 2 and np.all((t == 0) | (t == 1)) else "regression"


@remember(maxsize=16)
def _program(model, loss, batch_size: int):
    """The jitted ``(params, state, x, t) -> (y, loss)``: the forward pass in evaluation mode
    mapped over batches of ``batch_size`` rows (the last padded; its padding never counts),
    and the loss of every real row, reduced as the loss says (``t`` and the loss ``None``:
    0)."""

    def run(params, state, x, t):
        n = x.shape[0]
        size = min(batch_size, n)
        batches = -(-n // size)
        mask = (jnp.arange(batches * size) < n).reshape(batches, size)

        def batched(a):
            pad = jnp.zeros((batches * size - n, *a.shape[1:]), a.dtype)
            return jnp.concatenate([a, pad]).reshape(batches, size, *a.shape[1:])

        def one(batch):
            xb, tb, mb = batch
            y = model.forward(params, state, xb, train=False)[0]
            value = jnp.zeros((), jnp.float32) if loss is None else masked_value(loss, y, tb, mb)
            return y, value

        ys, values = jax.lax.map(one, (batched(x), None if t is None else batched(t), mask))
        y = ys.reshape(batches * size, *ys.shape[2:])[:n]
        if loss is None or loss.reduction == "sum":
            return y, jnp.sum(values)
        counts = jnp.sum(mask, axis=1).astype(values.dtype)
        return y, jnp.sum(values * counts) / n

    return jax.jit(run)


def confusion_matrix(true, predicted, num_classes: int) -> np.ndarray:
    """``(k, k)`` int64 counts: entry ``[i, j]`` counts the examples of class ``i`` predicted
    as class ``j`` (rows true, columns predicted). ``true``, ``predicted``: ``(n,)`` class
    indices in ``0..k-1`` (``ValueError`` otherwise)."""
    k = check_int("num_classes", num_classes, minimum=1)
    true, predicted = np.asarray(true, np.int64), np.asarray(predicted, np.int64)
    for what, a in (("true", true), ("predicted", predicted)):
        if a.size and (a.min() < 0 or a.max() >= k):
            raise ValueError(f"{what} classes must lie in 0..{k - 1}; found "
                             f"{a.min()}..{a.max()}")
    return np.bincount(true * k + predicted, minlength=k * k).reshape(k, k)


def predicted_classes(y, loss: Loss | None) -> np.ndarray:
    """``(n,)`` class indices of outputs ``y: (n, out)``: the argmax of several outputs; one
    output thresholded at 0 for a loss on logits, else at 0.5 (as training's accuracy)."""
    y = np.asarray(y)
    if y.shape[-1] > 1:
        return np.argmax(y, axis=-1)
    threshold = 0.0 if loss is not None and loss.from_logits else 0.5
    return (y[:, 0] > threshold).astype(np.int64)


def _classification(y, t, loss, ds, common) -> Evaluation:
    t = np.asarray(t)
    if loss is not None and loss.integer_labels and t.ndim > 1:  # a label per token
        y, t = y.reshape(-1, y.shape[-1]), t.reshape(-1)
    true = t.astype(np.int64) if t.ndim == 1 else decode_targets(t)
    predicted = predicted_classes(y, loss)
    k = ds.num_classes if ds is not None and ds.num_classes else max(
        2, y.shape[-1], int(true.max(initial=0)) + 1)
    matrix = confusion_matrix(true, predicted, k)
    names = tuple(ds.class_names) if ds is not None and ds.class_names else tuple(
        str(i) for i in range(k))
    return Evaluation("classification", **common, accuracy=float(np.trace(matrix)) / len(true),
                      confusion=matrix, class_names=names, predicted=predicted, actual=true)


def _regression(y, t, ds, common) -> Evaluation:
    t = np.asarray(t, np.float64)
    if t.shape != y.shape:
        raise ValueError(f"the model gives outputs of shape {y.shape[1:]} per example but the "
                         f"targets have shape {t.shape[1:]}")
    scaling = (ds.scaling or {}) if ds is not None else {}
    if "y_std" in scaling:  # back to the data's units
        y = y * scaling["y_std"] + scaling["y_mean"]
        t = t * scaling["y_std"] + scaling["y_mean"]
    r2, rmse, mae = (np.asarray(v, np.float64) for v in _regression_metrics(y, t))
    names = tuple(f"y{j}" for j in range(y.shape[1])) if y.shape[1] > 1 else ("y",)
    return Evaluation("regression", **common, r2=float(r2.mean()), rmse=float(rmse.mean()),
                      mae=float(mae.mean()), r2_outputs=tuple(map(float, r2)),
                      rmse_outputs=tuple(map(float, rmse)), mae_outputs=tuple(map(float, mae)),
                      output_names=names, predicted=y, actual=t)


_regression_metrics = jax.jit(regression_metrics)


# --------------------------------------------------------------------------------------------
# A run folder


def evaluate_run(run, *, csv=None, npy=None, labels=None,
                 batch_size: int | None = None) -> Evaluation:
    """Evaluate the model of run folder ``run`` (its ``model.npz``).

    On the run's own test split (the dataset rebuilt from the checkpoint's config, split and
    standardised as in training), or on new rows: a CSV file with the training columns and
    the label column (``csv``), or ``.npy`` files of inputs and targets (``npy`` and
    ``labels``: class indices or names, or the values of a regression). New rows are
    standardised as the training rows were.

    Args:
      run: the run folder.
      csv: a CSV file to evaluate on, or ``None``.
      npy: a ``.npy`` file of raw inputs ``(n, *example_shape)``, or ``None``.
      labels: with ``npy``, a ``.npy`` file of their targets ``(n,)`` (or ``(n, 1)``).
      batch_size: see :func:`evaluate`.

    Returns:
      the :class:`Evaluation` (``name``: the data file, and ``"(test split)"`` for the run's
      own).
    """
    from jaxprop.predict import load_predictor

    if csv is not None and npy is not None:
        raise ValueError("give --csv or --npy, not both")
    if (npy is None) != (labels is None):
        raise ValueError("--npy and --labels go together: the inputs and their targets")
    predictor = load_predictor(run)
    info = predictor.info
    if csv is not None:
        ds = _csv_dataset(info, csv)
    elif npy is not None:
        ds = _npy_dataset(info, npy, labels, predictor.model)
    else:
        ds = _test_split(run, info)
    result = evaluate(predictor.model, predictor.params, ds, loss=info["loss"],
                      state=predictor.state, batch_size=batch_size)
    return dataclasses.replace(result, output_names=target_names(info.get("label_column"),
                                                                 result))


def target_names(label_column, result: Evaluation) -> tuple[str, ...] | None:
    """A regression's output names: the label column when a run named it (not by index),
    else those of ``result``."""
    if (result.task == "regression" and isinstance(label_column, str)
            and not _is_index(label_column) and len(result.r2_outputs) == 1):
        return (label_column,)
    return result.output_names


def _is_index(text: str) -> bool:
    return text.lstrip("-").isdigit()


def _test_split(run, info) -> Dataset:
    """The run's own test split, rebuilt from the checkpoint's config."""
    from jaxprop import checkpoint
    from jaxprop.runs import check_saved_config, data_label, load_dataset, training_data

    folder = Path(run)
    if not folder.is_dir() or not (folder / checkpoint.FILENAME).is_file():
        raise ValueError(f"{run} holds no {checkpoint.FILENAME}, so its test split cannot be "
                         "rebuilt; evaluate on a file with --csv FILE (or --npy)")
    saved = checkpoint.load(folder)
    check_saved_config(saved.config, saved.path)
    ds = training_data(load_dataset(saved.config), info["loss"])
    return ds._replace(name=f"{data_label(saved.config)} (test split)")


def _known_classes(info, raw, where: str) -> np.ndarray:
    """Class indices of the model for labels ``raw``: the class names as in training, or
    (integers that are not names) the indices themselves; ``ValueError`` naming the first
    label the model does not know."""
    names = [str(c) for c in info["class_names"]]
    index = {name: i for i, name in enumerate(names)}
    raw = np.asarray(raw)
    keys = [_class_key(v, index) for v in raw.tolist()]
    if np.issubdtype(raw.dtype, np.integer) and not all(key in index for key in keys):
        k = max(len(names), 2)
        outside = raw[(raw < 0) | (raw >= k)]
        if outside.size:
            raise ValueError(f"{where}: class index {int(outside[0])} is outside 0..{k - 1}")
        return raw.astype(np.int64)
    unknown = next((key for key in keys if key not in index), None)
    if unknown is not None:
        raise ValueError(f"{where}: class {unknown!r} is not one the model was trained on "
                         f"({', '.join(names)})")
    return np.array([index[key] for key in keys], np.int64)


def _class_key(value, index: dict) -> str:
    """``value`` as the class name training gave it: numeric labels were named by their
    integer (``"3"`` for ``3.0``)."""
    key = str(value).strip()
    if key not in index and _is_number(key) and float(key).is_integer():
        return str(int(float(key)))
    return key


def _dataset(info, x, labels, where: str) -> Dataset:
    """The rows ``x`` (raw) and their targets as a test split: inputs standardised and
    targets encoded as in training."""
    if len(labels) != len(x):
        raise ValueError(f"{where}: {len(labels)} labels for {len(x)} rows of inputs")
    if "x_mean" in info:
        x = rescale(x, np.asarray(info["x_mean"]), np.asarray(info["x_std"]))
    scaling = {key: info[key] for key in ("y_mean", "y_std") if key in info}
    if info["task"] == "regression":
        values = np.asarray(labels, np.float64).reshape(len(x), -1)
        if scaling:
            values = (values - scaling["y_mean"]) / scaling["y_std"]
        t, k = values.astype(np.float32), 0
    else:
        classes = _known_classes(info, labels, where)
        k = max(len(info["class_names"]), int(classes.max(initial=0)) + 1, 2)
        t = classes if get_loss(info["loss"]).integer_labels else encode_targets(classes, k)
    empty = np.zeros((0, *np.shape(x)[1:]), np.float32)
    return Dataset(where, empty, t[:0], np.asarray(x, np.float32), t, k,
                   tuple(info["feature_names"]), tuple(info["class_names"]) or None,
                   info["task"], scaling or None)


def _csv_dataset(info, path) -> Dataset:
    """The rows of a CSV file with the training columns (matched by header name, as
    ``jaxprop predict`` reads them) and the label column."""
    from jaxprop.data.csv import read_features, read_labels

    lc, index = info.get("label_column"), info.get("label_index")
    index = -1 if index is None else index
    labels = read_labels(path, lc if isinstance(lc, str) and not _is_index(lc) else index)
    x = read_features(path, tuple(info["feature_names"]), index)
    if info["task"] == "regression":
        try:
            labels = np.array([float(v) for v in labels])
        except ValueError:
            bad = next(v for v in labels if not _is_number(v))
            raise ValueError(f"{path}: the target {bad!r} is not a number (the model is a "
                             "regression)") from None
    return _dataset(info, x, labels, Path(path).name)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _npy_dataset(info, npy, labels, model) -> Dataset:
    """The inputs of a ``.npy`` file and their targets from another."""
    x, t = _load_npy(npy, "--npy"), _load_npy(labels, "--labels")
    shape = getattr(model, "in_shape", None)
    if shape is not None and tuple(x.shape[1:]) != tuple(shape):
        raise ValueError(f"--npy {npy}: examples of shape {tuple(x.shape[1:])}, but the model "
                         f"takes {tuple(shape)}")
    if t.ndim == 2 and t.shape[1] == 1 and info["task"] != "regression":
        t = t[:, 0]
    if len(t) != len(x):
        raise ValueError(f"--labels {labels}: {len(t)} targets for the {len(x)} inputs of "
                         f"--npy {npy}")
    return _dataset(info, np.asarray(x, np.float64), t, Path(npy).name)


def _load_npy(path, flag: str) -> np.ndarray:
    try:
        a = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise FileNotFoundError(f"{flag} {path}: no such file") from None
    except (ValueError, OSError) as e:
        raise ValueError(f"{flag} {path}: not a .npy array file ({e})") from None
    if not isinstance(a, np.ndarray) or a.ndim == 0 or len(a) == 0:
        raise ValueError(f"{flag} {path}: needs one array of at least one row")
    return a
