"""Plots for training runs (matplotlib, Agg backend; no display needed, no pyplot state)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def _figure(size=(6, 4)) -> Figure:
    fig = Figure(figsize=size, dpi=100)
    FigureCanvasAgg(fig)
    return fig


def loss_curve(losses, path, *, records=None, title: str = "training loss") -> Path:
    """Per-epoch training loss and the test loss at each logged epoch, saved as PNG to ``path``.

    The loss axis is on a log scale when every finite loss is positive.

    Args:
      losses: the training loss of every epoch, ``(epochs,)``.
      path: the PNG file to write.
      records: the history's host-sync dicts; those with ``"test_loss"`` give the test loss at
        their ``"epoch"``. ``None`` for no test curve.
      title: the plot's title.

    Returns:
      ``path`` as a :class:`~pathlib.Path`.
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
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    return Path(path)


def decision_boundary(predict: Callable, x, labels, path, *, x_test=None, labels_test=None,
                      title: str = "decision boundary", resolution: int = 200) -> Path:
    """Colour the plane by ``predict(points) -> class index (n,)`` and scatter the data.

    ``x: (n, 2)``, ``labels: (n,)``; the plane covers the training and test points with a 10%
    margin. Saved as PNG to ``path``.

    Args:
      predict: ``predict(points) -> class index (n,)`` for ``points: (n, 2)`` in ``x``'s dtype.
      x: the training inputs (2-D, else ``ValueError``).
      labels: their class indices.
      path: the PNG file to write.
      x_test: the test inputs ``(m, 2)``, drawn as crosses; ``None`` for none.
      labels_test: their class indices.
      title: the plot's title.
      resolution: grid points along each axis of the plane.

    Returns:
      ``path`` as a :class:`~pathlib.Path`.
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
    top = int(max(zz.max(), np.max(labels), 1 if labels_test is None else np.max(labels_test)))
    color = dict(cmap="coolwarm", vmin=0, vmax=max(top, 1))  # the same colour for a class
    fig = _figure((5.5, 5))
    ax = fig.add_subplot()
    ax.contourf(xx, yy, zz, alpha=0.3, levels=np.arange(top + 2) - 0.5, **color)
    ax.scatter(x[:, 0], x[:, 1], c=labels, s=12, edgecolors="k", lw=0.3, label="train", **color)
    if x_test is not None:
        ax.scatter(x_test[:, 0], x_test[:, 1], c=labels_test, s=20, marker="x", label="test",
                   **color)
    ax.set_title(title)
    ax.legend(loc="best", framealpha=0.6)
    fig.tight_layout()
    fig.savefig(path)
    return Path(path)


def population_histogram(result, path, *, title: str | None = None) -> Path:
    """Histogram of a population's final losses (log-spaced bins; one stacked colour per
    learning rate when several), from a :class:`~jaxprop.scale.population.PopulationResult`.

    Diverged members (NaN/Inf loss) are left out of the bars and counted in the title.
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
    fig.tight_layout()
    fig.savefig(path)
    return Path(path)
