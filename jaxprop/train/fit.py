"""``fit``: the host driver around the compiled training loop.

``fit`` compiles one chunk of ``log_every`` epochs (``make_train_epochs``, then an evaluation of
train/test loss and accuracy) and calls it repeatedly, so the host sees metrics only once per
chunk. The state buffers are donated to each call.

**Divergence guard.** ``fit`` checks the chunk's per-epoch losses on the host after each chunk
(never inside a step); the first non-finite one names the epoch in :class:`TrainingDiverged`,
which carries the state from the end of the last all-finite chunk.

**Stopping.** A compiled chunk cannot be cut short, so with ``should_stop`` ``fit`` never blocks
on one: each chunk compiles and runs in a daemon thread (XLA releases the GIL; the CPU backend
may run a call inline, so asynchronous dispatch alone is not enough) while the main thread polls
``should_stop()`` every ``POLL_SECONDS``; when it says stop, :class:`TrainingInterrupted`
carries the state from the end of the last whole chunk and the chunk in flight is abandoned
(a process that exits then should leave with ``os._exit``, which does not wait for it).
"""

from __future__ import annotations

import threading
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
    validate_data,
    warn_if_targets_outside_output,
)
from jaxprop.core.cache import remember
from jaxprop.core.layers import Layer
from jaxprop.core.losses import Loss, get_loss
from jaxprop.train.compile import (
    CompiledPrograms,
    auto_compiler_options,
    auto_unroll,
    forward_flops,
)
from jaxprop.train.optimizers import as_optimizer
from jaxprop.train.placement import place_for_training
from jaxprop.train.precision import Precision, get_precision
from jaxprop.train.step import (
    TrainState,
    accuracy_fn,
    init_state,
    make_eval_fn,
    make_train_epochs,
    steps_per_epoch,
)

Array = jax.Array


# The epoch counter is an int32 (TrainState.epoch); each step's key folds in the step's number,
# a uint32 counted over the whole run (epoch x minibatches per epoch + minibatch).
MAX_EPOCHS = 2**31 - 1
MAX_STEPS = 2**32
# How often (seconds) the host asks should_stop() while a chunk computes or compiles.
POLL_SECONDS = 0.02


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
    """``records``: one dict per host sync (epoch, loss, train/test loss and accuracy, time);
    ``losses``: the training loss of every epoch, ``(epochs,)``."""

    records: list
    losses: np.ndarray
    compile_time: float = 0.0


def _split_data(data):
    """``(x, t, x_test, t_test)`` from a Dataset, ``(x, t)`` or ``(x, t, x_test, t_test)``."""
    if hasattr(data, "x_train"):
        return data.x_train, data.y_train, data.x_test, data.y_test
    if isinstance(data, (tuple, list)) and len(data) in (2, 4):
        return (*data, None, None) if len(data) == 2 else tuple(data)
    raise ValueError("data must be a Dataset, (x, t) or (x, t, x_test, t_test)")


# Reused across fit calls with the same model, loss and optimizer objects (e.g. a resumed run
# in the same process), so jax's compilation cache applies.
@remember(maxsize=16)
def _chunk_fn(model, loss, optimizer, n_examples, batch_size, drop_last, accuracy, donate,
              precision=None, grad_fn=None, unroll=1, n_rows=None):
    """The jitted ``(state, x, t, test_data, n_epochs) -> (state, losses, metrics)``:
    ``n_epochs`` epochs, then loss (and accuracy) on the training (and test) data; ``metrics``
    is a dict ``{"train_loss", "train_accuracy", "test_loss", "test_accuracy"}``."""
    train_epochs = make_train_epochs(model, loss, optimizer, n_examples, batch_size, drop_last,
                                     precision=precision, grad_fn=grad_fn, unroll=unroll,
                                     n_rows=n_rows)
    evaluate = make_eval_fn(model, loss, accuracy, precision=precision)
    names = ("loss",) if accuracy is False else ("loss", "accuracy")
    mask = None if n_rows is None or n_rows == n_examples else np.arange(n_rows) < n_examples

    def chunk(state, x, t, test_data, n_epochs):
        state, losses = train_epochs(state, x, t, n_epochs)
        values = {f"train_{k}": v for k, v in zip(
            names, evaluate(state.params, x, t, state.model_state, mask))}
        if test_data:
            values.update({f"test_{k}": v for k, v in zip(
                names, evaluate(state.params, *test_data, state.model_state))})
        return state, losses, {k: jnp.asarray(v, losses.dtype) for k, v in values.items()}

    return jax.jit(chunk, static_argnums=4, donate_argnums=(0,) if donate else ())


# Compiled chunks kept across fit calls, keyed (jitted, n_epochs, options, signature).
_COMPILED = CompiledPrograms(maxsize=32)
# A training state smaller than this is not donated: keeping the last good state for the
# divergence guard then costs nothing, where a donated one must be copied to the host after
# every chunk (1 ms of a 2 ms XOR fit).
DONATE_MIN_BYTES = 1 << 20


def _signature(tree):
    """What a compiled program is specialised to: the tree, each leaf's type and placement."""
    leaves, treedef = jax.tree.flatten(tree)
    return treedef, tuple((jax.typeof(a), getattr(a, "sharding", None)) for a in leaves)


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
):
    """Train ``model``; return ``(state, history)`` (``state`` the final :class:`TrainState`).

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
        class indices.
      epochs: the total number of epochs (at most ``MAX_EPOCHS``); with ``state`` training
        continues from ``state.epoch`` up to ``epochs``.
      batch_size: examples per shuffled minibatch (:func:`~jaxprop.train.make_epoch_fn`);
        ``None`` for full batch.
      key: seeds initialisation and shuffling (required unless ``state`` is given).
      log_every: epochs per compiled chunk (default ``ceil(epochs / 10)``).
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

    Returns:
      ``(state, history)``: the final :class:`TrainState` and the :class:`History`
      (``records``, ``losses`` of every epoch, ``compile_time``: the seconds spent compiling).
    """
    loss = get_loss(loss)
    optimizer = as_optimizer(optimizer)
    policy = get_precision(precision)
    given_state = state is not None
    state = _initial_state(model, loss, optimizer, epochs, key, params, state)
    donate = donate and _nbytes((state.params, state.opt_state)) >= DONATE_MIN_BYTES
    if given_state and donate and mesh is None:  # (with a mesh, placing it copies it anyway)
        state = jax.tree.map(jnp.copy, state)  # own copies: the caller's arrays stay valid
    policy.check_params(state.params)
    start = int(host_array(state.epoch))
    x, t, test_data = _validated_data(model, loss, state, data)
    if accuracy is None:
        accuracy = accuracy_fn(loss) if _is_classification(loss, t) else False
    n_examples, n_rows = x.shape[0], None
    if mesh is not None:
        state, x, t, test_data = place_for_training(mesh, state, x, t, test_data)
        n_rows = x.shape[0]
    remaining = epochs - start
    steps = epochs * steps_per_epoch(n_examples, batch_size, drop_last)
    if steps > MAX_STEPS:
        raise ValueError(f"epochs={epochs} of {steps // epochs} minibatches each is "
                         f"{steps:,} steps, more than each step's random key "
                         f"can count ({MAX_STEPS:,}, uint32): train fewer epochs or use larger "
                         "minibatches")
    if isinstance(compiler_options, str):
        if compiler_options != "auto":
            raise ValueError(f"compiler_options must be a dict, None or 'auto', "
                             f"got {compiler_options!r}")
        n_params = sum(int(np.size(leaf)) for leaf in jax.tree.leaves(state.params))
        # (shapes only: slicing x[:1] would compile a program of its own)
        flops = forward_flops(model, state.params, state.model_state,
                              jax.ShapeDtypeStruct((1, *x.shape[1:]), x.dtype))
        compiler_options = auto_compiler_options(n_params, n_examples, batch_size,
                                                 forward_flops=flops)
    if unroll == "auto":
        unroll = auto_unroll(state.params, n_examples, batch_size)
    if isinstance(unroll, bool) or not isinstance(unroll, (int, np.integer)) or unroll < 1:
        raise ValueError(f"unroll must be a positive integer or 'auto', got {unroll!r}")
    log_every = int(log_every or max(1, -(-epochs // 10)))
    if log_every < 1:
        raise ValueError(f"log_every must be positive, got {log_every}")

    args = (model, loss, optimizer, n_examples, batch_size, drop_last, accuracy, donate, policy,
            grad_fn, int(unroll), n_rows)
    jitted = _chunk_fn(*args)
    options_key = tuple(sorted((compiler_options or {}).items()))
    signature = _signature((state, x, t, test_data))
    compile_time = 0.0
    records, losses_all = [], []

    def history():
        return History(records, np.concatenate(losses_all) if losses_all else np.zeros(0),
                       compile_time)

    def compile_chunk(args):
        with policy.matmul():  # "highest": around tracing and compilation, in this thread
            return jitted.lower(*args).compile(compiler_options)

    def get_compiled(n):
        def build():
            nonlocal compile_time
            t0 = time.perf_counter()
            args = (state, x, t, test_data, n)
            fn = _stoppable(lambda: compile_chunk(args), should_stop)
            compile_time += time.perf_counter() - t0
            if fn is _STOPPED:
                raise TrainingInterrupted(good, history())
            return fn

        return _COMPILED.get((jitted, n, options_key, signature), build)

    # the last good state: a host copy survives the donation of ``state`` to the next chunk
    good = to_host(state) if donate or mesh is not None else state
    t_start = time.perf_counter()
    done = 0
    while done < remaining:
        if should_stop is not None and should_stop():
            raise TrainingInterrupted(good, history())
        n = min(log_every, remaining - done)
        fn = get_compiled(n)
        out = _stoppable(lambda: jax.block_until_ready(fn(state, x, t, test_data)), should_stop)
        if out is _STOPPED:
            raise TrainingInterrupted(good, history())  # the chunk in flight is abandoned
        state, losses, metrics = out
        losses = host_array(losses)
        metrics = {k: float(host_array(v)) for k, v in metrics.items()}
        if not _finite(losses) or not _finite(metrics["train_loss"]):
            bad = np.flatnonzero(~np.isfinite(losses))
            first = start + done + (int(bad[0]) + 1 if bad.size else n)
            value = float(losses[bad[0]]) if bad.size else metrics["train_loss"]
            losses_all.append(losses[: bad[0]] if bad.size else losses)
            raise TrainingDiverged(first, value, good, history())
        done += n
        losses_all.append(losses)
        if losses_out is not None:
            losses_out.append(losses)
        record = {"epoch": start + done, "loss": float(losses[-1]), **metrics,
                  "time": time.perf_counter() - t_start}
        records.append(record)
        good = to_host(state) if donate or mesh is not None else state
        if callback is not None and callback(good, record):
            break  # the callback asked to stop early
    return state, history()


def _initial_state(model, loss, optimizer, epochs, key, params, state) -> TrainState:
    """The state training starts from, after the checks that need no data."""
    if not isinstance(epochs, (int, np.integer)) or isinstance(epochs, bool) or epochs < 0:
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
    """``(x, t, test_data)``: the training arrays and ``(x_test, t_test)`` or ``()``, checked
    against the params (and the targets against the model's outputs)."""
    x, t, x_test, t_test = _split_data(data)
    x, t = validate_data(state.params, x, t, loss=loss)
    test_data = ()
    if x_test is not None:
        test_data = validate_data(state.params, x_test, t_test, loss=loss)
    if loss.integer_labels:
        for xs, ts in ((x, t), test_data or (x, t)):  # the test labels too
            check_labels_fit(model, state.params, state.model_state, xs, ts)
    else:
        warn_if_targets_outside_output(model, loss, t)
    return x, t, test_data


_STOPPED = object()


def _stoppable(work: Callable, should_stop: Callable[[], bool] | None):
    """``work()``; with ``should_stop``, in a daemon thread while the caller polls it, and
    ``_STOPPED`` (the thread abandoned) as soon as it says stop."""
    if should_stop is None:
        return work()
    result = {}

    def target():
        try:
            result["value"] = work()
        except BaseException as e:  # re-raised in the caller's thread
            result["error"] = e

    thread = threading.Thread(target=target, name="jaxprop-chunk", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(POLL_SECONDS)  # returns as soon as the work is done
        if thread.is_alive() and should_stop():
            return _STOPPED
    if "error" in result:
        raise result["error"]
    return result["value"]


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
