"""Predictions from a run folder: the saved model applied to new rows, as the CSV it was
trained on would have labelled them.

``jaxprop train`` leaves ``model.npz`` in its run folder (:func:`jaxprop.runs.save_predictor`):
the model and params (:func:`jaxprop.save`), the task, the loss, the input columns, the class
names and the standardisation. :func:`predict_rows` standardises raw feature rows the way the
training rows were, runs the model in evaluation mode and returns a table: a ``prediction``
column (the class name as it appeared in the training CSV, or the value in the target's units
for a regression) and, for a classification, one ``prob_<class>`` column per class (or
``score_<class>`` when the outputs are not probabilities: e.g. an identity output under
``mse``).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np

PREDICTOR = "model.npz"


class Predictor(NamedTuple):
    """What a run folder's ``model.npz`` holds."""

    model: object
    params: object
    state: object
    info: dict


def save_predictor(path: Path, model, state, ds, cfg: dict) -> Path:
    """``model.npz`` for ``jaxprop predict``: the model, its params and how to use them.

    The model and its params (:func:`jaxprop.save`) with what turns a CSV row into a
    prediction: ``task``, ``loss``, ``feature_names``, ``class_names``, the label column, and
    the standardisation ``x_mean``/``x_std`` (and ``y_mean``/``y_std`` for a regression); also
    the dataset's name and the state's epoch.

    Args:
      path: the file to write.
      model: the trained :class:`~jaxprop.Model`, with its input shape.
      state: the :class:`~jaxprop.train.TrainState` (its params, and its model state when the
        model has one).
      ds: the :class:`~jaxprop.data.Dataset` trained on (task, names, ``scaling``).
      cfg: the run's config (``"loss"``, and ``"label_column"`` when given).

    Returns:
      the file's path.
    """
    from jaxprop.core.losses import get_loss
    from jaxprop.saving import save
    from jaxprop.train.fit import to_host

    scale = ds.scaling or {}
    extra = {"task": ds.task, "loss": get_loss(cfg["loss"]).name, "dataset": ds.name,
             "feature_names": list(ds.feature_names) if ds.feature_names else
             [f"x{j}" for j in range(ds.x_train.shape[-1])],
             "class_names": list(ds.class_names or ()), "label_column": cfg.get("label_column"),
             "label_index": ds.label_index,
             "epoch": int(np.asarray(state.epoch))}
    for key in ("x_mean", "x_std"):
        if key in scale:
            extra[key] = np.asarray(scale[key])
    for key in ("y_mean", "y_std"):
        if key in scale:
            extra[key] = float(scale[key])
    host = to_host(state)
    state_or_none = host.model_state if jax.tree.leaves(host.model_state) else None
    return save(path, model, host.params, state=state_or_none, **extra)


def load_predictor(run: str | Path) -> Predictor:
    """The predictor of run folder ``run`` (or of a ``model.npz`` file itself)."""
    from jaxprop.saving import load

    path = Path(run)
    if not path.exists():
        raise FileNotFoundError(f"{run}: no such run folder (nor model.npz file)")
    if path.is_dir():
        path = path / PREDICTOR
        if not path.is_file():
            raise FileNotFoundError(
                f"{run} holds no {PREDICTOR}: is it a jaxprop train run folder? (runs from "
                f"before {PREDICTOR} existed get one with jaxprop train --resume {run})")
    model, params, extra = load(path)
    for key in ("task", "loss", "feature_names"):
        if key not in extra:
            raise ValueError(f"{path}: not a run's predictor (no {key!r}); it is a model "
                             "saved with jp.save: load it with jp.load")
    state = extra.pop("state", None)
    return Predictor(model, params, state, extra)


def predict_rows(predictor: Predictor, x) -> tuple[list[str], list[list]]:
    """``(columns, rows)``: the prediction table for raw feature rows ``x: (n, d)``."""
    from jaxprop.core.losses import get_loss

    info = predictor.info
    x = np.asarray(x, np.float64)
    d = len(info["feature_names"])
    if x.ndim != 2 or x.shape[1] != d:
        raise ValueError(f"the model takes {d} features per row; got shape {x.shape}")
    if "x_mean" in info:
        x = (x - np.asarray(info["x_mean"])) / np.asarray(info["x_std"])
    dtype = jax.tree.leaves(predictor.params)[0].dtype
    y = predictor.model.apply(predictor.params, np.asarray(x, dtype), predictor.state)
    y = np.asarray(y, np.float64)
    if info["task"] == "regression":
        values = y[:, 0] * info.get("y_std", 1.0) + info.get("y_mean", 0.0)
        return ["prediction"], [[float(v)] for v in values]
    classes = list(info["class_names"]) or [str(k) for k in range(max(2, y.shape[1]))]
    loss = get_loss(info["loss"])
    out_range = getattr(predictor.model, "output_range", None)
    if loss.from_logits:
        probs = _sigmoid(y[:, 0]) if y.shape[1] == 1 else _softmax(y)
        prefix = "prob"
    else:
        probs = y[:, 0] if y.shape[1] == 1 else y
        prefix = "prob" if out_range is not None and out_range[0] >= 0 and out_range[1] <= 1 \
            else "score"
    if y.shape[1] == 1:  # binary: the output is the probability of the second class
        probs = np.stack([1 - probs, probs], axis=1)
        chosen = (probs[:, 1] > 0.5).astype(int)
    else:
        chosen = np.argmax(probs, axis=1)
    columns = ["prediction"] + [f"{prefix}_{c}" for c in classes]
    rows = [[classes[k], *map(float, p)] for k, p in zip(chosen, probs)]
    return columns, rows


def predict_csv(run: str | Path, csv_path: str | Path) -> tuple[list[str], list[list]]:
    """The prediction table for every row of ``csv_path`` (a label column is ignored)."""
    from jaxprop.data.csv import read_features

    predictor = load_predictor(run)
    label_index = predictor.info.get("label_index")
    if label_index is None:  # a model.npz saved before the index was kept: an int column only
        lc = predictor.info.get("label_column")
        label_index = int(lc) if lc is not None and str(lc).lstrip("-").isdigit() else -1
    x = read_features(csv_path, tuple(predictor.info["feature_names"]), label_index)
    return predict_rows(predictor, x)


def _sigmoid(z):
    return 0.5 * (1 + np.tanh(0.5 * z))


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)
