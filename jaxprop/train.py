"""Training: a jitted step with the hand-written gradients, whole epochs inside ``lax.scan``.

Pure building blocks (no Python side effects; jit, ``vmap`` or ``scan`` them freely)::

    make_train_step(model, loss, optimizer)      -> step(params, opt_state, x, t[, mask])
                                                     -> (params, opt_state, loss)
    make_epoch_fn(model, loss, optimizer, n_examples, batch_size=None, drop_last=False)
                                                  -> epoch(params, opt_state, x, t, key)
                                                     -> (params, opt_state, epoch_loss)
    make_train_epochs(model, loss, optimizer, n_examples, batch_size=None, drop_last=False)
                                                  -> train_epochs(state, x, t, n_epochs)
                                                     -> (state, losses: (n_epochs,))
    init_state(model, optimizer, key, params=None) -> TrainState(params, opt_state, key, epoch)

``fit`` drives them from the host: it compiles one chunk of ``log_every`` epochs (plus an
evaluation of train/test loss and accuracy) and calls it repeatedly, so the host sees metrics
only once per chunk. The state buffers are donated to each call.

**Key schedule.** ``TrainState.key`` never changes; epoch ``e`` (0-based) shuffles with
``fold_in(key, e)``. A run stopped after epoch ``k`` and resumed from its checkpoint therefore
draws exactly the permutations of the uninterrupted run.

**Ragged last minibatch.** With ``n`` examples and batch size ``B`` an epoch has ``ceil(n / B)``
steps; the index list is padded (wrapping around the permutation) to a whole number of batches
and a 0/1 mask marks the real rows, so every step has the same shape and nothing recompiles.
``drop_last=True`` drops the ragged batch instead. The masked gradient keeps the ``Loss``
protocol untouched: each padded batch is scored row by row (the loss applied to each row as a
batch of one, via ``vmap``), the rows' values and output gradients are multiplied by the mask,
and then summed (sum-reduced losses such as ``sse_half``) or divided by the number of real rows
(mean-reduced losses). That is exactly the loss and the gradient of the un-padded batch
(:func:`loss_reduction` knows the built-in losses and probes any other by scoring one example
and the same example twice). Batches that need no padding use ``loss_and_grad_fn`` unchanged.

**Divergence guard.** ``fit`` checks the chunk's per-epoch losses on the host after each chunk
(never inside a step); the first non-finite one names the epoch in :class:`TrainingDiverged`,
which carries the state from the end of the last all-finite chunk.
"""

from __future__ import annotations

import functools
import math
import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxprop.backprop import loss_and_grad_fn, validate_data
from jaxprop.losses import LOSSES as _LOSSES
from jaxprop.losses import Loss, get_loss
from jaxprop.network import Model

Array = jax.Array


class TrainState(NamedTuple):
    """Everything that evolves during training; a pytree (vmap it to train many networks).

    ``key`` is the run's base PRNG key (epoch ``e`` uses ``fold_in(key, e)``); ``epoch`` counts
    finished epochs (int32 scalar).
    """

    params: Any
    opt_state: Any
    key: Array
    epoch: Array


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


# --------------------------------------------------------------------------------------------
# Pure building blocks


def init_state(model: Model, optimizer: optax.GradientTransformation, key: Array, params=None):
    """A fresh :class:`TrainState`: params from ``model.init`` (unless given) and the optimizer
    state. ``key`` is split into an initialisation key and the shuffling key; when ``params``
    are given, ``key`` itself becomes the shuffling key. Works under ``jax.vmap`` over keys."""
    try:
        init = _cached_init_fn(model, optimizer)
    except TypeError:  # unhashable model or optimizer
        init = _init_fn(model, optimizer)
    return init(key, params)


def _init_fn(model, optimizer):
    def init(key, params):
        if params is None:
            k_init, key = jax.random.split(key)
            params = model.init(k_init)
        return TrainState(params, optimizer.init(params), key, jnp.zeros((), jnp.int32))

    jitted = jax.jit(init)  # one compilation instead of one per eager op
    compiled = {}

    def run(key, params):
        # It runs once: compile it fast (random-number and truncated-normal code takes
        # seconds to optimise on CPU and microseconds to run either way).
        if isinstance(key, jax.core.Tracer) or any(
                isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(params)):
            return jitted(key, params)  # inside vmap/jit: let the outer transform handle it
        sig = str(jax.tree.map(lambda a: (jnp.shape(a), jnp.result_type(a)), (key, params)))
        if sig not in compiled:
            options = FAST_COMPILE if jax.default_backend() == "cpu" else None
            compiled[sig] = jitted.lower(key, params).compile(options)
        return compiled[sig](key, params)

    return run


_cached_init_fn = functools.lru_cache(maxsize=16)(_init_fn)


@functools.lru_cache(maxsize=64)
def loss_reduction(loss: str | Loss) -> str:
    """``"sum"`` or ``"mean"``: how ``loss`` combines examples.

    Known for the built-in losses (``sse_half`` sums, the others average); for any other loss
    found by scoring one example and the same example twice. Raises ``ValueError`` for a loss
    that neither doubles nor stays the same.
    """
    loss = get_loss(loss)
    if _LOSSES.get(loss.name) is loss:
        return "sum" if loss.name == "sse_half" else "mean"
    y = np.array([[0.25, 0.75]], np.float32)
    t = np.array([[1.0, 0.0]], np.float32)
    with jax.ensure_compile_time_eval():
        probe = jax.jit(lambda y1, t1, y2, t2: (loss.value(y1, t1), loss.value(y2, t2)))
        one, two = map(float, probe(y, t, np.tile(y, (2, 1)), np.tile(t, (2, 1))))
    if one != 0 and math.isclose(two / one, 2.0, rel_tol=1e-4):
        return "sum"
    if one != 0 and math.isclose(two / one, 1.0, rel_tol=1e-4):
        return "mean"
    raise ValueError(f"loss {loss.name}: cannot tell whether it sums or averages over examples")


def masked_loss_and_grad_fn(model: Model, loss: str | Loss) -> Callable:
    """``(params, x, t, mask) -> (loss, dL/dparams)`` counting only rows where ``mask`` is set.

    ``x: (n, *in_shape)``, ``t: (n, out)``, ``mask: (n,)`` bool or 0/1. Equals
    ``loss_and_grad_fn(model, loss)`` on ``x[mask], t[mask]`` (see the module docstring).
    """
    loss = get_loss(loss)
    reduction = loss_reduction(loss)
    row_value = jax.vmap(lambda y, t: loss.value(y[None], t[None]))
    row_grad = jax.vmap(lambda y, t: loss.grad(y[None], t[None])[0])

    def masked_loss_and_grad(params, x, t, mask):
        y, residuals = model.forward(params, x)
        w = mask.astype(y.dtype)
        if reduction == "mean":
            w = w / jnp.maximum(jnp.sum(w), 1)
        value = jnp.sum(w * row_value(y, t))
        dy = w.reshape((-1,) + (1,) * (y.ndim - 1)) * row_grad(y, t)
        dparams, _ = model.backward(params, residuals, dy)
        return value, dparams

    return masked_loss_and_grad


def make_train_step(model: Model, loss: str | Loss, optimizer: optax.GradientTransformation,
                    *, masked: bool = False) -> Callable:
    """The pure step ``(params, opt_state, x, t) -> (params, opt_state, loss)``.

    Hand-written gradients, then ``optimizer`` (any optax ``GradientTransformation``);
    ``loss`` is the value before the update. ``masked=True`` gives
    ``(params, opt_state, x, t, mask)`` for padded batches (:func:`masked_loss_and_grad_fn`).
    """
    grad_fn = masked_loss_and_grad_fn(model, loss) if masked else loss_and_grad_fn(model, loss)

    def step(params, opt_state, x, t, *mask):
        value, grads = grad_fn(params, x, t, *mask)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    return step


def make_epoch_fn(model: Model, loss: str | Loss, optimizer: optax.GradientTransformation,
                  n_examples: int, batch_size: int | None = None, drop_last: bool = False):
    """The pure epoch ``(params, opt_state, x, t, key) -> (params, opt_state, epoch_loss)``.

    ``batch_size=None`` (or ``>= n_examples``): one full-batch step, ``key`` unused. Otherwise a
    fresh permutation from ``key`` and ``ceil(n / batch_size)`` minibatch steps in a
    ``lax.scan`` (the last one padded and masked), or ``floor`` of it with ``drop_last``.
    ``epoch_loss`` is the minibatch losses averaged with weights = real rows per batch.
    """
    n = int(n_examples)
    if n < 1:
        raise ValueError("training needs at least one example")
    if batch_size is not None and (not isinstance(batch_size, (int, np.integer)) or batch_size < 1):
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if batch_size is None or batch_size >= n:
        step = make_train_step(model, loss, optimizer)

        def full_batch_epoch(params, opt_state, x, t, key):
            del key
            return step(params, opt_state, x, t)

        return full_batch_epoch

    bs = int(batch_size)
    n_batches = n // bs if drop_last else -(-n // bs)
    ragged = n_batches * bs != n and not drop_last
    step = make_train_step(model, loss, optimizer, masked=ragged)
    mask = (np.arange(n_batches * bs) < n).reshape(n_batches, bs)
    counts = jnp.asarray(mask.sum(axis=1), jnp.float32)

    def minibatch_epoch(params, opt_state, x, t, key):
        perm = jax.random.permutation(key, n)
        idx = perm[jnp.arange(n_batches * bs) % n].reshape(n_batches, bs)

        def body(carry, inputs):
            p, s = carry
            i, m = inputs
            extra = (m,) if ragged else ()
            p, s, value = step(p, s, x[i], t[i], *extra)
            return (p, s), value

        (params, opt_state), values = jax.lax.scan(body, (params, opt_state), (idx, mask))
        c = counts.astype(values.dtype)
        return params, opt_state, jnp.sum(values * c) / jnp.sum(c)

    return minibatch_epoch


def make_train_epochs(model: Model, loss: str | Loss, optimizer: optax.GradientTransformation,
                      n_examples: int, batch_size: int | None = None, drop_last: bool = False):
    """The pure loop ``(state, x, t, n_epochs) -> (state, losses)`` over ``n_epochs`` epochs.

    One ``lax.scan`` over epochs (each epoch itself a scan over minibatches); ``n_epochs`` must
    be static (bind it with ``functools.partial`` before ``jit``/``vmap``). Epoch ``e`` shuffles
    with ``fold_in(state.key, e)``. ``losses[i]`` is the loss of epoch ``state.epoch + i``.
    To train a population: ``jax.vmap(partial(train_epochs, n_epochs=N), in_axes=(0, None,
    None))`` over a stacked ``TrainState``.
    """
    epoch_fn = make_epoch_fn(model, loss, optimizer, n_examples, batch_size, drop_last)

    def train_epochs(state: TrainState, x, t, n_epochs: int):
        def body(carry, _):
            params, opt_state, epoch = carry
            key = jax.random.fold_in(state.key, epoch)
            params, opt_state, value = epoch_fn(params, opt_state, x, t, key)
            return (params, opt_state, epoch + 1), value

        init = (state.params, state.opt_state, state.epoch)
        (params, opt_state, epoch), losses = jax.lax.scan(body, init, None, length=n_epochs)
        return TrainState(params, opt_state, state.key, epoch), losses

    return train_epochs


def accuracy_fn(loss: str | Loss) -> Callable:
    """``(y, t) -> accuracy``: argmax agreement for several outputs; for one output a threshold
    (0 on logits for ``bce_with_logits``, 0.5 otherwise) against 0/1 targets."""
    loss = get_loss(loss)
    threshold = 0.0 if loss.name == "bce_with_logits" else 0.5

    def accuracy(y, t):
        if y.shape[-1] == 1:
            return jnp.mean((y > threshold) == (t > 0.5))
        return jnp.mean(jnp.argmax(y, -1) == jnp.argmax(t, -1))

    return accuracy


def make_eval_fn(model: Model, loss: str | Loss, accuracy: Callable | None = None) -> Callable:
    """The pure ``(params, x, t) -> (loss, accuracy)`` on a whole data set."""
    loss = get_loss(loss)
    accuracy = accuracy or accuracy_fn(loss)

    def evaluate(params, x, t):
        y = model.apply(params, x)
        return loss.value(y, t), accuracy(y, t)

    return evaluate


# --------------------------------------------------------------------------------------------
# Host driver


def _split_data(data):
    """``(x, t, x_test, t_test)`` from a Dataset, ``(x, t)`` or ``(x, t, x_test, t_test)``."""
    if hasattr(data, "x_train"):
        return data.x_train, data.y_train, data.x_test, data.y_test
    if isinstance(data, (tuple, list)) and len(data) in (2, 4):
        return (*data, None, None) if len(data) == 2 else tuple(data)
    raise ValueError("data must be a Dataset, (x, t) or (x, t, x_test, t_test)")


# XLA CPU options that compile about 3x faster (no LLVM optimisation, the classic fusion
# emitters) for code that runs about 1.2x (XOR) to 4x (digits) slower per step.
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_cpu_use_fusion_emitters": False}
# Below this many FLOPs per epoch, compiling dominates a typical run (XOR's 10,000 epochs,
# digits' 15) and optimising the code does not pay for itself.
AUTO_FAST_COMPILE_EPOCH_FLOPS = 1e8
# Below this many FLOPs per step, handing matmuls to Eigen's thread pool costs more than it
# saves (XOR 2-4-1: 2x faster steps on the calling thread).
AUTO_SINGLE_THREAD_STEP_FLOPS = 1e5


def auto_compiler_options(n_params: int, n_examples: int,
                          batch_size: int | None) -> dict | None:
    """The XLA options ``fit(compiler_options="auto")`` picks (CPU only; ``None`` elsewhere).

    ``FAST_COMPILE`` when an epoch's estimated FLOPs (6 per parameter per example) are under
    ``AUTO_FAST_COMPILE_EPOCH_FLOPS``; single-threaded matmuls when a step's are under
    ``AUTO_SINGLE_THREAD_STEP_FLOPS``. The choice never depends on the number of epochs, so
    a resumed run is compiled exactly like the uninterrupted one (and gives the same bits).
    """
    if jax.default_backend() != "cpu":
        return None
    batch = n_examples if batch_size is None else min(batch_size, n_examples)
    options = {}
    if 6.0 * n_params * n_examples < AUTO_FAST_COMPILE_EPOCH_FLOPS:
        options.update(FAST_COMPILE)
    if 6.0 * n_params * batch < AUTO_SINGLE_THREAD_STEP_FLOPS:
        options["xla_cpu_multi_thread_eigen"] = False
    return options or None


def _chunk_fn(model, loss, optimizer, n_examples, batch_size, drop_last, accuracy, donate):
    """The jitted ``(state, x, t, test_data, n_epochs) -> (state, losses, metrics)``:
    ``n_epochs`` epochs, then loss and accuracy on the training (and test) data."""
    train_epochs = make_train_epochs(model, loss, optimizer, n_examples, batch_size, drop_last)
    evaluate = make_eval_fn(model, loss, accuracy)

    def chunk(state, x, t, test_data, n_epochs):
        state, losses = train_epochs(state, x, t, n_epochs)
        metrics = evaluate(state.params, x, t)
        if test_data:
            metrics += evaluate(state.params, *test_data)
        return state, losses, jnp.stack([jnp.asarray(m, losses.dtype) for m in metrics])

    return jax.jit(chunk, static_argnums=4, donate_argnums=(0,) if donate else ())


# Reused across fit calls with the same model, loss and optimizer objects (e.g. a resumed run
# in the same process), so jax's compilation cache applies.
_cached_chunk_fn = functools.lru_cache(maxsize=16)(_chunk_fn)


def _host_key(key):
    """A copy of ``key`` that owns its buffer (typed PRNG keys or raw uint32 keys)."""
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return jax.random.wrap_key_data(np.asarray(jax.random.key_data(key)),
                                        impl=jax.random.key_impl(key))
    return np.asarray(key)


def _finite(a) -> bool:
    return bool(np.all(np.isfinite(a)))


def fit_state(
    model: Model,
    loss: str | Loss,
    optimizer: optax.GradientTransformation,
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
):
    """Train ``model``; return ``(state, history)`` (``state`` the final :class:`TrainState`).

    ``data``: a ``jaxprop.data.Dataset``, ``(x, t)`` or ``(x, t, x_test, t_test)``.
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
    ``None``: XLA's defaults.
    """
    loss = get_loss(loss)
    if not isinstance(epochs, (int, np.integer)) or isinstance(epochs, bool) or epochs < 0:
        raise ValueError(f"epochs must be a non-negative integer, got {epochs!r}")
    if state is None:
        if key is None:
            raise ValueError("fit needs a PRNG key (key=jax.random.key(seed)) or a state")
        state = init_state(model, optimizer, key, params)
    elif donate:
        state = jax.tree.map(jnp.copy, state)  # own copies: the caller's arrays stay valid
    start = int(state.epoch)
    if start > epochs:
        raise ValueError(f"the state is already at epoch {start}, past epochs={epochs}")
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
        compiler_options = auto_compiler_options(n_params, x.shape[0], batch_size)
    log_every = int(log_every or max(1, -(-epochs // 10)))
    if log_every < 1:
        raise ValueError(f"log_every must be positive, got {log_every}")

    args = (model, loss, optimizer, x.shape[0], batch_size, drop_last, accuracy, donate)
    try:
        jitted = _cached_chunk_fn(*args)
    except TypeError:  # something unhashable: no reuse across calls
        jitted = _chunk_fn(*args)
    compiled: dict[int, Any] = {}
    compile_time = 0.0

    def get_compiled(n):
        nonlocal compile_time
        if n not in compiled:
            t0 = time.perf_counter()
            compiled[n] = jitted.lower(state, x, t, test_data, n).compile(compiler_options)
            compile_time += time.perf_counter() - t0
        return compiled[n]

    key_host = _host_key(state.key)

    def host_copy(st):  # survives the donation of ``st`` to the next chunk
        params, opt_state, epoch = jax.device_get((st.params, st.opt_state, st.epoch))
        return TrainState(params, opt_state, key_host, epoch)

    records, losses_all = [], []
    good = host_copy(state)
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


def fit(
    model: Model,
    loss: str | Loss,
    optimizer: optax.GradientTransformation,
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
):
    """Train ``model`` and return ``(params, history)``; see :func:`fit_state` for the options.

    Raises :class:`TrainingDiverged` when the loss turns NaN/Inf.
    """
    state, history = fit_state(
        model, loss, optimizer, data, epochs=epochs, batch_size=batch_size, key=key,
        log_every=log_every, callback=callback, drop_last=drop_last, params=params, state=state,
        accuracy=accuracy, donate=donate, compiler_options=compiler_options)
    return state.params, history
