"""``fit``: the host driver around the compiled training loop.

``fit_state`` reads as its recipe: check the start (:func:`_initial_state`) and the data,
resolve the options (:class:`_Plan`), place the state and data (a mesh pads and splits them),
then run chunks of ``log_every`` epochs (a :class:`~jaxprop.train.chunks.ChunkRunner`: one
compiled program per chunk length, ``make_train_epochs`` then an evaluation of train/test loss
and accuracy), so the host sees metrics only once per chunk. The state buffers are donated to
each call.

**Divergence guard.** ``fit`` checks the chunk's per-epoch losses on the host after each chunk
(never inside a step); the first non-finite one names the epoch in :class:`TrainingDiverged`,
which carries the state from the end of the last all-finite chunk.

**Early stopping** (:mod:`jaxprop.train.early_stopping`): after each chunk the held-out loss
(validation, else test) is compared with the best so far; training stops ``patience`` epochs
after the best and returns the best epoch's state. **Learning rate**: each record says the
rate of the chunk's last step (``learning_rate=``: a number or an optax schedule). **Progress**:
a rich bar (:mod:`jaxprop.train.progress`) updated from each chunk's record.

**Stopping.** With ``should_stop``, ``fit`` never blocks on a chunk (see
:mod:`jaxprop.train.chunks`): when it says stop, :class:`TrainingInterrupted` carries the state
from the end of the last whole chunk and the chunk in flight is abandoned (a process that exits
then should leave with ``os._exit``, which does not wait for it).
"""

from __future__ import annotations

import time
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxprop.core.checks import (
    check_labels_fit,
    check_output_fits_loss,
    params_dtype,
    require_model,
    validate_data,
    warn_if_targets_outside_output,
)
from jaxprop.core.layers import Layer
from jaxprop.core.losses import Loss, get_loss
from jaxprop.core.validate import is_int, is_number
from jaxprop.train.chunks import ChunkRunner, Stopped, make_chunk_fn
from jaxprop.train.early_stopping import (
    Best,
    EarlyStopping,
    Tracker,
    as_early_stopping,
    monitored,
)
from jaxprop.train.compile import (
    CompiledPrograms,
    auto_compiler_options,
    auto_unroll,
    forward_flops,
)
from jaxprop.train.memory import check_fits, training_bytes
from jaxprop.train.optimizers import as_optimizer
from jaxprop.train.placement import place_for_training
from jaxprop.train.precision import Precision, get_precision
from jaxprop.train.progress import console_for, progress_bar, show_record
from jaxprop.train.step import TrainState, accuracy_fn, init_state, steps_per_epoch

Array = jax.Array


# The epoch counter is an int32 (TrainState.epoch); each step's key folds in the step's number,
# a uint32 counted over the whole run (epoch x minibatches per epoch + minibatch).
MAX_EPOCHS = 2**31 - 1
MAX_STEPS = 2**32
# The most chunks (host syncs) the default log_every makes: ten, unless the epochs to train
# only divide into chunks of one length in other numbers (13 epochs: 13 chunks of one).
MAX_DEFAULT_CHUNKS = 100
# ... and the fewest (so a long run still logs, checkpoints and checks for divergence often).
MIN_DEFAULT_CHUNKS = 5


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or Inf.

    ``epoch`` is the 1-based epoch whose loss was first non-finite, ``state`` the last good
    :class:`TrainState` (the end of the last chunk whose losses were all finite, on the host),
    ``history`` the :class:`History` up to that point.
    """

    def __init__(self, epoch: int, value: float, state: TrainState | None, history=None):
        self.epoch, self.value, self.state, self.history = epoch, value, state, history
        good = int(state.epoch) if state is not None else 0
        super().__init__(
            f"training diverged at epoch {epoch}: the loss became {value} "
            f"(kept the parameters from epoch {good}); try a smaller learning rate"
        )


class TrainingInterrupted(RuntimeError):
    """``should_stop()`` asked training to stop (Ctrl-C, SIGTERM).

    ``state`` is the last finished :class:`TrainState` (the end of the last whole chunk, on
    the host), ``history`` the :class:`History` up to it; the chunk in flight is abandoned.
    """

    def __init__(self, state: TrainState, history):
        self.state, self.history = state, history
        super().__init__(f"training interrupted after epoch {int(state.epoch)}")


class History(NamedTuple):
    """``records``: one dict per host sync (epoch, loss, train/test (or validation) loss and
    accuracy, ``learning_rate`` when known, time; with early stopping ``best_epoch`` and, on
    the last, ``stopped_early``); ``losses``: the training loss of every epoch trained,
    ``(epochs,)``; ``best_epoch``: with early stopping, the epoch whose state was returned;
    ``stopped_early``: whether early stopping ended training."""

    records: list
    losses: np.ndarray
    compile_time: float = 0.0
    best_epoch: int | None = None
    stopped_early: bool = False


# Compiled chunks kept across fit calls, keyed (jitted, n_epochs, options, signature).
_COMPILED = CompiledPrograms(maxsize=32)
# A training state smaller than this is not donated: keeping the last good state for the
# divergence guard then costs nothing, where a donated one must be copied to the host after
# every chunk (1 ms of a 2 ms XOR fit).
DONATE_MIN_BYTES = 1 << 20


def _nbytes(tree) -> int:
    return sum(int(np.size(a)) * np.dtype(a.dtype).itemsize for a in jax.tree.leaves(tree)
               if not jnp.issubdtype(a.dtype, jax.dtypes.prng_key))


def _host_key(key):
    """A copy of ``key`` that owns its buffer (typed PRNG keys or raw uint32 keys)."""
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return jax.random.wrap_key_data(host_array(jax.random.key_data(key)),
                                        impl=jax.random.key_impl(key))
    return host_array(key)


def host_array(a) -> np.ndarray:
    """``a`` as a NumPy array; for an array spread over several processes, this process's
    copy of it (the losses, metrics and state of data parallel training are replicated)."""
    if isinstance(a, jax.Array) and not a.is_fully_addressable:
        return np.asarray(a.addressable_shards[0].data)
    return np.asarray(a)


def to_host(state: TrainState) -> TrainState:
    """A copy of ``state`` in host memory (NumPy arrays, a key that owns its buffer), also for
    a state replicated over several processes; it survives the donation of ``state``."""
    params, opt_state, epoch, model_state = jax.tree.map(
        host_array, (state.params, state.opt_state, state.epoch, state.model_state))
    return TrainState(params, opt_state, _host_key(state.key), epoch, model_state)


def _finite(a) -> bool:
    return bool(np.all(np.isfinite(a)))


def fit_state(
    model: Layer,
    loss: str | Loss,
    optimizer: optax.GradientTransformation | float,
    data,
    *,
    epochs: int,
    batch_size: int | None = None,
    key: Array | None = None,
    log_every: int | None = None,
    callback: Callable | None = None,
    drop_last: bool = False,
    params=None,
    state: TrainState | None = None,
    accuracy: Callable | bool | None = None,
    donate: bool = True,
    compiler_options: dict | str | None = "auto",
    precision: str | Precision | None = None,
    unroll: int | str = "auto",
    grad_fn: Callable | None = None,
    should_stop: Callable[[], bool] | None = None,
    mesh=None,
    losses_out: list | None = None,
    early_stopping: int | EarlyStopping | None = None,
    best: Best | None = None,
    learning_rate=None,
    progress=None,
):
    """Train ``model``; return ``(state, history)`` (``state`` the final :class:`TrainState`,
    or with early stopping the best epoch's).

    The loop runs in compiled chunks of ``log_every`` epochs; after each chunk the host gets
    the per-epoch losses and train/test loss and accuracy, checks them for NaN/Inf, appends a
    record to ``history.records`` and calls ``callback(state, record)``.

    Raises ``ValueError`` for bad input (an output layer that does not suit the loss, NaN
    params, data that does not suit the params), :class:`TrainingDiverged` when the loss
    turns NaN/Inf and :class:`TrainingInterrupted` when ``should_stop`` asks.

    Args:
      model: the model to train.
      loss: a loss name or :class:`~jaxprop.Loss`.
      optimizer: an optax ``GradientTransformation``, or a number: the learning rate of plain
        gradient descent.
      data: a ``jaxprop.data.Dataset``, ``(x, t)`` or ``(x, t, x_test, t_test)``; float data of
        another dtype is cast to the params' dtype; for a loss on integer labels ``t`` holds
        class indices. A Dataset with a validation split
        (:func:`jaxprop.data.validation_split`) is evaluated on it after each chunk (records
        say ``val_loss``, ``val_accuracy``) and its test set is left alone.
      epochs: the total number of epochs (at most ``MAX_EPOCHS``); with ``state`` training
        continues from ``state.epoch`` up to ``epochs``.
      batch_size: examples per shuffled minibatch (:func:`~jaxprop.train.make_epoch_fn`);
        ``None`` for full batch.
      key: seeds initialisation and shuffling (required unless ``state`` is given).
      log_every: epochs per compiled chunk; with ``early_stopping`` 1 by default; else by
        default one length for every chunk, so the loop compiles once: ``ceil(epochs / 10)`` when that splits the epochs still to train
        evenly, else as near 10 equal chunks as they divide into (15 epochs: 15 chunks of one;
        a prime number of epochs over ``MAX_DEFAULT_CHUNKS``: ``ceil(epochs / 10)`` and a
        shorter last chunk, compiled separately).
      callback: called as ``callback(state, record)`` after each chunk; a true return value
        stops training early. ``state`` is safe to keep: a host copy when the training state
        is donated to the next chunk (or spread over a mesh), the chunk's own result
        otherwise.
      drop_last: drop the ragged last minibatch instead of padding and masking it.
      params: overrides the initial params.
      state: a resumed :class:`TrainState` to continue from (with ``donate``, training works
        on a copy: the caller's arrays stay valid).
      accuracy: ``(y, t) -> fraction``; by default :func:`accuracy_fn` when the targets are
        classes (class labels, one-hot rows or 0/1 values) and none for a regression;
        ``False``: none.
      donate: ``False`` keeps the input buffers (states under ``DONATE_MIN_BYTES`` are never
        donated).
      compiler_options: go to XLA; ``"auto"`` (default): :func:`auto_compiler_options` (faster
        compilation for short runs, single-threaded matmuls for tiny steps, on CPU); ``None``:
        XLA's defaults.
      precision: ``"f32"``, ``"bf16"`` (float32 params and optimizer state, bfloat16 forward
        and backward, float32 loss), ``"highest"`` (float32 with full-precision matmuls on
        GPU/TPU), ``"f64"``, or ``None`` (default: the params' own dtype, no casts); see
        :mod:`jaxprop.train.precision`. Evaluation runs under it too.
      unroll: epochs per iteration of the compiled loop; ``"auto"`` (default):
        :func:`~jaxprop.train.compile.auto_unroll`.
      grad_fn: another gradient for the same step (see :func:`~jaxprop.train.make_train_step`;
        the benchmarks pass ``jax.grad``'s).
      should_stop: polled while chunks compile and run; when it returns true,
        :class:`TrainingInterrupted` is raised at once with the last finished state.
      mesh: a 1-D ``jax.sharding.Mesh`` (see :func:`jaxprop.data_mesh`) to train data
        parallel: the training set is padded to a multiple of the mesh's size (the padding
        never counts) and split over its devices, which may belong to several processes
        (``jax.distributed``).
      losses_out: a list that receives each finished chunk's per-epoch losses (a NumPy array)
        before ``callback`` runs.
      early_stopping: a patience in epochs, or an
        :class:`~jaxprop.train.early_stopping.EarlyStopping`: after each chunk, stop once the
        held-out loss (``val_loss``, else ``test_loss``; ``ValueError`` without held-out data)
        has not improved for ``patience`` epochs, and return the best epoch's state (also when
        training runs to ``epochs``).
      best: with ``early_stopping``, the best epoch before ``state`` (a resumed run's
        :class:`~jaxprop.train.early_stopping.Best`).
      learning_rate: what the records report as ``learning_rate``: a number, or an optax
        schedule of the step count (its value at each chunk's last step); ``None``: the
        number given as ``optimizer``, else no such field.
      progress: a rich progress bar on stderr: ``True``, ``False``, a rich ``Console`` to draw
        on, or ``None`` (default): only when stderr is a terminal. Updated after each chunk
        from its record (no extra synchronisation).

    Returns:
      ``(state, history)``: the final (or best) :class:`TrainState` and the :class:`History`
      (``records``, ``losses`` of every epoch, ``compile_time``: the seconds spent compiling,
      ``best_epoch``, ``stopped_early``).
    """
    require_model(model, "fit")
    rate = learning_rate if learning_rate is not None or not is_number(optimizer) else optimizer
    early_stopping = as_early_stopping(early_stopping)
    console = console_for(progress)
    loss, optimizer, policy = get_loss(loss), as_optimizer(optimizer), get_precision(precision)
    if state is None and params is None:  # before init allocates anything
        _check_memory(model, optimizer, data, batch_size)
    initial = _initial_state(model, loss, optimizer, epochs, key, params, state)
    policy.check_params(initial.params)
    x, t, test_data, held_out = _validated_data(model, loss, initial, data)
    tracker = None if early_stopping is None else Tracker(
        early_stopping, monitored(early_stopping, held_out), best)
    plan = _plan(model, loss, initial, x, t, epochs=epochs, batch_size=batch_size,
                 drop_last=drop_last, accuracy=accuracy, donate=donate,
                 compiler_options=compiler_options, unroll=unroll,
                 log_every=log_every or (1 if tracker is not None else None))
    initial, arrays, n_rows = _place(mesh, initial, (x, t, test_data),
                                     copy=state is not None and plan.donate)
    jitted = make_chunk_fn(model, loss, optimizer, x.shape[0], batch_size, drop_last,
                           plan.accuracy, plan.donate, policy, grad_fn, plan.unroll, n_rows)
    runner = ChunkRunner(_COMPILED, jitted, arrays, initial, plan.compiler_options, policy,
                         should_stop)
    on_host = plan.donate or mesh is not None  # keep the last good state as a host copy
    log = _Log(runner, losses_out, _rate_at(rate, x.shape[0], batch_size, drop_last), held_out,
               tracker)
    return _train(runner, initial, epochs, plan.log_every, on_host, callback, log,
                  console, getattr(data, "name", "fit"))


# --------------------------------------------------------------------------------------------
# The start and the data


def _initial_state(model, loss, optimizer, epochs, key, params, state) -> TrainState:
    """The state training starts from, after the checks that need no data.

    Args:
      model: the model.
      loss: the :class:`~jaxprop.Loss`.
      optimizer: the optax optimizer.
      epochs, key, params, state: ``fit_state``'s own.

    Returns:
      the given ``state`` (checked) or a new one.
    """
    if not is_int(epochs) or epochs < 0:
        raise ValueError(f"epochs must be a non-negative integer, got {epochs!r}")
    if epochs > MAX_EPOCHS:
        raise ValueError(f"epochs={epochs} is more than the epoch counter holds "
                         f"({MAX_EPOCHS:,}, int32)")
    check_output_fits_loss(model, loss)
    if state is None:
        if key is None:
            raise ValueError("fit needs a PRNG key (key=jax.random.key(seed)) or a state")
        if params is not None:
            params_dtype(params)
        state = init_state(model, optimizer, key, params)
        _check_params_finite(state.params, "initial" if params is None else "given")
    else:
        _check_params_finite(state.params, "state's")
    start = int(host_array(state.epoch))
    if start > epochs:
        raise ValueError(f"the state is already at epoch {start}, past epochs={epochs}")
    return state


def _validated_data(model, loss, state, data):
    """The training and test arrays, checked against the params (and the targets against the
    model's outputs).

    Args:
      model: the model.
      loss: the :class:`~jaxprop.Loss`.
      state: the starting state (its params and model state).
      data: ``fit_state``'s.

    Returns:
      ``(x, t, test_data, held_out)``: ``test_data`` is the held-out ``(x, t)`` evaluated
      after each chunk, or ``()``; ``held_out`` names it: ``"val"`` (a Dataset's validation
      split), ``"test"`` or ``None``.
    """
    x, t, x_test, t_test, held_out = _split_data(data)
    x, t = validate_data(state.params, x, t, loss=loss, model=model)
    test_data = ()
    if x_test is not None:
        test_data = validate_data(state.params, x_test, t_test, loss=loss, model=model)
    if loss.integer_labels:
        for xs, ts in ((x, t), test_data or (x, t)):  # the test labels too
            check_labels_fit(model, state.params, state.model_state, xs, ts)
    else:
        warn_if_targets_outside_output(model, loss, t)
    return x, t, test_data, held_out if test_data else None


def _check_memory(model, optimizer, data, batch_size) -> None:
    """:class:`~jaxprop.train.memory.InsufficientMemory` when training cannot fit (data that
    cannot say its shapes is left to the data's own checks)."""
    try:
        x, _, x_test, _, _ = _split_data(data)
        n, in_shape = int(x.shape[0]), tuple(x.shape[1:])
        n_eval = max(n, int(x_test.shape[0]) if x_test is not None else 0)
        dtype = x.dtype if jnp.issubdtype(x.dtype, jnp.floating) else jnp.float32
    except (AttributeError, TypeError, ValueError, IndexError):
        return
    if n == 0:
        return
    try:
        bytes_needed = training_bytes(model, optimizer, in_shape, n if batch_size is None
                                      else min(batch_size, n), n_eval, dtype=dtype)
    except (TypeError, ValueError):
        return  # a model that does not take these inputs: the data's checks say so
    check_fits(bytes_needed, "training this model",
               "use fewer or smaller layers, or smaller minibatches (batch_size)")


def _split_data(data):
    """``(x, t, x_held, t_held, held_out)`` from a Dataset (its validation split when it has
    one, ``held_out="val"``, else its test set), ``(x, t)`` or ``(x, t, x_test, t_test)``."""
    if hasattr(data, "x_train"):
        if getattr(data, "x_val", None) is not None:
            return data.x_train, data.y_train, data.x_val, data.y_val, "val"
        return data.x_train, data.y_train, data.x_test, data.y_test, "test"
    if isinstance(data, (tuple, list)) and len(data) in (2, 4):
        return (*data, None, None, None) if len(data) == 2 else (*data, "test")
    raise ValueError("data must be a Dataset, (x, t) or (x, t, x_test, t_test)")


def _check_params_finite(params, what: str) -> None:
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        host = host_array(leaf)
        if not _finite(host):
            raise ValueError(
                f"the {what} params contain NaN/Inf: params{jax.tree_util.keystr(path)} has "
                f"{int(np.sum(~np.isfinite(host)))} non-finite value(s); training cannot start "
                "from them"
            )


def _is_classification(loss: Loss, t) -> bool:
    """Whether accuracy means something for targets ``t``: class labels, one-hot rows, or
    0/1 targets of one output."""
    if loss.integer_labels or loss.categorical:
        return True
    host = host_array(t)
    return bool(np.all((host == 0) | (host == 1)))


# --------------------------------------------------------------------------------------------
# The options, resolved


class _Plan(NamedTuple):
    """The options of one ``fit_state`` call, resolved before its first chunk."""

    accuracy: Callable | bool  # the accuracy function, or False (a regression)
    donate: bool  # whether each chunk donates the state's buffers
    compiler_options: dict | None  # what goes to XLA
    unroll: int  # epochs per iteration of the compiled loop
    log_every: int  # epochs per chunk


def _plan(model, loss, state, x, t, *, epochs, batch_size, drop_last, accuracy, donate,
          compiler_options, unroll, log_every) -> _Plan:
    """The :class:`_Plan` for training ``state`` on ``(x, t)``; ``ValueError`` for a bad option.

    Args:
      model: the model.
      loss: the :class:`~jaxprop.Loss`.
      state: the state training starts from (its params size the options; its epoch counts
        the epochs still to train).
      x: the validated training inputs.
      t: the validated training targets.
      epochs, batch_size, drop_last, accuracy, donate, compiler_options, unroll, log_every:
        ``fit_state``'s own.

    Returns:
      the :class:`_Plan`.
    """
    _check_steps(epochs, x.shape[0], batch_size, drop_last)
    if accuracy is None:
        accuracy = accuracy_fn(loss) if _is_classification(loss, t) else False
    donate = bool(donate) and _nbytes((state.params, state.opt_state)) >= DONATE_MIN_BYTES
    flops = _example_flops(model, state, x) if "auto" in (compiler_options, unroll) else None
    return _Plan(accuracy, donate,
                 _compiler_options(compiler_options, state, x.shape[0], batch_size, flops),
                 _unroll(unroll, state.params, x.shape[0], batch_size, flops),
                 _log_every(log_every, epochs, int(host_array(state.epoch))))


def _check_steps(epochs, n_examples, batch_size, drop_last) -> None:
    """``ValueError`` when the run has more steps than a step's key can count (and for a bad
    ``batch_size``).

    Args:
      epochs: the epoch the run stops at.
      n_examples: training examples.
      batch_size: ``fit_state``'s.
      drop_last: ``fit_state``'s.
    """
    steps = epochs * steps_per_epoch(n_examples, batch_size, drop_last)
    if steps > MAX_STEPS:
        raise ValueError(f"epochs={epochs} of {steps // epochs} minibatches each is "
                         f"{steps:,} steps, more than each step's random key "
                         f"can count ({MAX_STEPS:,}, uint32): train fewer epochs or use larger "
                         "minibatches")


def _example_flops(model, state, x) -> float | None:
    """The traced forward pass's FLOPs for one example of ``x`` (remembered per model)."""
    # (shapes only: slicing x[:1] would compile a program of its own)
    return forward_flops(model, state.params, state.model_state,
                         jax.ShapeDtypeStruct((1, *x.shape[1:]), x.dtype))


def _compiler_options(options, state, n_examples, batch_size, flops) -> dict | None:
    """``options`` as given, or for ``"auto"`` those :func:`auto_compiler_options` picks.

    Args:
      options: ``fit_state``'s ``compiler_options``.
      state: the starting state (its params).
      n_examples: training examples.
      batch_size: ``fit_state``'s.
      flops: one example's forward FLOPs (:func:`_example_flops`).

    Returns:
      the options for XLA, or ``None``.
    """
    if not isinstance(options, str):
        return options
    if options != "auto":
        raise ValueError(f"compiler_options must be a dict, None or 'auto', got {options!r}")
    n_params = sum(int(np.size(leaf)) for leaf in jax.tree.leaves(state.params))
    return auto_compiler_options(n_params, n_examples, batch_size, forward_flops=flops)


def _unroll(unroll, params, n_examples, batch_size, flops) -> int:
    """``unroll`` checked, or for ``"auto"`` the one :func:`auto_unroll` picks.

    Args:
      unroll: ``fit_state``'s.
      params: the params (their shapes).
      n_examples: training examples.
      batch_size: ``fit_state``'s.
      flops: one example's forward FLOPs (:func:`_example_flops`).

    Returns:
      the epochs per iteration of the compiled loop.
    """
    if unroll == "auto":
        unroll = auto_unroll(params, n_examples, batch_size, forward_flops=flops)
    if not is_int(unroll) or unroll < 1:
        raise ValueError(f"unroll must be a positive integer or 'auto', got {unroll!r}")
    return int(unroll)


def _log_every(log_every, epochs, start) -> int:
    """Epochs per chunk: ``log_every``, by default :func:`_default_log_every`."""
    log_every = int(log_every or _default_log_every(epochs, start))
    if log_every < 1:
        raise ValueError(f"log_every must be positive, got {log_every}")
    return log_every


def _default_log_every(epochs: int, start: int = 0) -> int:
    """Epochs per chunk that split the epochs still to train (``start`` to ``epochs``) into
    chunks of one length, so the loop compiles once: ``ceil(epochs / 10)`` when it does, else
    the length of as near 10 equal chunks as the divisors allow (between ``MIN_DEFAULT_CHUNKS``
    and ``MAX_DEFAULT_CHUNKS`` chunks); when no divisor allows that (a prime number of epochs
    over ``MAX_DEFAULT_CHUNKS``), ``ceil(epochs / 10)`` with a shorter last chunk."""
    remaining, usual = epochs - start, max(1, -(-epochs // 10))
    if remaining <= 0 or remaining % usual == 0:
        return usual
    lowest = min(MIN_DEFAULT_CHUNKS, remaining)
    counts = [k for k in range(lowest, min(remaining, MAX_DEFAULT_CHUNKS) + 1)
              if remaining % k == 0]
    if not counts:
        return usual  # a ragged last chunk (a second compilation) rather than one long chunk
    return remaining // min(counts, key=lambda k: (max(k / 10, 10 / k), -k))


def _place(mesh, state, data, *, copy: bool):
    """The state and the data where the chunks run them.

    Args:
      mesh: ``fit_state``'s: when given, the training set is padded and split over it and the
        rest replicated (:func:`~jaxprop.train.placement.place_for_training`, which copies the
        state).
      state: the starting state.
      data: ``(x, t, test_data)``.
      copy: without a mesh, copy the state (a given state that will be donated: the caller's
        arrays stay valid).

    Returns:
      ``(state, (x, t, test_data), n_rows)``: ``n_rows`` the padded number of training rows
      on a mesh, else ``None``.
    """
    if mesh is not None:
        state, x, t, test_data = place_for_training(mesh, state, *data)
        return state, (x, t, test_data), x.shape[0]
    if copy:
        state = jax.tree.map(jnp.copy, state)
    return state, tuple(data), None


# --------------------------------------------------------------------------------------------
# The chunks, the guard and the history


class _Log:
    """The history as it grows: a record per finished chunk, every epoch's loss, and the
    early-stopping tracker's view of it.

    Args:
      runner: the chunks' runner (its compile time).
      losses_out: ``fit_state``'s.
      rate: ``epoch -> learning rate`` at the end of that epoch, or ``None``
        (:func:`_rate_at`).
      held_out: ``"val"``, ``"test"`` or ``None``: what the chunk's ``test_*`` metrics are.
      tracker: the early-stopping :class:`~jaxprop.train.early_stopping.Tracker`, or ``None``.
    """

    def __init__(self, runner: ChunkRunner, losses_out: list | None, rate=None,
                 held_out: str | None = None, tracker: Tracker | None = None):
        self.runner, self.losses_out, self.rate = runner, losses_out, rate
        self.held_out, self.tracker = held_out, tracker
        self.records, self.losses = [], []
        self.t_start = time.perf_counter()
        self.stopped_early = False

    def chunk(self, epoch: int, losses: np.ndarray, metrics: dict) -> dict:
        """Keep a finished chunk's losses (also in ``losses_out``); return its record."""
        self.losses.append(losses)
        if self.losses_out is not None:
            self.losses_out.append(losses)
        if self.held_out == "val":  # the chunk evaluated the validation split
            metrics = {("val_" + k[5:] if k.startswith("test_") else k): v
                       for k, v in metrics.items()}
        record = {"epoch": epoch, "loss": float(losses[-1]), **metrics}
        if self.rate is not None:
            record["learning_rate"] = self.rate(epoch)
        record["time"] = time.perf_counter() - self.t_start
        self.records.append(record)
        return record

    def watch(self, record: dict, state) -> bool:
        """Early stopping's verdict on a finished chunk (``state``: its end, safe to keep)."""
        if self.tracker is None:
            return False
        self.stopped_early = self.tracker.update(record, state)
        return self.stopped_early

    def result(self, state) -> tuple[TrainState, History]:
        """``(state, history)``: with early stopping, the best epoch's state."""
        best = self.tracker.best if self.tracker is not None else None
        return (state if best is None else best.state), self.history()

    def history(self) -> History:
        """The :class:`History` so far (``compile_time``: the runner's)."""
        losses = np.concatenate(self.losses) if self.losses else np.zeros(0)
        best = self.tracker.best if self.tracker is not None else None
        return History(self.records, losses, self.runner.compile_time,
                       None if best is None else best.epoch, self.stopped_early)


def _rate_at(rate, n_examples: int, batch_size, drop_last: bool):
    """``epoch -> the learning rate of that epoch's last step`` for a number or an optax
    schedule of the step count; ``None`` for ``None``."""
    if rate is None:
        return None
    if not callable(rate):
        value = float(rate)
        return lambda epoch: value
    steps = steps_per_epoch(n_examples, batch_size, drop_last)
    return lambda epoch: float(rate(epoch * steps - 1))


def _showing(bar, task, callback):
    """``callback`` that first shows the record on the progress bar."""
    def shown(state, record):
        show_record(bar, task, record)
        return callback is not None and callback(state, record)

    return shown


def _train(runner: ChunkRunner, state, epochs: int, log_every: int, on_host: bool, callback,
           log: _Log, console, title: str) -> tuple[TrainState, History]:
    """:func:`_run_chunks`, under a progress bar titled ``title`` on ``console`` unless it is
    ``None``."""
    if console is None:
        return _run_chunks(runner, state, epochs, log_every, on_host, callback, log)
    bar, task = progress_bar(console, title, epochs, int(host_array(state.epoch)))
    with bar:
        return _run_chunks(runner, state, epochs, log_every, on_host,
                           _showing(bar, task, callback), log)


def _run_chunks(runner: ChunkRunner, state, epochs: int, log_every: int, on_host: bool,
                callback, log: _Log) -> tuple[TrainState, History]:
    """Train from ``state`` up to ``epochs`` in chunks of ``log_every``; ``(state, history)``
    (with early stopping, the best epoch's state).

    Args:
      runner: compiles and runs the chunks.
      state: the placed state to start from.
      epochs: the epoch to stop at.
      log_every: epochs per chunk (the last one may be shorter).
      on_host: keep the last good state as a host copy (the state is donated or spread over
        a mesh).
      callback: ``fit_state``'s; a true return stops early.
      log: the history (with the early-stopping tracker) to add each chunk to.

    Returns:
      ``(state, history)``.
    """
    epoch = int(host_array(state.epoch))
    good = to_host(state) if on_host else state
    while epoch < epochs:
        n = min(log_every, epochs - epoch)
        try:
            state, losses, metrics = runner.run(state, n)
        except Stopped:  # the chunk in flight is abandoned
            raise TrainingInterrupted(good, log.history()) from None
        losses = host_array(losses)
        metrics = {k: float(host_array(v)) for k, v in metrics.items()}
        bad = _first_bad_epoch(losses, metrics["train_loss"])
        if bad is not None:
            raise _diverged(epoch, bad, losses, metrics["train_loss"], good, log)
        epoch += n
        record = log.chunk(epoch, losses, metrics)
        good = to_host(state) if on_host else state
        stop = log.watch(record, good)
        if (callback is not None and callback(good, record)) or stop:
            break  # the callback or early stopping asked to stop
    return log.result(state)


def _first_bad_epoch(losses: np.ndarray, train_loss: float) -> int | None:
    """The first epoch of a chunk whose loss is NaN/Inf: its index in ``losses``; when only
    ``train_loss`` (evaluated after the chunk) is, ``len(losses)``; ``None`` when all are
    finite."""
    bad = np.flatnonzero(~np.isfinite(losses))
    if bad.size:
        return int(bad[0])
    return None if _finite(train_loss) else len(losses)


def _diverged(epoch: int, bad: int, losses, train_loss: float, good, log: _Log):
    """The :class:`TrainingDiverged` for a chunk that went bad; its finite losses join ``log``.

    Args:
      epoch: the epoch the chunk began after.
      bad: :func:`_first_bad_epoch` of the chunk.
      losses: the chunk's per-epoch losses.
      train_loss: the training loss evaluated after the chunk.
      good: the state the error carries (the end of the last all-finite chunk).
      log: the history so far.

    Returns:
      the exception, to raise.
    """
    log.losses.append(losses[:bad])
    value = float(losses[bad]) if bad < len(losses) else train_loss
    return TrainingDiverged(epoch + min(bad + 1, len(losses)), value, good, log.history())


def fit(model: Layer, loss: str | Loss, optimizer, data, **options):
    """Train ``model`` and return ``(params, history)``.

    Raises :class:`TrainingDiverged` when the loss turns NaN/Inf.

    Args:
      model: the model to train.
      loss: a loss name or :class:`~jaxprop.Loss`.
      optimizer: an optax ``GradientTransformation``, or a number: the learning rate of plain
        gradient descent.
      data: a ``jaxprop.data.Dataset``, ``(x, t)`` or ``(x, t, x_test, t_test)``.
      **options: those of :func:`fit_state` (``epochs`` is required).

    Returns:
      ``(params, history)``: the final state's params and the :class:`History`.
    """
    state, history = fit_state(model, loss, optimizer, data, **options)
    return state.params, history
