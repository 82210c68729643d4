"""Optimizers and learning-rate schedules by name: the registries the CLI, populations and
``fit`` share (optax does the work).

Each ``OPTIMIZERS`` entry is an optax alias that takes ``learning_rate``, so a population can
give every member its own rate through ``optax.inject_hyperparams``. Each ``SCHEDULES`` entry
(:class:`Schedule`) builds an optax schedule of the optimizer's step count.
:func:`make_optimizer` is the one way the CLI builds its optimizer: an alias, a schedule and
weight decay (decoupled, AdamW, for ``adam``/``adamw``: ``optax.adamw``; for ``sgd`` and
``momentum`` added to the gradient before the update, as an L2 penalty would be:
``optax.add_decayed_weights`` chained in front).
"""

from __future__ import annotations

from functools import partial
from typing import Callable, NamedTuple

import optax

from jaxprop.core.cache import remember
from jaxprop.core.registry import lookup
from jaxprop.core.validate import check_int, check_number, is_number

OPTIMIZERS: dict[str, Callable[..., optax.GradientTransformation]] = {
    "sgd": optax.sgd,
    "momentum": partial(optax.sgd, momentum=0.9),
    "adam": optax.adam,
    "adamw": optax.adamw,
}
# The optimizers whose weight decay is decoupled from the gradient (AdamW), by the alias that
# takes ``weight_decay``; the others get optax.add_decayed_weights chained in front.
DECOUPLED_WEIGHT_DECAY: dict[str, Callable[..., optax.GradientTransformation]] = {
    "adam": optax.adamw,
    "adamw": optax.adamw,
}


class Schedule(NamedTuple):
    """A learning-rate schedule by name: its builder and its facts.

    ``build(peak, warmup_steps, total_steps, final)`` returns the rate: a number (constant) or
    an optax schedule of the step count; ``final`` is the rate at ``total_steps`` as a
    fraction of ``peak``. ``warmup``: whether it takes warmup steps (from 0 up to ``peak``).
    ``final``: the default final fraction; ``None`` for a schedule that does not decay.
    """

    build: Callable[[float, int, int, float], float | optax.Schedule]
    warmup: bool = False
    final: float | None = 0.0


def _constant(peak, warmup_steps, total_steps, final):
    del warmup_steps, total_steps, final
    return peak  # a number: the optimizer's state is that of a plain rate


def _cosine(peak, warmup_steps, total_steps, final):
    del warmup_steps
    return optax.cosine_decay_schedule(peak, total_steps, alpha=final)


def _warmup_cosine(peak, warmup_steps, total_steps, final):
    return optax.warmup_cosine_decay_schedule(0.0, peak, warmup_steps, total_steps,
                                              end_value=final * peak)


def _exponential(peak, warmup_steps, total_steps, final):
    del warmup_steps
    if final <= 0:  # optax reads a rate of 0 as no decay at all
        raise ValueError("the exponential schedule decays to final_fraction x the learning "
                         f"rate, which must be positive; got final_fraction={final}")
    return optax.exponential_decay(peak, total_steps, final)


SCHEDULES: dict[str, Schedule] = {
    "constant": Schedule(_constant, final=None),
    "cosine": Schedule(_cosine),
    "warmup-cosine": Schedule(_warmup_cosine, warmup=True),
    "exponential": Schedule(_exponential, final=0.1),
}


def optimizer_alias(name: str) -> Callable[..., optax.GradientTransformation]:
    """The optax alias registered as ``name`` (call it with ``learning_rate``)."""
    return lookup(OPTIMIZERS, name, "optimizer")


def get_schedule(name: str) -> Schedule:
    """The :class:`Schedule` registered as ``name``."""
    return lookup(SCHEDULES, name, "learning-rate schedule")


def make_schedule(name: str, learning_rate: float, *, warmup_steps: int = 0,
                  total_steps: int | None = None, final_fraction: float | None = None):
    """The learning rate of schedule ``name`` peaking at ``learning_rate``: a number for
    ``constant``, else an optax schedule of the optimizer's step count.

    ``cosine`` decays from ``learning_rate`` to ``final_fraction x learning_rate`` at
    ``total_steps`` (``optax.cosine_decay_schedule``); ``warmup-cosine`` first rises linearly
    from 0 over ``warmup_steps`` (``optax.warmup_cosine_decay_schedule``); ``exponential``
    multiplies the rate by ``final_fraction`` over ``total_steps``, smoothly
    (``optax.exponential_decay``). Raises ``ValueError`` for an unknown name or a bad value.

    Args:
      name: a key of ``SCHEDULES``.
      learning_rate: the peak (initial) rate, positive.
      warmup_steps: steps of linear warmup (schedules that take one; less than
        ``total_steps``).
      total_steps: the steps the schedule spans (required unless ``constant``): epochs x
        :func:`~jaxprop.train.step.steps_per_epoch`.
      final_fraction: the rate at ``total_steps`` as a fraction of ``learning_rate``, in
        ``[0, 1]``; ``None``: the schedule's default (``Schedule.final``: 0 for the cosines,
        0.1 for ``exponential``).

    Returns:
      a number or an optax schedule (the same object for the same arguments).
    """
    schedule = get_schedule(name)
    peak = check_number("learning_rate", learning_rate)
    if peak <= 0:
        raise ValueError(f"learning_rate must be positive, got {learning_rate!r}")
    warmup_steps = check_int("warmup_steps", warmup_steps, minimum=0)
    if warmup_steps and not schedule.warmup:
        takes = [n for n, s in SCHEDULES.items() if s.warmup]
        raise ValueError(f"the {name} schedule takes no warmup; warmup_steps apply to "
                         f"{', '.join(takes)}")
    if schedule.final is None:
        if final_fraction is not None:
            raise ValueError(f"the {name} schedule does not decay; final_fraction applies to "
                             "a decaying schedule")
        return peak
    final = schedule.final if final_fraction is None else check_number(
        "final_fraction", final_fraction, minimum=0.0, maximum=1.0)
    if total_steps is None:
        raise ValueError(f"the {name} schedule needs total_steps (epochs x steps per epoch)")
    total_steps = check_int("total_steps", total_steps, minimum=1)
    if warmup_steps >= total_steps:
        raise ValueError(f"warmup_steps={warmup_steps} must be fewer than "
                         f"total_steps={total_steps}")
    return _built(name, peak, warmup_steps, total_steps, float(final))


@remember(maxsize=64)
def _built(name, peak, warmup_steps, total_steps, final):
    # one object per set of arguments, so repeated fit calls reuse their compiled code
    return SCHEDULES[name].build(peak, warmup_steps, total_steps, final)


def make_optimizer(name: str, learning_rate, *, schedule: str = "constant",
                   warmup_steps: int = 0, total_steps: int | None = None,
                   final_fraction: float | None = None,
                   weight_decay: float | None = None) -> optax.GradientTransformation:
    """The optimizer registered as ``name``, its learning rate shaped by ``schedule``, with
    weight decay: the optimizer ``jaxprop train`` builds from its options.

    Weight decay is decoupled (AdamW, ``optax.adamw``) for the optimizers in
    ``DECOUPLED_WEIGHT_DECAY`` (``adam``, ``adamw``); for the others (``sgd``, ``momentum``)
    ``weight_decay x params`` is added to the gradient before the update
    (``optax.add_decayed_weights``: an L2 penalty, as PyTorch's SGD does it).

    Args:
      name: a key of ``OPTIMIZERS``.
      learning_rate: the peak rate (a positive number, shaped by ``schedule``), or an optax
        schedule of your own (then ``schedule`` stays ``"constant"``).
      schedule: a key of ``SCHEDULES`` (:func:`make_schedule`).
      warmup_steps, total_steps, final_fraction: :func:`make_schedule`'s.
      weight_decay: a non-negative number; ``None``: the optimizer's own (none, but optax's
        ``1e-4`` for ``adamw``).

    Returns:
      the optax optimizer (the same object for the same arguments).
    """
    alias = optimizer_alias(name)
    if callable(learning_rate):
        if schedule != "constant":
            raise ValueError("learning_rate is already a schedule; leave schedule='constant'")
        rate = learning_rate
    else:
        rate = make_schedule(schedule, learning_rate, warmup_steps=warmup_steps,
                             total_steps=total_steps, final_fraction=final_fraction)
    if weight_decay is not None:
        weight_decay = check_number("weight_decay", weight_decay, minimum=0.0)
    return _optimizer(name, alias, rate, weight_decay)


@remember(maxsize=64)
def _optimizer(name, alias, rate, weight_decay) -> optax.GradientTransformation:
    if weight_decay is None:
        return alias(rate)
    if name in DECOUPLED_WEIGHT_DECAY:
        return DECOUPLED_WEIGHT_DECAY[name](rate, weight_decay=weight_decay)
    return optax.chain(optax.add_decayed_weights(weight_decay), alias(rate))


def get_optimizer(name: str, learning_rate: float) -> optax.GradientTransformation:
    """The optimizer registered as ``name`` at a constant ``learning_rate``
    (:func:`make_optimizer` without a schedule or weight decay)."""
    return make_optimizer(name, learning_rate)


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
