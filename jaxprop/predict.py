"""Predictions from a run folder: the saved model applied to new rows, as the data it was
trained on would have labelled them.

``jaxprop train`` leaves ``model.npz`` in its run folder (:func:`jaxprop.runs.save_predictor`):
the model and params (:func:`jaxprop.save`), the task, the loss, the input columns, the class
names and the standardisation. :func:`predict_rows` takes raw features, in the units of the
training data (before standardisation), one row per example: ``(n, d)`` for a table, and for a
model of images ``(n, H, W, C)`` or the images flattened to ``(n, H*W*C)`` columns in NHWC
(row-major) order. It standardises them the way the training rows were (once), runs the model
in evaluation mode and returns a table: a ``prediction`` column (the class name as it appeared
in the training data, or the value in the target's units for a regression) and, for a
classification, one ``prob_<class>`` column per class (or ``score_<class>`` when the outputs
are not probabilities: e.g. an identity output under ``mse``). :func:`predict_csv` and
:func:`predict_npy` read the rows from a CSV file or a ``.npy`` array (:func:`read_npy`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np
from numpy.lib import format as _npy

from jaxprop.core.checks import output_shape
from jaxprop.data.text import SEQUENCE

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
             _generic_names(ds.num_features),
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
            if _is_population(path.parent):
                raise ValueError(
                    f"{run} is a population run (--population/--lr-sweep): it keeps no "
                    f"{PREDICTOR} to predict with; train one network (without --population) "
                    "and predict with its run folder")
            raise FileNotFoundError(
                f"{run} holds no {PREDICTOR}: is it a jaxprop train run folder? (runs from "
                f"before {PREDICTOR} existed get one with jaxprop train --resume {run})")
    model, params, extra = load(path)
    for key in ("task", "loss", "feature_names"):
        if key not in extra:
            raise ValueError(f"{path}: not a run's predictor (no {key!r}); it is a model "
                             "saved with jp.save: load it with jp.load")
    _check_class_names(path, model, extra.get("class_names"))
    state = extra.pop("state", None)
    return Predictor(model, params, state, extra)


def _check_class_names(path: Path, model, names) -> None:
    """``ValueError`` unless ``names`` is empty or one name per class the model's outputs tell
    apart (``max(2, outputs)``: one sigmoid output tells two)."""
    if names is None or names == []:
        return
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"{path}: corrupt predictor (class_names is not a list of names)")
    outputs = output_shape(model, model.in_shape)[-1]
    if len(names) != max(2, outputs):
        raise ValueError(f"{path}: corrupt predictor ({len(names)} class names for a model of "
                         f"{outputs} output(s), which tells {max(2, outputs)} classes apart)")


def generate_text(run: str | Path, prompt: str, tokens: int, *, temperature: float = 1.0,
                  seed: int = 0, cache: bool = False) -> str:
    """The ``tokens`` characters a sequence run's model (``--dataset text``, ``reverse``,
    ``sort``) writes after ``prompt``, sampled by :func:`jaxprop.generate` with
    ``jax.random.key(seed)`` (``temperature`` 0: greedy; ``cache``: with a KV cache).

    ``ValueError`` in one line for a run that is not of a sequence model, an empty prompt, or
    characters the run's vocabulary lacks (listing them).
    """
    import jax

    from jaxprop.data.text import decode, encode
    from jaxprop.tools.generate import generate

    predictor = load_predictor(run)
    info = predictor.info
    if info["task"] != SEQUENCE:
        raise ValueError(f"{run} holds a {info['task']} model of {info.get('dataset')!r}, not "
                         "a sequence model: generate samples from runs of --dataset text, "
                         "reverse or sort")
    if not prompt:
        raise ValueError("the prompt is empty: give at least one character")
    vocab = "".join(info["class_names"])
    missing = sorted(set(prompt) - set(vocab))
    if missing:
        raise ValueError(f"the prompt has {len(missing)} character(s) the run's vocabulary "
                         f"lacks: {''.join(missing)!r} (it knows {len(vocab)}: {vocab!r})")
    out = generate(predictor.model, predictor.params, encode(prompt, vocab), tokens,
                   temperature=temperature, key=jax.random.key(seed),
                   context=input_shape(predictor)[0], state=predictor.state, cache=cache)
    return decode(out, vocab)


def input_shape(predictor: Predictor) -> tuple[int, ...]:
    """One example's shape as the model takes it: ``(d,)`` or ``(H, W, C)``."""
    return tuple(int(n) for n in predictor.model.in_shape)


def feature_names(predictor: Predictor) -> tuple[str, ...]:
    """The names of the ``prod(input_shape)`` input columns, in the order of a flattened row
    (a CSV's header names; for images, the pixels in NHWC row-major order)."""
    names = tuple(predictor.info["feature_names"])
    d = math.prod(input_shape(predictor))
    return names if len(names) == d else _generic_names(d)  # (MNIST's were once one name)


def describe_input(predictor: Predictor) -> str:
    """What one input row is, in words: ``"2 features per row"`` or ``"(8, 8, 1) inputs: 64
    columns per row in NHWC (row-major) order"``."""
    shape = input_shape(predictor)
    if len(shape) == 1:
        return f"{shape[0]} features per row"
    return f"{shape} inputs: {math.prod(shape)} columns per row in NHWC (row-major) order"


def _check_fits_dtype(x, dtype, where: str) -> None:
    """``ValueError`` naming the first value (standardised as the model takes it) beyond what
    the params' dtype holds: it would become inf (1e39 in float32)."""
    x = np.asarray(x, np.float64)
    big = np.abs(x) > np.finfo(dtype).max
    if big.any():
        row, *col = np.unravel_index(int(np.argmax(big)), x.shape)
        raise ValueError(f"{where}: row {row + 1} holds {x[(row, *col)]:.4g} (after the run's "
                         f"standardisation), beyond what {np.dtype(dtype).name} holds "
                         f"(±{np.finfo(dtype).max:.4g})")


def predict_rows(predictor: Predictor, x, where: str = "x") -> tuple[list[str], list[list]]:
    """``(columns, rows)``: the prediction table for raw feature rows ``x``.

    ``x: (n, *input_shape)`` or ``(n, prod(input_shape))`` (images flattened in NHWC order),
    numbers in the units of the training data; the run's standardisation is applied here.
    ``where`` names ``x`` in error messages (a file's path).
    """
    from jaxprop.core.losses import get_loss
    from jaxprop.data import check_finite
    from jaxprop.data.preprocessing import rescale

    info = predictor.info
    if info["task"] == SEQUENCE:
        raise ValueError(f"the run holds a sequence model of {info.get('dataset')!r}: it "
                         "continues text; sample from it with jaxprop generate")
    x = _as_inputs(predictor, x, where)
    if "x_mean" in info:
        x = rescale(x, np.asarray(info["x_mean"]), np.asarray(info["x_std"]))
    dtype = jax.tree.leaves(predictor.params)[0].dtype
    _check_fits_dtype(x, dtype, where)
    y = predictor.model.apply(predictor.params, np.asarray(x, dtype), predictor.state)
    y = np.asarray(y, np.float64)
    check_finite(y, f"the model's outputs for {where}")
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
    """The prediction table for every row of ``csv_path`` (a label column is ignored).

    Columns are matched by header name; a file without a header holds the
    ``prod(input_shape)`` input columns (images flattened in NHWC order), optionally with the
    label column where it was in training.
    """
    from jaxprop.data.csv import read_features

    predictor = load_predictor(run)
    label_index = predictor.info.get("label_index")
    if label_index is None:  # a model.npz saved before the index was kept: an int column only
        lc = predictor.info.get("label_column")
        label_index = int(lc) if lc is not None and str(lc).lstrip("-").isdigit() else -1
    try:
        x = read_features(csv_path, feature_names(predictor), label_index)
    except ValueError as e:
        if len(input_shape(predictor)) == 1:
            raise
        raise ValueError(f"the model takes {describe_input(predictor)}; {e}") from None
    return predict_rows(predictor, x, str(csv_path))


def predict_npy(run: str | Path, npy_path: str | Path) -> tuple[list[str], list[list]]:
    """The prediction table for the array in ``npy_path`` (:func:`read_npy`):
    ``(n, *input_shape)`` or ``(n, prod(input_shape))`` raw features."""
    predictor = load_predictor(run)
    return predict_rows(predictor, read_npy(npy_path), str(npy_path))


def read_npy(path: str | Path) -> np.ndarray:
    """The array of numbers in the ``.npy`` file ``path`` (as :func:`numpy.save` writes it).

    Never unpickles: an array of Python objects, a pickle or any other file is refused, and so
    is an array that is not numbers (text, records, complex numbers). Raises ``ValueError``
    naming the file and the problem (also for a corrupt or truncated file),
    ``FileNotFoundError`` when it does not exist.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f".npy file not found: {path}")
    with path.open("rb") as f:
        start = f.read(len(_npy.MAGIC_PREFIX))
        if not start:
            raise ValueError(f"{path}: the file is empty, not a .npy array")
        if start.startswith(b"PK"):
            raise ValueError(f"{path}: an .npz archive, not a .npy array; save the rows as one "
                             "array with np.save")
        if start != _npy.MAGIC_PREFIX:
            raise ValueError(f"{path}: not a .npy file (no NumPy header); save the rows with "
                             "np.save (or give a CSV file with --csv)")
        f.seek(0)
        try:
            version = _npy.read_magic(f)
            read_header = _NPY_HEADERS.get(version)
            if read_header is None:
                raise ValueError(f"format version {version} is not supported")
            _, _, dtype = read_header(f)
        except (ValueError, EOFError) as e:
            raise ValueError(f"{path}: corrupt .npy header ({e})") from None
    _check_numeric(dtype, str(path))
    # mapped, not read: a header that claims more than the file holds is an error, not a
    # huge allocation
    try:
        a = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, EOFError) as e:
        raise ValueError(f"{path}: corrupt or truncated .npy file ({e})") from None
    return np.array(a)


def _as_inputs(predictor: Predictor, x, where: str) -> np.ndarray:
    """``x`` as ``(n, *input_shape)`` numbers, or a ``ValueError`` naming ``where``."""
    from jaxprop.data import check_finite

    x = np.asarray(x)
    _check_numeric(x.dtype, where)
    shape = input_shape(predictor)
    if x.shape[1:] == (math.prod(shape),):
        x = x.reshape((x.shape[0], *shape))
    elif x.shape[1:] != shape:
        raise ValueError(f"the model takes {describe_input(predictor)}; {where} has shape "
                         f"{x.shape}, not (n, {math.prod(shape)})"
                         + (f" nor (n, {', '.join(map(str, shape))})" if len(shape) > 1 else ""))
    check_finite(x.reshape(x.shape[0], math.prod(shape)), where,
                 columns=feature_names(predictor))
    return x


def _check_numeric(dtype: np.dtype, where: str) -> None:
    if dtype.kind not in "biuf":
        what = _DTYPE_KINDS.get(dtype.kind, "not numbers")
        raise ValueError(f"{where}: holds {what} (dtype {dtype}); the model takes numbers "
                         "(integers or floats)")


# what an array whose dtype is not numbers holds, in words (by dtype kind)
_DTYPE_KINDS = {"O": "Python objects, which are never loaded", "U": "text", "S": "bytes",
                "V": "records or raw bytes", "c": "complex numbers", "M": "dates",
                "m": "time spans"}


# the .npy header readers by format version (3.0 is 2.0 with UTF-8 field names: records)
_NPY_HEADERS = {(1, 0): _npy.read_array_header_1_0, (2, 0): _npy.read_array_header_2_0}


def _is_population(folder: Path) -> bool:
    """Whether ``folder`` holds a population run's ``metrics.json``."""
    try:
        return "members" in json.loads((folder / "metrics.json").read_text())
    except (OSError, ValueError, TypeError):
        return False


def _generic_names(d: int) -> list[str]:
    return [f"x{j}" for j in range(d)]


def _sigmoid(z):
    return 0.5 * (1 + np.tanh(0.5 * z))


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)
