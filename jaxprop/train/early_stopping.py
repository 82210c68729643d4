"""Early stopping: watch a held-out loss after each chunk, keep the best state, stop when it
no longer improves.

``fit_state(..., early_stopping=5)`` or ``early_stopping=EarlyStopping(5, min_delta=1e-3)``.
The loss is checked when the host sees it, after each compiled chunk (``log_every`` epochs; 1
by default when early stopping is on), so the best epoch is a chunk's last epoch and training
stops at the first chunk that ends ``patience`` or more epochs after it.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from jaxprop.core.validate import check_int, check_number, is_int

# The losses early stopping can watch: those of the held-out data fit evaluates after a chunk.
MONITORS = ("val_loss", "test_loss")


class EarlyStopping(NamedTuple):
    """Stop training when ``monitor`` has not fallen by more than ``min_delta`` for
    ``patience`` epochs; training returns the state of the best epoch.

    ``monitor``: ``"val_loss"`` (a Dataset's validation split,
    :func:`jaxprop.data.validation_split`) or ``"test_loss"`` (the test data); ``None``: the
    validation loss when there is a validation split, else the test loss.
    """

    patience: int
    min_delta: float = 0.0
    monitor: str | None = None


class Best(NamedTuple):
    """The best epoch so far: its number, the monitored loss and the state at its end (to
    continue a run's early stopping: ``fit_state(..., best=...)``)."""

    epoch: int
    value: float
    state: Any


def as_early_stopping(value) -> EarlyStopping | None:
    """``value`` as a checked :class:`EarlyStopping`: a patience (int), the record itself, or
    ``None`` (off). ``ValueError`` for anything else or a bad field."""
    if value is None:
        return None
    if is_int(value):
        value = EarlyStopping(int(value))
    if not isinstance(value, EarlyStopping):
        raise ValueError(f"early_stopping must be a patience (a positive integer) or an "
                         f"EarlyStopping, got {value!r}")
    patience = check_int("early stopping patience", value.patience, minimum=1)
    min_delta = check_number("early stopping min_delta", value.min_delta, minimum=0.0)
    if value.monitor is not None and value.monitor not in MONITORS:
        raise ValueError(f"early stopping monitors {' or '.join(MONITORS)}, not "
                         f"{value.monitor!r}")
    return EarlyStopping(patience, min_delta, value.monitor)


def monitored(rule: EarlyStopping, held_out: str | None) -> str:
    """The record key ``rule`` watches when fit evaluates the ``held_out`` data (``"val"``,
    ``"test"`` or ``None``); ``ValueError`` when there is none to watch."""
    if held_out is None:
        raise ValueError("early stopping watches a held-out loss, but there is no validation "
                         "or test data: pass (x, t, x_test, t_test) or a Dataset (with "
                         "jaxprop.data.validation_split for a validation set)")
    monitor = rule.monitor or f"{held_out}_loss"
    if monitor != f"{held_out}_loss":
        raise ValueError(f"early stopping monitors {monitor!r}, but fit evaluates "
                         f"{held_out}_loss (the data has "
                         f"{'a validation split' if held_out == 'val' else 'no validation split'})")
    return monitor


class Tracker:
    """The best epoch so far and whether to stop, updated after each chunk."""

    def __init__(self, rule: EarlyStopping, monitor: str, best: Best | None = None):
        self.rule, self.monitor, self.best = rule, monitor, best

    def update(self, record: dict, state) -> bool:
        """Note a chunk's ``record`` (with ``state``, its end, safe to keep); add
        ``best_epoch`` (and ``stopped_early``) to it; whether training should stop."""
        value, epoch = record[self.monitor], record["epoch"]
        if self.best is None or (math.isfinite(value) and (
                not math.isfinite(self.best.value)
                or value < self.best.value - self.rule.min_delta)):
            self.best = Best(epoch, value, state)
        record["best_epoch"] = self.best.epoch
        stop = epoch - self.best.epoch >= self.rule.patience
        if stop:
            record["stopped_early"] = True
        return stop
