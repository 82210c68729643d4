"""The training step and the loops around it: pure functions, jit, ``vmap`` or ``scan`` them.

::

    make_train_step(model, loss, optimizer)  -> step(params, opt_state, model_state, x, t, key
                                                     [, mask]) -> (params, opt_state,
                                                                   model_state, loss)
    make_epoch_fn(model, loss, optimizer, n_examples, batch_size=None, drop_last=False)
                                              -> epoch(params, opt_state, model_state, x, t,
                                                       run_key, epoch) -> (..., epoch_loss)
    make_train_epochs(...)                    -> train_epochs(state, x, t, n_epochs)
                                                     -> (state, losses: (n_epochs,))
    init_state(model, optimizer, key)         -> TrainState(params, opt_state, key, epoch,
                                                            model_state)

This is the one training step of jaxprop: ``fit``, populations, data parallel training and the
benchmarks all run it.

**Keys.** ``TrainState.key`` (the run key) never changes. Epoch ``e`` (0-based) shuffles with
``fold_in(run_key, e)``; step ``s`` of the run (counted over all epochs) gives its layers
``fold_in(fold_in(run_key, STEP_STREAM), s)`` (Dropout masks). A run stopped after epoch ``k``
and resumed from its checkpoint therefore draws exactly the numbers of the uninterrupted run.

**Ragged last minibatch.** With ``n`` examples and batch size ``B`` an epoch has ``ceil(n / B)``
steps; the index list is padded (wrapping around the permutation) to a whole number of batches
and a 0/1 mask marks the real rows, so every step has the same shape and nothing recompiles.
``drop_last=True`` drops the ragged batch instead. The masked gradient keeps the ``Loss``
protocol untouched: each padded batch is scored row by row (the loss applied to each row as a
batch of one, via ``vmap``), the rows' values and output gradients are multiplied by the mask,
and then summed (``reduction="sum"``) or divided by the number of real rows (the means). That is
exactly the loss and the gradient of the un-padded batch. A model whose layers couple the
examples of a batch (BatchNorm) cannot be trained on padded batches: use ``drop_last=True`` or a
batch size that divides the data.
"""

from __future__ import annotations

import operator
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxprop.core.backprop import loss_grad_state_fn
from jaxprop.core.layers import Layer
from jaxprop.core.losses import Loss, get_loss
from jaxprop.core.cache import remember
from jaxprop.core.validate import is_int
from jaxprop.train.compile import FAST_COMPILE, CompiledPrograms
from jaxprop.train.precision import Precision, get_precision

Array = jax.Array

# fold_in(run_key, STEP_STREAM) roots the per-step keys; epochs (which key the shuffles) never
# reach this value, so the two streams never share a key.
STEP_STREAM = 0xFFFFFFFF


def key_from_seed(seed) -> Array:
    """``jax.random.key(seed)``, made on the host: the same key, without the device program
    that ``jax.random.key`` compiles on its first call (50 ms: a fifth of ``jaxprop train``'s
    XOR run). For JAX's default threefry keys and a seed ``0 <= s < 2**32``,
    ``key_data(jax.random.key(s))`` is ``(0, s)`` (checked by the tests); other key
    implementations and seeds go through ``jax.random.key``.

    Args:
      seed: a non-negative int, or an array of them (one key each, like
        ``jax.vmap(jax.random.key)(seeds)``).

    Returns:
      the typed PRNG key (an array of keys for an array of seeds).
    """
    if np.ndim(seed) == 0:
        seed = operator.index(seed)
        fits = 0 <= seed < 2 ** 32
    else:
        seed = np.asarray(seed)
        if not np.issubdtype(seed.dtype, np.integer):
            raise TypeError(f"key_from_seed: seeds must be integers, got {seed.dtype}")
        fits = seed.size > 0 and seed.min() >= 0 and seed.max() < 2 ** 32
    if jax.config.jax_default_prng_impl != "threefry2x32" or not fits:
        return jax.random.key(seed) if np.ndim(seed) == 0 else jax.vmap(jax.random.key)(seed)
    seed = np.asarray(seed, np.uint32)
    return jax.random.wrap_key_data(np.stack([np.zeros_like(seed), seed], axis=-1),
                                    impl="threefry2x32")


class TrainState(NamedTuple):
    """Everything that evolves during training; a pytree (vmap it to train many networks).

    ``key`` is the run's base PRNG key (see the module docstring); ``epoch`` counts finished
    epochs (int32 scalar); ``model_state`` is the model's per-layer state list (``()`` entries
    for layers without state).
    """

    params: Any
    opt_state: Any
    key: Array
    epoch: Array
    model_state: Any = ()


# --------------------------------------------------------------------------------------------
# Initialisation


def init_state(model: Layer, optimizer: optax.GradientTransformation, key: Array, params=None,
               *, in_shape=None) -> TrainState:
    """A fresh :class:`TrainState`: params, model state and optimizer state, at epoch 0.

    Works under ``jax.vmap`` over keys.

    Args:
      model: the model.
      optimizer: the optax optimizer whose state is initialised from the params.
      key: split into an initialisation key and the run key; when ``params`` are given, ``key``
        itself becomes the run key.
      params: params to start from instead of those of ``model.init`` (the model state still
        comes from ``model.init``), or ``None``.
      in_shape: one example's shape; defaults to the model's own (``ValueError`` when it has
        none).

    Returns:
      the :class:`TrainState`.
    """
    shape = tuple(in_shape) if in_shape is not None else getattr(model, "in_shape", None)
    if shape is None:
        raise ValueError("init_state: the model has no input shape; pass in_shape")
    return _init_fn(model, optimizer, shape)(key, params)


@remember(maxsize=16)
def _init_fn(model, optimizer, in_shape):
    def init(key, params):
        k_init, run_key = jax.random.split(key)
        new_params, model_state, _ = model.init(k_init, in_shape)
        if params is None:
            params = new_params
        else:
            run_key = key
        return TrainState(params, optimizer.init(params), run_key, jnp.zeros((), jnp.int32),
                          model_state)

    jitted = jax.jit(init)  # one compilation instead of one per eager op
    eager = []  # whether to run it op by op: decided on the first call

    def run(key, params):
        if isinstance(key, jax.core.Tracer) or any(
                isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(params)):
            return jitted(key, params)  # inside vmap/jit: let the outer transform handle it
        if not eager:
            eager.append(_many_leaves(model, in_shape))
        if eager[0]:
            return init(key, params)
        sig = str(jax.tree.map(lambda a: (jnp.shape(a), jnp.result_type(a)), (key, params)))
        return _INIT_PROGRAMS.get((jitted, sig), lambda: _compile_once(jitted, key, params))(
            key, params)

    return run


# A model with more params leaves than this is initialised op by op: compiling its whole
# initialisation grows faster than its size (a 200-layer MLP: 17.7 s compiled, 0.4 s eager,
# whose ops of repeated shapes compile once each).
EAGER_INIT_LEAVES = 64


def _many_leaves(model, in_shape) -> bool:
    """Whether ``model``'s params have more than ``EAGER_INIT_LEAVES`` leaves (from shapes)."""
    params = jax.eval_shape(lambda: model.init(jax.random.key(0), in_shape)[0])
    return len(jax.tree.leaves(params)) > EAGER_INIT_LEAVES


# The compiled initialisations, per builder and argument types (bounded, like fit's chunks).
_INIT_PROGRAMS = CompiledPrograms(maxsize=32)


def _compile_once(jitted, key, params):
    """``jitted`` compiled for a program that runs once: fast (random-number and
    truncated-normal code takes seconds to optimise on CPU and microseconds to run either
    way)."""
    options = FAST_COMPILE if jax.default_backend() == "cpu" else None
    return jitted.lower(key, params).compile(options)


# --------------------------------------------------------------------------------------------
# Gradients on padded batches


def masked_loss_grad_state_fn(model: Layer, loss: str | Loss) -> Callable:
    """``(params, state, x, t, key, train, mask) -> (loss, dL/dparams, new_state)`` counting
    only rows where ``mask`` is set (see the module docstring).

    ``x: (n, *in_shape)``, ``t: (n, out)``, ``mask: (n,)`` bool or 0/1. Equals
    :func:`~jaxprop.core.backprop.loss_grad_state_fn` on ``x[mask], t[mask]``.
    """
    loss = get_loss(loss)
    if model.couples_batch:
        raise ValueError(
            f"{model.name}: a layer couples the examples of a batch (e.g. BatchNorm), so it "
            "cannot train on a padded ragged last minibatch; use drop_last=True or a batch "
            "size that divides the number of examples"
        )
    row_grad = jax.vmap(lambda y, t: loss.grad(y[None], t[None])[0])

    def masked(params, state, x, t, key, train, mask):
        y, residuals, new_state = model.forward(params, state, x, key=key, train=train)
        w = row_weights(loss, mask, y.dtype)
        dy = (w.reshape((-1,) + (1,) * (y.ndim - 1)) * row_grad(y, t)).astype(y.dtype)
        dparams, _ = model.backward(params, residuals, dy)
        return masked_value(loss, y, t, mask), dparams, new_state

    return masked


def row_weights(loss: Loss, mask, dtype):
    """``(n,)`` weights of the rows of a padded batch: the 0/1 ``mask``, divided by the number of
    real rows unless the loss sums over examples; in at least float32 (``1 / count`` in a
    16-bit type would be off by up to 0.4%)."""
    w = mask.astype(jnp.promote_types(dtype, jnp.float32))
    return w if loss.reduction == "sum" else w / jnp.maximum(jnp.sum(w), 1)


def masked_value(loss: str | Loss, y, t, mask):
    """The loss of the rows of ``(y, t)`` where ``mask`` is set.

    Each row is scored as a batch of one, then summed or averaged as the loss's reduction says.
    ``y: (n, out)``, ``t: (n, out)`` (integer labels: ``(n,)``), ``mask: (n,)``.

    Args:
      loss: a loss name or :class:`~jaxprop.Loss`.
      y: the predictions.
      t: the targets.
      mask: bool or 0/1: the real rows.

    Returns:
      the loss, a scalar (in at least float32).
    """
    loss = get_loss(loss)
    row_value = jax.vmap(lambda y, t: loss.value(y[None], t[None]))
    return jnp.sum(row_weights(loss, mask, y.dtype) * row_value(y, t))


def masked_loss_and_grad_fn(model: Layer, loss: str | Loss) -> Callable:
    """``(params, x, t, mask) -> (loss, dL/dparams)`` for a model without state (see
    :func:`masked_loss_grad_state_fn`)."""
    masked = masked_loss_grad_state_fn(model, loss)

    def masked_loss_and_grad(params, x, t, mask):
        value, grads, _ = masked(params, None, x, t, None, True, mask)
        return value, grads

    return masked_loss_and_grad


# --------------------------------------------------------------------------------------------
# The step, the epoch, the loop


def make_train_step(model: Layer, loss: str | Loss, optimizer: optax.GradientTransformation,
                    *, masked: bool = False, grad_fn: Callable | None = None,
                    precision: str | Precision | None = None) -> Callable:
    """The training step: hand-written gradients, then one update by ``optimizer``.

    ``(params, opt_state, model_state, x, t, key[, mask]) -> (params, opt_state, model_state,
    loss)``. Hand-written gradients (:func:`~jaxprop.core.backprop.loss_grad_state_fn`, in training
    mode, with the step's ``key``), then ``optimizer``; ``loss`` is the value before the update.

    Args:
      model: the model.
      loss: a loss name or :class:`~jaxprop.Loss`.
      optimizer: any optax ``GradientTransformation``.
      masked: ``True`` adds the row ``mask`` of a padded batch.
      grad_fn: replaces the gradient with another of the same signature ``(params, state, x,
        t, key, train[, mask]) -> (loss, grads, new_state)`` (the benchmarks' ``jax.grad``
        baseline uses it); under a precision it gets params and ``x`` already cast, and should
        evaluate its loss with ``precision.loss(loss)``.
      precision: ``"f32"``, ``"bf16"``, ``"highest"``, ``"f64"``, a
        :class:`~jaxprop.train.precision.Precision`; ``None``: no casts. The gradient runs in
        the compute dtype, the loss in float32, and the optimizer sees gradients in the
        parameters' dtype (:mod:`jaxprop.train.precision`).

    Returns:
      the pure step function.
    """
    policy = get_precision(precision)
    if grad_fn is None:
        loss = policy.loss(get_loss(loss))
        grad_fn = masked_loss_grad_state_fn(model, loss) if masked \
            else loss_grad_state_fn(model, loss)
    grad_fn = policy.wrap(grad_fn)

    def step(params, opt_state, model_state, x, t, key, *mask):
        value, grads, model_state = grad_fn(params, model_state, x, t, key, True, *mask)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, model_state, value

    return step


def step_key(run_key: Array, step) -> Array:
    """The key of training step ``step`` (counted from 0 over the whole run)."""
    return jax.random.fold_in(jax.random.fold_in(run_key, STEP_STREAM), step)


def steps_per_epoch(n_examples: int, batch_size: int | None, drop_last: bool = False) -> int:
    """Training steps in an epoch of ``n_examples``: 1 for full batch (``None``, or a batch
    size of at least ``n_examples``), else ``ceil(n / batch_size)`` (``floor`` with
    ``drop_last``). ``ValueError`` for a batch size that is not a positive integer."""
    if batch_size is not None and (not is_int(batch_size) or batch_size < 1):
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if batch_size is None or batch_size >= n_examples:
        return 1
    return n_examples // batch_size if drop_last else -(-n_examples // batch_size)


def make_epoch_fn(model: Layer, loss: str | Loss, optimizer: optax.GradientTransformation,
                  n_examples: int, batch_size: int | None = None, drop_last: bool = False, *,
                  grad_fn: Callable | None = None, precision: str | Precision | None = None,
                  n_rows: int | None = None):
    """The pure epoch: one pass over the training data, in minibatches or one full batch.

    ``(params, opt_state, model_state, x, t, run_key, epoch) -> (params, opt_state,
    model_state, epoch_loss)``; ``epoch_loss`` is the minibatch losses averaged with weights =
    real rows per batch.

    Args:
      model: the model.
      loss: a loss name or :class:`~jaxprop.Loss`.
      optimizer: any optax ``GradientTransformation``.
      n_examples: ``n``, the number of real training examples (at least one).
      batch_size: ``None`` (or ``>= n_examples``): one full-batch step. Otherwise a fresh
        permutation from ``fold_in(run_key, epoch)`` and ``ceil(n / batch_size)`` minibatch
        steps in a ``lax.scan`` (the last one padded and masked).
      drop_last: take ``floor(n / batch_size)`` minibatch steps instead (the ragged batch
        dropped).
      grad_fn: see :func:`make_train_step`.
      precision: see :func:`make_train_step`.
      n_rows: ``x`` and ``t`` have this many rows, of which the first ``n_examples`` are real
        and the rest padding that never counts (data parallel training pads the training set
        to a multiple of the device count); ``None``: ``n_examples``.

    Returns:
      the pure epoch function.
    """
    n = int(n_examples)
    if n < 1:
        raise ValueError("training needs at least one example")
    rows = n if n_rows is None else int(n_rows)
    if rows < n:
        raise ValueError(f"n_rows ({rows}) must be at least n_examples ({n})")
    if steps_per_epoch(n, batch_size, drop_last) == 1:
        return _full_batch_epoch(model, loss, optimizer, n, rows, grad_fn=grad_fn,
                                 precision=precision)
    return _minibatch_epoch(model, loss, optimizer, n, int(batch_size), drop_last,
                            grad_fn=grad_fn, precision=precision)


def _full_batch_epoch(model, loss, optimizer, n: int, rows: int, **step_options):
    """The epoch of :func:`make_epoch_fn` as one step on all ``rows`` rows (those past the
    first ``n`` masked out).

    Args:
      model: the model.
      loss: a loss name or :class:`~jaxprop.Loss`.
      optimizer: any optax ``GradientTransformation``.
      n: the number of real examples.
      rows: the number of rows of ``x`` and ``t``.
      **step_options: ``grad_fn`` and ``precision`` for :func:`make_train_step`.

    Returns:
      the pure epoch function.
    """
    padded = rows > n
    step = make_train_step(model, loss, optimizer, masked=padded, **step_options)
    extra = (np.arange(rows) < n,) if padded else ()

    def full_batch_epoch(params, opt_state, model_state, x, t, run_key, epoch):
        return step(params, opt_state, model_state, x, t, step_key(run_key, epoch), *extra)

    return full_batch_epoch


def _minibatch_epoch(model, loss, optimizer, n: int, batch_size: int, drop_last: bool,
                     **step_options):
    """The epoch of :func:`make_epoch_fn` as shuffled minibatch steps in a ``lax.scan`` (the
    ragged last batch padded and masked, or dropped).

    Args:
      model: the model.
      loss: a loss name or :class:`~jaxprop.Loss`.
      optimizer: any optax ``GradientTransformation``.
      n: the number of real examples (the first ``n`` rows of ``x`` and ``t``).
      batch_size: examples per step, less than ``n``.
      drop_last: drop the ragged last batch.
      **step_options: ``grad_fn`` and ``precision`` for :func:`make_train_step`.

    Returns:
      the pure epoch function.
    """
    n_batches = steps_per_epoch(n, batch_size, drop_last)
    ragged = n_batches * batch_size != n and not drop_last
    step = make_train_step(model, loss, optimizer, masked=ragged, **step_options)
    mask = (np.arange(n_batches * batch_size) < n).reshape(n_batches, batch_size)
    counts = jnp.asarray(mask.sum(axis=1), jnp.float32)

    def minibatch_epoch(params, opt_state, model_state, x, t, run_key, epoch):
        perm = jax.random.permutation(jax.random.fold_in(run_key, epoch), n)
        idx = perm[jnp.arange(n_batches * batch_size) % n].reshape(n_batches, batch_size)
        first = jnp.asarray(epoch, jnp.uint32) * jnp.uint32(n_batches)

        def body(carry, inputs):
            p, s, ms = carry
            b, i, m = inputs
            extra = (m,) if ragged else ()
            p, s, ms, value = step(p, s, ms, x[i], t[i], step_key(run_key, first + b), *extra)
            return (p, s, ms), value

        batches = (jnp.arange(n_batches, dtype=jnp.uint32), idx, mask)
        (params, opt_state, model_state), values = jax.lax.scan(
            body, (params, opt_state, model_state), batches)
        c = counts.astype(values.dtype)
        return params, opt_state, model_state, jnp.sum(values * c) / jnp.sum(c)

    return minibatch_epoch


def make_train_epochs(model: Layer, loss: str | Loss, optimizer: optax.GradientTransformation,
                      n_examples: int, batch_size: int | None = None, drop_last: bool = False,
                      *, grad_fn: Callable | None = None,
                      precision: str | Precision | None = None, unroll: int = 1,
                      n_rows: int | None = None):
    """The pure loop ``(state, x, t, n_epochs) -> (state, losses)`` over ``n_epochs`` epochs.

    One ``lax.scan`` over epochs (each epoch itself a scan over minibatches); ``n_epochs`` must
    be static (bind it with ``functools.partial`` before ``jit``/``vmap``). ``losses[i]`` is the
    loss of epoch ``state.epoch + i``. To train a population: ``jax.vmap(partial(train_epochs,
    n_epochs=N), in_axes=(0, None, None))`` over a stacked ``TrainState``.

    Args:
      model: the model.
      loss: a loss name or :class:`~jaxprop.Loss`.
      optimizer: any optax ``GradientTransformation``.
      n_examples: the number of real training examples (see :func:`make_epoch_fn`).
      batch_size: see :func:`make_epoch_fn`.
      drop_last: see :func:`make_epoch_fn`.
      grad_fn: see :func:`make_epoch_fn`.
      precision: see :func:`make_epoch_fn`.
      unroll: epochs per iteration of the compiled loop (``lax.scan``'s ``unroll``, at most
        ``n_epochs``; the same arithmetic, fewer loop iterations: see
        :func:`jaxprop.train.compile.auto_unroll`).
      n_rows: see :func:`make_epoch_fn`.

    Returns:
      the pure loop function.
    """
    epoch_fn = make_epoch_fn(model, loss, optimizer, n_examples, batch_size, drop_last,
                             grad_fn=grad_fn, precision=precision, n_rows=n_rows)

    def train_epochs(state: TrainState, x, t, n_epochs: int):
        def body(carry, _):
            params, opt_state, model_state, epoch = carry
            params, opt_state, model_state, value = epoch_fn(
                params, opt_state, model_state, x, t, state.key, epoch)
            return (params, opt_state, model_state, epoch + 1), value

        init = (state.params, state.opt_state, state.model_state, state.epoch)
        (params, opt_state, model_state, epoch), losses = jax.lax.scan(
            body, init, None, length=n_epochs, unroll=max(1, min(int(unroll), n_epochs)))
        return TrainState(params, opt_state, state.key, epoch, model_state), losses

    return train_epochs


# --------------------------------------------------------------------------------------------
# Evaluation


@remember(maxsize=64)
def accuracy_fn(loss: str | Loss) -> Callable:
    """``(y, t) -> accuracy``: argmax agreement for several outputs (with the integer labels
    themselves for a loss on integer labels); for one output a threshold (0 for a loss that
    takes logits, 0.5 for probabilities) against 0/1 targets. The same function for the same
    loss (so programs compiled around it are reused)."""
    loss = get_loss(loss)
    threshold = 0.0 if loss.from_logits else 0.5

    def accuracy(y, t):
        if loss.integer_labels:
            return jnp.mean(jnp.argmax(y, -1) == t)
        if y.shape[-1] == 1:
            return jnp.mean((y > threshold) == (t > 0.5))
        return jnp.mean(jnp.argmax(y, -1) == jnp.argmax(t, -1))

    return accuracy


def regression_metrics(y, t, mask=None):
    """``(r2, rmse, mae)``, each ``(out,)``: one value per output of predictions ``y: (n, out)``
    against targets ``t: (n, out)``, in ``t``'s units; pure (jit and trace it).

    R² is ``1 - SS_res / SS_tot`` per output; for a constant target (``SS_tot == 0``) it is 1
    when the predictions are exact, else 0 (scikit-learn's ``force_finite``), so it is always
    finite. ``mask``: ``(n,)``, count only the rows where it is set. Computed in at least
    float32. scikit-learn's overall figures (``multioutput="uniform_average"``) are the means
    over the outputs.
    """
    dtype = jnp.promote_types(jnp.result_type(y), jnp.float32)
    y, t = jnp.asarray(y, dtype), jnp.asarray(t, dtype)
    w = jnp.ones(y.shape[:1], dtype) if mask is None else jnp.asarray(mask, dtype)
    w = w[:, None]
    count = jnp.maximum(jnp.sum(w), 1)
    err = y - t
    ss_res = jnp.sum(w * err ** 2, axis=0)
    mean_t = jnp.sum(w * t, axis=0) / count
    ss_tot = jnp.sum(w * (t - mean_t) ** 2, axis=0)
    constant = jnp.where(ss_res == 0, 1.0, 0.0).astype(dtype)
    r2 = jnp.where(ss_tot > 0, 1 - ss_res / jnp.where(ss_tot > 0, ss_tot, 1), constant)
    return r2, jnp.sqrt(ss_res / count), jnp.sum(w * jnp.abs(err), axis=0) / count


def make_eval_fn(model: Layer, loss: str | Loss, accuracy: Callable | None | bool = None, *,
                 precision: str | Precision | None = None) -> Callable:
    """The pure ``(params, x, t, state=None, mask=None) -> (loss, accuracy)`` on a whole data set.

    In evaluation mode (``train=False``: no dropout, BatchNorm's running averages). ``mask``:
    ``(n,)``, count only the rows where it is set (padding in data parallel training).

    Args:
      model: the model.
      loss: a loss name or :class:`~jaxprop.Loss`.
      accuracy: ``(y, t) -> fraction`` (default :func:`accuracy_fn`); ``False`` for a
        regression: then ``(loss, r2, rmse)``, R² and RMSE the means over the outputs of
        :func:`regression_metrics` (in the units of ``t``).
      precision: the loss and accuracy are computed as under it (see
        :func:`make_train_step`).

    Returns:
      the pure evaluation function.
    """
    policy = get_precision(precision)
    plain = get_loss(loss)
    loss = policy.loss(plain)
    if accuracy is not False:
        accuracy = accuracy or accuracy_fn(plain)  # (the policy's Loss is new each call)

    def evaluate(params, x, t, state=None, mask=None):
        with policy.matmul():
            y = model.forward(*policy.cast_to_compute((params, state, x)), train=False)[0]
        if mask is None:
            value = loss.value(y, t)
        else:
            value = masked_value(loss, y, t, mask)
        value = policy.cast_to_output(value)
        if accuracy is False:
            r2, rmse, _ = regression_metrics(y, t, mask)
            return value, jnp.mean(r2), jnp.mean(rmse)
        if mask is None:
            return value, accuracy(y, t)
        w = mask.astype(jnp.promote_types(y.dtype, jnp.float32))
        row_accuracy = jax.vmap(lambda y, t: accuracy(y[None], t[None]))(y, t)
        return value, jnp.sum(w * row_accuracy) / jnp.maximum(jnp.sum(w), 1)

    return evaluate
