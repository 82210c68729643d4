"""``fit``: the host driver around the compiled training loop.

``fit`` compiles one chunk of ``log_every`` epochs (``make_train_epochs``, then an evaluation of
train/test loss and accuracy) and calls it repeatedly, so the host sees metrics only once per
chunk. The state buffers are donated to each call (from ``DONATE_MIN_BYTES`` up), and each
compiled chunk is kept for later calls with the same model, loss, optimizer and shapes.

**Divergence guard.** ``fit`` checks the chunk's per-epoch losses on the host after each chunk
(never inside a step); the first non-finite one names the epoch in :class:`TrainingDiverged`,
which carries the state from the end of the last all-finite chunk.
"""

from __future__ import annotations

import functools
import time
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxprop.core.checks import validate_data
from jaxprop.core.layers import Layer
from jaxprop.core.losses import Loss, get_loss
from jaxprop.train.compile import auto_compiler_options, auto_unroll, forward_flops
from jaxprop.train.optimizers import as_optimizer
from jaxprop.train.precision import Precision, get_precision
from jaxprop.train.step import TrainState, init_state, make_eval_fn, make_train_epochs

Array = jax.Array


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


def _chunk_fn(model, loss, optimizer, n_examples, batch_size, drop_last, accuracy, donate,
              precision=None, grad_fn=None, unroll=1):
    """The jitted ``(state, x, t, test_data, n_epochs) -> (state, losses, metrics)``:
    ``n_epochs`` epochs, then loss and accuracy on the training (and test) data."""
    train_epochs = make_train_epochs(model, loss, optimizer, n_examples, batch_size, drop_last,
                                     precision=precision, grad_fn=grad_fn, unroll=unroll)
    evaluate = make_eval_fn(model, loss, accuracy, precision=precision)

    def chunk(state, x, t, test_data, n_epochs):
        state, losses = train_epochs(state, x, t, n_epochs)
        metrics = evaluate(state.params, x, t, state.model_state)
        if test_data:
            metrics += evaluate(state.params, *test_data, state.model_state)
        return state, losses, jnp.stack([jnp.asarray(m, losses.dtype) for m in metrics])

    return jax.jit(chunk, static_argnums=4, donate_argnums=(0,) if donate else ())


# Reused across fit calls with the same model, loss and optimizer objects (e.g. a resumed run
# in the same process), so jax's compilation cache applies.
_cached_chunk_fn = functools.lru_cache(maxsize=16)(_chunk_fn)

# Compiled chunks kept across fit calls: {(jitted, n_epochs, options, signature): executable}.
_COMPILED: dict = {}
_COMPILED_MAX = 32
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
        return jax.random.wrap_key_data(np.asarray(jax.random.key_data(key)),
                                        impl=jax.random.key_impl(key))
    return np.asarray(key)


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
    accuracy: Callable | None = None,
    donate: bool = True,
    compiler_options: dict | str | None = "auto",
    precision: str | Precision | None = None,
    unroll: int | str = "auto",
    grad_fn: Callable | None = None,
):
    """Train ``model``; return ``(state, history)`` (``state`` the final :class:`TrainState`).

    ``optimizer``: an optax ``GradientTransformation``, or a number: the learning rate of
    plain gradient descent. ``data``: a ``jaxprop.data.Dataset``, ``(x, t)`` or ``(x, t, x_test, t_test)``.
    ``epochs``: the total number of epochs; with ``state`` (a resumed :class:`TrainState`)
    training continues from ``state.epoch`` up to ``epochs``. ``key`` seeds initialisation and
    shuffling (required unless ``state`` is given); ``params`` overrides the initial params.
    The loop runs in compiled chunks of ``log_every`` epochs (default ``ceil(epochs / 10)``);
    after each chunk the host gets the per-epoch losses and train/test loss and accuracy,
    checks them for NaN/Inf, appends a record to ``history.records`` and calls
    ``callback(state, record)``; a true return value stops training early (don't keep
    ``state``'s arrays: they are donated to the next chunk; ``jax.device_get`` them).
    ``history.compile_time`` is the seconds spent compiling. ``accuracy``: ``(y, t) ->
    fraction`` (default :func:`accuracy_fn`); ``donate=False`` keeps the input buffers.
    ``compiler_options`` go to XLA; ``"auto"`` (default): :func:`auto_compiler_options`
    (faster compilation for short runs, single-threaded matmuls for tiny steps, on CPU);
    ``None``: XLA's defaults. ``precision``: ``"f32"``, ``"bf16"`` (float32 params and
    optimizer state, bfloat16 forward and backward, float32 loss), ``"highest"`` (float32 with
    full-precision matmuls on GPU/TPU), ``"f64"``, or ``None`` (default: the params' own
    dtype, no casts); see :mod:`jaxprop.train.precision`. Evaluation runs under it too.
    ``unroll``: epochs per iteration of the compiled loop; ``"auto"`` (default):
    :func:`~jaxprop.train.compile.auto_unroll`. ``grad_fn``: another gradient for the same
    step (see :func:`~jaxprop.train.make_train_step`; the benchmarks pass ``jax.grad``'s).
    """
    loss = get_loss(loss)
    optimizer = as_optimizer(optimizer)
    policy = get_precision(precision)
    if not isinstance(epochs, (int, np.integer)) or isinstance(epochs, bool) or epochs < 0:
        raise ValueError(f"epochs must be a non-negative integer, got {epochs!r}")
    given_state = state is not None
    if state is None:
        if key is None:
            raise ValueError("fit needs a PRNG key (key=jax.random.key(seed)) or a state")
        state = init_state(model, optimizer, key, params)
    donate = donate and _nbytes((state.params, state.opt_state)) >= DONATE_MIN_BYTES
    if given_state and donate:
        state = jax.tree.map(jnp.copy, state)  # own copies: the caller's arrays stay valid
    start = int(state.epoch)
    if start > epochs:
        raise ValueError(f"the state is already at epoch {start}, past epochs={epochs}")
    policy.check_params(state.params)
    x, t, x_test, t_test = _split_data(data)
    x, t = validate_data(state.params, x, t)
    has_test = x_test is not None
    if has_test:
        x_test, t_test = validate_data(state.params, x_test, t_test)
    test_data = (x_test, t_test) if has_test else ()
    remaining = epochs - start
    if isinstance(compiler_options, str):
        if compiler_options != "auto":
            raise ValueError(f"compiler_options must be a dict, None or 'auto', "
                             f"got {compiler_options!r}")
        n_params = sum(int(np.size(leaf)) for leaf in jax.tree.leaves(state.params))
        flops = forward_flops(model, state.params, state.model_state, x[:1])
        compiler_options = auto_compiler_options(n_params, x.shape[0], batch_size,
                                                 forward_flops=flops)
    if unroll == "auto":
        unroll = auto_unroll(state.params, x.shape[0], batch_size)
    if isinstance(unroll, bool) or not isinstance(unroll, (int, np.integer)) or unroll < 1:
        raise ValueError(f"unroll must be a positive integer or 'auto', got {unroll!r}")
    log_every = int(log_every or max(1, -(-epochs // 10)))
    if log_every < 1:
        raise ValueError(f"log_every must be positive, got {log_every}")

    args = (model, loss, optimizer, x.shape[0], batch_size, drop_last, accuracy, donate,
            policy, grad_fn, int(unroll))
    try:
        jitted = _cached_chunk_fn(*args)
    except TypeError:  # something unhashable: no reuse across calls
        jitted = _chunk_fn(*args)
    options_key = tuple(sorted((compiler_options or {}).items()))
    signature = _signature((state, x, t, test_data))
    compile_time = 0.0

    def get_compiled(n):
        nonlocal compile_time
        cache_key = (jitted, n, options_key, signature)
        if cache_key not in _COMPILED:
            t0 = time.perf_counter()
            with policy.matmul():  # "highest": around tracing and compilation
                _COMPILED[cache_key] = jitted.lower(state, x, t, test_data, n).compile(
                    compiler_options)
            compile_time += time.perf_counter() - t0
            while len(_COMPILED) > _COMPILED_MAX:
                _COMPILED.pop(next(iter(_COMPILED)))
        return _COMPILED[cache_key]

    key_host = _host_key(state.key)

    def host_copy(st):  # survives the donation of ``st`` to the next chunk
        params, opt_state, epoch, model_state = jax.device_get(
            (st.params, st.opt_state, st.epoch, st.model_state))
        return TrainState(params, opt_state, key_host, epoch, model_state)

    records, losses_all = [], []
    good = host_copy(state) if donate else state
    t_start = time.perf_counter()
    done = 0
    while done < remaining:
        n = min(log_every, remaining - done)
        fn = get_compiled(n)
        state, losses, metrics = fn(state, x, t, test_data)
        losses, metrics = np.asarray(losses), np.asarray(metrics)
        if not _finite(losses) or not _finite(metrics[0]):
            bad = np.flatnonzero(~np.isfinite(losses))
            first = start + done + (int(bad[0]) + 1 if bad.size else n)
            value = float(losses[bad[0]]) if bad.size else float(metrics[0])
            losses_all.append(losses[: bad[0]] if bad.size else losses)
            hist = History(records, np.concatenate(losses_all), compile_time)
            raise TrainingDiverged(first, value, good, hist)
        done += n
        losses_all.append(losses)
        record = {
            "epoch": start + done,
            "loss": float(losses[-1]),
            "train_loss": float(metrics[0]),
            "train_accuracy": float(metrics[1]),
            "time": time.perf_counter() - t_start,
        }
        if has_test:
            record.update(test_loss=float(metrics[2]), test_accuracy=float(metrics[3]))
        records.append(record)
        good = host_copy(state) if donate else state
        if callback is not None and callback(state, record):
            break  # the callback asked to stop early
    history = History(records, np.concatenate(losses_all) if losses_all else np.zeros(0),
                      compile_time)
    return state, history


def fit(model: Layer, loss: str | Loss, optimizer, data, **options):
    """Train ``model`` and return ``(params, history)``; ``options`` are those of
    :func:`fit_state` (``epochs`` is required).

    Raises :class:`TrainingDiverged` when the loss turns NaN/Inf.
    """
    state, history = fit_state(model, loss, optimizer, data, **options)
    return state.params, history
