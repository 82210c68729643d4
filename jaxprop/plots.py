"""Plots for training runs and evaluations (matplotlib, Agg backend; no display needed, no
pyplot state).

Each function returns its :class:`~matplotlib.figure.Figure` and writes it as PNG to ``path``
when one is given.
"""

from __future__ import annotations

from typing import Callable

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D


def _figure(size=(6, 4)) -> Figure:
    fig = Figure(figsize=size, dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _saved(fig: Figure, path) -> Figure:
    """``fig``, laid out, and written as PNG to ``path`` unless it is ``None``."""
    fig.tight_layout()
    if path is not None:
        fig.savefig(path)
    return fig


def loss_label(loss, standardised: bool | None = None) -> str:
    """The loss axis's label from the loss's own facts: its name, how it adds up the examples
    and, for a regression (``standardised`` not ``None``), the targets' units:
    ``"sse_half (summed over examples, standardised targets)"``.

    Args:
      loss: a :class:`~jaxprop.Loss` (its ``name`` and ``reduction``).
      standardised: ``True``: the targets were standardised for training; ``False``: in the
        data's units; ``None``: not a regression (no units named).

    Returns:
      the label.
    """
    parts = [_REDUCTION_WORDS.get(loss.reduction, loss.reduction)]
    if standardised is not None:
        parts.append("standardised targets" if standardised else "targets in data units")
    return f"{loss.name} ({', '.join(parts)})"


# how each reduction (jaxprop.core.losses.REDUCTIONS) adds up the examples, in words
_REDUCTION_WORDS = {"sum": "summed over examples", "mean_rows": "mean per example",
                    "mean_all": "mean per value"}


def loss_curve(losses, path=None, *, records=None, title: str = "training loss",
               ylabel: str = "loss") -> Figure:
    """Per-epoch training loss and the test loss at each logged epoch.

    The loss axis is on a log scale when every finite loss is positive.

    Args:
      losses: the training loss of every epoch, ``(epochs,)``.
      path: the PNG file to write, or ``None`` for none.
      records: the history's host-sync dicts; those with ``"test_loss"`` give the test loss at
        their ``"epoch"``. ``None`` for no test curve.
      title: the plot's title.
      ylabel: the loss axis's label: the loss and its units (see :func:`loss_label`).

    Returns:
      the :class:`~matplotlib.figure.Figure` (saved as PNG to ``path`` when given).
    """
    losses = np.asarray(losses, dtype=float)
    fig = _figure()
    ax = fig.add_subplot()
    epochs = np.arange(1, losses.size + 1)
    ax.plot(epochs, losses, lw=1, label="train (per epoch)")
    if records and any("test_loss" in r for r in records):
        rs = [r for r in records if "test_loss" in r]
        ax.plot([r["epoch"] for r in rs], [r["test_loss"] for r in rs], "o-", ms=3,
                label="test")
    if losses.size and np.all(losses[np.isfinite(losses)] > 0):
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()
    ax.grid(alpha=0.3)
    return _saved(fig, path)


def decision_boundary(predict: Callable, x, labels, path=None, *, x_test=None,
                      labels_test=None, title: str = "decision boundary",
                      resolution: int = 200, feature_names=None, class_names=None) -> Figure:
    """Colour the plane by ``predict(points) -> class index (n,)`` and scatter the data.

    ``x: (n, 2)``, ``labels: (n,)``; the plane covers the training and test points with a 10%
    margin. The axes are labelled with the feature names and the legend names each class
    (its training points), then the test points.

    Args:
      predict: ``predict(points) -> class index (n,)`` for ``points: (n, 2)`` in ``x``'s dtype.
      x: the training inputs (2-D, else ``ValueError``).
      labels: their class indices.
      path: the PNG file to write, or ``None`` for none.
      x_test: the test inputs ``(m, 2)``, drawn as crosses; ``None`` for none.
      labels_test: their class indices.
      title: the plot's title.
      resolution: grid points along each axis of the plane.
      feature_names: the two axes' names; ``None``: ``"x1"``, ``"x2"``.
      class_names: the name of each class index; ``None``: ``"class 0"``, ``"class 1"``, ...

    Returns:
      the :class:`~matplotlib.figure.Figure` (saved as PNG to ``path`` when given).
    """
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] != 2:
        raise ValueError(f"decision_boundary needs 2-D inputs, got shape {x.shape}")
    pts = x if x_test is None else np.concatenate([x, np.asarray(x_test)])
    lo, hi = pts.min(0), pts.max(0)
    pad = 0.1 * np.maximum(hi - lo, 1e-6)
    g0 = np.linspace(lo[0] - pad[0], hi[0] + pad[0], resolution)
    g1 = np.linspace(lo[1] - pad[1], hi[1] + pad[1], resolution)
    xx, yy = np.meshgrid(g0, g1)
    grid = np.stack([xx.ravel(), yy.ravel()], 1).astype(x.dtype)
    zz = np.asarray(predict(grid)).reshape(xx.shape)
    labels = np.asarray(labels)
    top = int(max(zz.max(), np.max(labels), 1 if labels_test is None else np.max(labels_test)))
    color = dict(cmap="coolwarm", vmin=0, vmax=max(top, 1))  # the same colour for a class
    cmap = matplotlib.colormaps["coolwarm"]
    fig = _figure((5.5, 5))
    ax = fig.add_subplot()
    ax.contourf(xx, yy, zz, alpha=0.3, levels=np.arange(top + 2) - 0.5, **color)
    for k in np.unique(labels):
        name = class_names[k] if class_names is not None and k < len(class_names) \
            else f"class {k}"
        ax.scatter(x[labels == k, 0], x[labels == k, 1], color=cmap(k / max(top, 1)), s=12,
                   edgecolors="k", lw=0.3, label=str(name))
    handles, _ = ax.get_legend_handles_labels()
    if x_test is not None:
        ax.scatter(x_test[:, 0], x_test[:, 1], c=labels_test, s=20, marker="x", **color)
        handles.append(Line2D([], [], color="0.3", marker="x", ls="", label="test"))
    names = ("x1", "x2") if feature_names is None else tuple(feature_names)
    ax.set_xlabel(names[0])
    ax.set_ylabel(names[1])
    ax.set_title(title)
    ax.legend(handles=handles, loc="best", framealpha=0.6)
    return _saved(fig, path)


def population_histogram(result, path=None, *, title: str | None = None) -> Figure:
    """Histogram of a population's final losses (log-spaced bins; one stacked colour per
    learning rate when several), from a :class:`~jaxprop.scale.population.PopulationResult`.

    Diverged members (NaN/Inf loss) are left out of the bars and counted in the title. Returns
    the :class:`~matplotlib.figure.Figure` (saved as PNG to ``path`` when given).
    """
    losses = np.asarray(result.final_loss, dtype=np.float64)
    finite = losses[np.isfinite(losses)]
    fig = _figure()
    ax = fig.add_subplot()
    if finite.size:
        lo, hi = max(finite.min(), 1e-12), max(finite.max(), 1e-12)
        bins = np.geomspace(lo, hi * (1 + 1e-9), 40) if hi > lo * 1.01 else 40
        lrs = None if result.lrs is None else np.asarray(result.lrs)
        ok = np.isfinite(losses)
        if lrs is not None and len(np.unique(lrs)) > 1:
            groups = [np.clip(losses[ok & (lrs == lr)], 1e-12, None) for lr in np.unique(lrs)]
            ax.hist(groups, bins=bins, stacked=True, label=[f"lr {lr:g}" for lr in np.unique(lrs)])
            ax.legend()
        else:
            ax.hist(np.clip(finite, 1e-12, None), bins=bins, color="tab:blue")
        if not isinstance(bins, int):
            ax.set_xscale("log")
    ax.set_xlabel("final training loss")
    ax.set_ylabel("members")
    n, bad = losses.size, losses.size - finite.size
    solved = int(result.solved.sum())
    ax.set_title(title or f"{n} networks: {solved} solved"
                 + (f", {bad} diverged" if bad else ""))
    return _saved(fig, path)


def confusion_matrix(matrix, path=None, *, class_names=None,
                     title: str = "confusion matrix") -> Figure:
    """The confusion matrix as an image with the count in each cell.

    Args:
      matrix: ``(k, k)`` counts, rows the true classes and columns the predicted ones.
      path: the PNG file to write, or ``None`` for none.
      class_names: the name of each class; ``None``: ``"0"``, ``"1"``, ...
      title: the plot's title.

    Returns:
      the :class:`~matplotlib.figure.Figure` (saved as PNG to ``path`` when given).
    """
    matrix = np.asarray(matrix)
    k = matrix.shape[0]
    names = [str(c) for c in class_names] if class_names is not None else [str(i)
                                                                           for i in range(k)]
    side = min(3 + 0.45 * k, 14)
    fig = _figure((side + 1, side))
    ax = fig.add_subplot()
    image = ax.imshow(matrix, cmap="Blues", vmin=0)
    fig.colorbar(image, ax=ax, label="examples")
    dark = matrix.max() / 2 if matrix.size else 0
    for i in range(k):
        for j in range(k):
            ax.text(j, i, str(int(matrix[i, j])), ha="center", va="center", fontsize=8,
                    color="white" if matrix[i, j] > dark else "black")
    ax.set_xticks(range(k), names, rotation=45 if max(map(len, names), default=0) > 3 else 0)
    ax.set_yticks(range(k), names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    return _saved(fig, path)


def predicted_vs_actual(predicted, actual, path=None, *, names=None,
                        title: str = "predicted vs actual") -> Figure:
    """A scatter of predictions against the true values, with the line ``y = x``.

    Args:
      predicted: ``(n,)`` or ``(n, out)`` predictions.
      actual: the true values, the same shape.
      path: the PNG file to write, or ``None`` for none.
      names: one name per output (the axes say ``actual <name>``/``predicted <name>`` for one
        output; several are told apart by the legend); ``None``: no names.
      title: the plot's title.

    Returns:
      the :class:`~matplotlib.figure.Figure` (saved as PNG to ``path`` when given).
    """
    predicted = np.asarray(predicted, np.float64)
    actual = np.asarray(actual, np.float64)
    if predicted.ndim == 1:
        predicted, actual = predicted[:, None], actual[:, None]
    if predicted.shape != actual.shape:
        raise ValueError(f"predicted_vs_actual: predictions of shape {predicted.shape} but "
                         f"true values of shape {actual.shape}")
    outputs = predicted.shape[1]
    fig = _figure((5.5, 5))
    ax = fig.add_subplot()
    for j in range(outputs):
        label = names[j] if names is not None and outputs > 1 else None
        ax.scatter(actual[:, j], predicted[:, j], s=12, alpha=0.7, label=label)
    both = np.concatenate([predicted.ravel(), actual.ravel()])
    lo, hi = (both.min(), both.max()) if both.size else (0.0, 1.0)
    ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="y = x")
    what = f" {names[0]}" if names is not None and outputs == 1 else ""
    ax.set_xlabel(f"actual{what}")
    ax.set_ylabel(f"predicted{what}")
    ax.set_title(title)
    ax.legend(loc="best", framealpha=0.6)
    ax.grid(alpha=0.3)
    return _saved(fig, path)
