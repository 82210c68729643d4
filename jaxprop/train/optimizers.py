"""Optimizers by name: the registry the CLI, populations and ``fit`` share (optax does the work).

Each entry is an optax alias that takes ``learning_rate``, so a population can give every member
its own rate through ``optax.inject_hyperparams``.
"""

from __future__ import annotations

from functools import partial
from typing import Callable

import optax

from jaxprop.core.cache import remember
from jaxprop.core.registry import lookup
from jaxprop.core.validate import is_number

OPTIMIZERS: dict[str, Callable[..., optax.GradientTransformation]] = {
    "sgd": optax.sgd,
    "momentum": partial(optax.sgd, momentum=0.9),
    "adam": optax.adam,
    "adamw": optax.adamw,
}


def optimizer_alias(name: str) -> Callable[..., optax.GradientTransformation]:
    """The optax alias registered as ``name`` (call it with ``learning_rate``)."""
    return lookup(OPTIMIZERS, name, "optimizer")


def get_optimizer(name: str, learning_rate: float) -> optax.GradientTransformation:
    """The optimizer registered as ``name`` at ``learning_rate``."""
    return optimizer_alias(name)(learning_rate)


def as_optimizer(optimizer) -> optax.GradientTransformation:
    """An optax optimizer; a number is the learning rate of plain gradient descent."""
    if isinstance(optimizer, optax.GradientTransformation):
        return optimizer
    if is_number(optimizer) and optimizer > 0:
        return _sgd(float(optimizer))
    raise ValueError(
        f"optimizer must be an optax GradientTransformation or a positive learning rate, "
        f"got {optimizer!r}"
    )


@remember(maxsize=64)
def _sgd(learning_rate: float) -> optax.GradientTransformation:
    # one object per rate, so repeated fit calls with the same number reuse their compiled code
    return optax.sgd(learning_rate)
