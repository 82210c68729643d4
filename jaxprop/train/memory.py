"""How much memory training needs, from shapes alone, and a clear refusal when it cannot fit.

A model too large for the machine would otherwise be found out by XLA (an allocation failure
after minutes of compiling) or by the operating system (a swap storm, a process that ignores
SIGTERM while it pages). :func:`training_bytes` traces ``init`` and ``forward`` with
``jax.eval_shape`` (nothing is allocated, nothing compiled) and :func:`check_fits` compares the
estimate with the memory the device has free (:func:`jaxprop.device.device_memory_bytes`: a
GPU's limit, or the host's available memory under any ``ulimit -v``).

The estimate, per network: the params four times (params, gradients, updates, the donated
copy), the optimizer state, three times what the forward keeps for the backward (its
residuals and output) on one minibatch, and the evaluation's largest activation on the whole
training or test set. It errs high by design: it refuses what cannot fit, not what might.
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxprop.core.cache import remember
from jaxprop.device import device_memory_bytes, gib


class InsufficientMemory(ValueError):
    """Training (or checking) would need more memory than the device has free.

    ``need`` and ``have`` are the estimate and the free memory in bytes.
    """

    def __init__(self, message: str, need: int, have: int):
        super().__init__(message)
        self.need, self.have = need, have


def nbytes(tree) -> int:
    """The bytes of every array (or ``ShapeDtypeStruct``) leaf of ``tree``."""
    return sum(math.prod(a.shape) * np.dtype(a.dtype).itemsize
               for a in jax.tree.leaves(tree) if hasattr(a, "shape")
               and not jnp.issubdtype(a.dtype, jax.dtypes.prng_key))


@remember(maxsize=64)
def _shapes(model, optimizer, in_shape: tuple, dtype: str):
    # (the key is made inside the trace: nothing runs on the device)
    params, state, _ = jax.eval_shape(lambda: model.init(jax.random.key(0), in_shape))
    opt_state = jax.eval_shape(optimizer.init, params)
    return params, state, opt_state


@remember(maxsize=64)
def _activation_bytes(model, optimizer, in_shape: tuple, dtype: str, batch: int):
    """``(kept, largest)``: the bytes the forward keeps for the backward (residuals and output)
    on ``batch`` examples, and its largest single array."""
    params, state, _ = _shapes(model, optimizer, in_shape, dtype)
    x = jax.ShapeDtypeStruct((batch, *in_shape), jnp.int32 if getattr(
        model, "integer_inputs", None) else jnp.dtype(dtype))  # token ids, or the data's
    y, residuals, _ = jax.eval_shape(
        lambda p, s, x_: model.forward(p, s, x_, train=True), params, state, x)
    leaves = [a for a in jax.tree.leaves((y, residuals, x)) if hasattr(a, "shape")]
    return nbytes(leaves), max((nbytes(a) for a in leaves), default=0)


def training_bytes(model, optimizer, in_shape: Sequence[int], batch: int,
                   eval_examples: int = 0, *, dtype=jnp.float32) -> int:
    """About how many bytes training one network needs (module docstring); nothing is allocated.

    Args:
      model: the model.
      optimizer: the optax optimizer (its state is counted).
      in_shape: one example's shape.
      batch: examples per step.
      eval_examples: the most examples one evaluation takes at once (the training or test
        set); 0 for none.
      dtype: the inputs' dtype (int32 token ids for a model on ``integer_inputs``, whatever it
        says).

    Returns:
      the estimate in bytes.
    """
    in_shape, dtype = tuple(int(d) for d in in_shape), jnp.dtype(dtype).name
    params, state, opt_state = _shapes(model, optimizer, in_shape, dtype)
    kept, _ = _activation_bytes(model, optimizer, in_shape, dtype, max(int(batch), 1))
    need = 4 * nbytes(params) + nbytes(opt_state) + nbytes(state) + 3 * kept
    if eval_examples:
        # one example's largest array, times the examples (shapes scale with the batch)
        _, largest = _activation_bytes(model, optimizer, in_shape, dtype, 1)
        need += 2 * largest * int(eval_examples)
    return need


def check_fits(need: int, what: str, advice: str) -> None:
    """:class:`InsufficientMemory` when ``need`` bytes exceed what the device has free (nothing
    is checked when that is unknown).

    Args:
      need: the estimate in bytes.
      what: what needs it, e.g. ``"training this model"``.
      advice: what to do instead, e.g. ``"use smaller layers or minibatches"``.
    """
    have = device_memory_bytes()
    if have is not None and need > have:
        platform = jax.devices()[0].platform
        raise InsufficientMemory(
            f"out of memory: {what} needs about {gib(need)}, more than the {gib(have)} this "
            f"{platform} has free; {advice}", need, have)


def check_training_fits(model, optimizer, in_shape, n_examples: int, batch_size: int | None,
                        eval_examples: int = 0, *, dtype=jnp.float32, n: int = 1,
                        what: str | None = None) -> None:
    """:class:`InsufficientMemory` when training ``n`` networks (one by default) on
    ``n_examples`` examples would not fit (:func:`training_bytes`, :func:`check_fits`).

    Args:
      model: the model.
      optimizer: the optax optimizer.
      in_shape: one example's shape.
      n_examples: training examples.
      batch_size: examples per minibatch; ``None`` for full batch.
      eval_examples: the most examples one evaluation takes (default: ``n_examples``).
      dtype: the inputs' dtype.
      n: networks trained at once (a population).
      what: how the message names the job.
    """
    batch = n_examples if batch_size is None else min(batch_size, n_examples)
    need = n * training_bytes(model, optimizer, in_shape, batch,
                              eval_examples or n_examples, dtype=dtype)
    check_fits(need, what or "training this model", "use fewer or smaller layers, smaller "
               "minibatches (--batch-size)" + (", or fewer networks at once" if n > 1 else ""))
