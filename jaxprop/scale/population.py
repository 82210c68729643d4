"""Populations: many networks trained at once, in one compiled call, by ``jax.vmap``.

Every member has its own parameters (a leading ``n`` axis on each leaf), its own optimizer state
and, optionally, its own learning rate; all see the same data. One member's training is
``jaxprop.train.make_train_epochs`` (a ``lax.scan`` over epochs of the hand-written step);
``vmap`` of it trains the whole population and ``jit`` compiles it once.

>>> model = jp.mlp([2, 4, 1], "sigmoid", "sigmoid")              # 2-4-1 sigmoid
>>> res = jp.fit_population(model, "sse_half", 0.1, (x, t), n=1000, epochs=10_000)
>>> int(res.solved.sum()), res.final_loss.shape                # XOR: how many got it
"""

from __future__ import annotations

import os
from functools import partial
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxprop.core.checks import validate_data
from jaxprop.core.layers import Layer
from jaxprop.core.losses import Loss, get_loss
from jaxprop.train.optimizers import as_optimizer
from jaxprop.train.step import TrainState, init_state, make_eval_fn, make_train_epochs


class PopulationResult(NamedTuple):
    """What ``fit_population`` returns; arrays have one row per member.

    ``params``: the trained params, each leaf with a leading ``n`` axis. ``final_loss``: ``(n,)``
    loss after training (NaN/Inf for a member that diverged). ``accuracy``: ``(n,)`` fraction of
    correct predictions on the training data (``jaxprop.train.accuracy_fn``).
    ``seeds``/``lrs``: ``(n,)`` or ``None`` when not given. ``losses``: ``(n, epochs)`` loss
    before each step, if recorded.
    """

    params: list
    final_loss: np.ndarray
    accuracy: np.ndarray
    seeds: np.ndarray | None
    lrs: np.ndarray | None
    losses: np.ndarray | None

    @property
    def solved(self) -> np.ndarray:
        """``(n,)`` bool: every training prediction right (XOR: all 4 outputs on the right side)."""
        return self.accuracy == 1.0


def init_population(model: Layer, key: jax.Array, n: int) -> list:
    """``n`` initialisations from ``jax.random.split(key, n)``; every leaf gets an ``n`` axis."""
    _check_n(n)
    return jax.vmap(model.init)(jax.random.split(key, n))


def _optimizer_for(optimizer, lrs):
    """``(optimizer, make)``: the shared optax optimizer, and ``make(lr)`` for a member's init."""
    if lrs is None:
        opt = as_optimizer(optimizer)
        return opt, lambda lr: opt  # lr unused: the optimizer is fixed
    if isinstance(optimizer, optax.GradientTransformation):
        raise ValueError("fit_population: with lrs, pass an optax alias such as optax.adam "
                         "(the function), not an optimizer instance")
    factory = optimizer if callable(optimizer) else optax.sgd
    # The learning rate lives in each member's optimizer state, so one optimizer serves all.
    make = lambda lr: optax.inject_hyperparams(factory)(learning_rate=lr)  # noqa: E731
    return make(float(lrs[0])), make


def init_population_state(model: Layer, optimizer, keys: jax.Array, lrs=None,
                          params=None) -> TrainState:
    """A stacked :class:`~jaxprop.train.TrainState`: member ``i`` is ``init_state(model, opt,
    keys[i])`` (so a member from ``jax.random.key(s)`` starts exactly like ``jaxprop train --seed
    s``), with learning rate ``lrs[i]`` in its optimizer state when ``lrs`` is given, and
    ``params[i]`` instead of fresh params when stacked ``params`` are given."""
    _, make = _optimizer_for(optimizer, lrs)
    lrs = jnp.zeros(len(keys)) if lrs is None else jnp.asarray(lrs, jnp.float32)
    return jax.vmap(lambda k, lr, p: init_state(model, make(lr), k, p))(keys, lrs, params)


def make_population_train(model: Layer, loss: str | Loss, optimizer: optax.GradientTransformation,
                          n_examples: int, epochs: int, batch_size: int | None = None,
                          drop_last: bool = False) -> Callable:
    """Jitted ``(states, x, t) -> (states, losses (n, epochs))``: ``jax.vmap`` over members of
    ``jaxprop.train.make_train_epochs`` (a ``lax.scan`` of the hand-written step). ``states``
    is a stacked ``TrainState`` (donated); ``x``, ``t`` are shared by every member.
    """
    train_epochs = make_train_epochs(model, loss, optimizer, n_examples, batch_size, drop_last)
    members = jax.vmap(partial(train_epochs, n_epochs=epochs), in_axes=(0, None, None))
    return jax.jit(members, donate_argnums=0)


def fit_population(
    model: Layer,
    loss: str | Loss,
    optimizer=0.1,
    data=None,
    *,
    n: int | None = None,
    key: jax.Array | None = None,
    keys: jax.Array | None = None,
    seeds=None,
    lrs=None,
    epochs: int = 1000,
    batch_size: int | None = None,
    drop_last: bool = False,
    params=None,
    record_losses: bool = False,
) -> PopulationResult:
    """Train a population on ``data = (x, t)`` for ``epochs`` epochs in one compiled call.

    Members: ``n`` (keys from ``jax.random.split(key, n)``, default key ``jax.random.key(0)``),
    or one per entry of ``keys`` (PRNG keys), ``seeds`` (ints: member ``i`` starts exactly like
    ``jaxprop train --seed seeds[i]``, see :func:`init_population_state`), ``lrs`` or ``params``
    (already stacked). ``optimizer``: a learning rate (plain gradient descent), an optax
    ``GradientTransformation``, or with ``lrs`` an optax alias such as ``optax.adam`` called with
    each member's ``learning_rate`` (default ``optax.sgd``). ``lrs``: one learning rate per
    member (an ``(n,)`` array), or one scalar for all. ``batch_size``: full batch by default;
    otherwise shuffled minibatches as in :func:`jaxprop.train.make_epoch_fn`, each member
    shuffling with its own key. A population too large for the device's memory is refused
    with an out-of-memory ``ValueError`` (:func:`check_population_memory`) before anything is
    allocated.
    """
    loss = get_loss(loss)
    if data is None or len(data) != 2:
        raise ValueError("fit_population: data must be a pair (x, t)")
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
        raise ValueError(f"fit_population: epochs must be a positive int, got {epochs!r}")
    seeds = None if seeds is None else np.asarray(seeds, dtype=np.int64).reshape(-1)
    lrs = None if lrs is None else np.asarray(lrs, dtype=np.float64)
    n = _population_size(n, keys, seeds, lrs, params)
    if lrs is not None:
        lrs = np.broadcast_to(lrs, (n,)).copy()
        if not np.all(np.isfinite(lrs) & (lrs > 0)):
            raise ValueError(f"fit_population: learning rates must be positive, got {lrs}")
    opt, _ = _optimizer_for(optimizer, lrs)
    if seeds is not None:
        keys = jax.vmap(jax.random.key)(jnp.asarray(seeds))
    elif keys is None:
        keys = jax.random.split(jax.random.key(0) if key is None else key, n)
    if params is not None:  # our own copy: the training call donates its input
        params = jax.tree.map(jnp.array, params)
    check_population_memory(model, opt, n, len(data[0]), batch_size)
    state = init_population_state(model, optimizer, keys, lrs, params)
    x, t = validate_data(jax.tree.map(lambda a: a[0], state.params), *data, loss=loss)

    train = make_population_train(model, loss, opt, x.shape[0], epochs, batch_size, drop_last)
    try:
        state, losses = train(state, x, t)
    except Exception as e:  # noqa: BLE001 -- XLA reports running out of memory as a runtime error
        if "RESOURCE_EXHAUSTED" in str(e) or "out of memory" in str(e).lower():
            raise ValueError(f"out of memory training {n:,} networks at once ("
                             f"{str(e).splitlines()[0][:200]}); train fewer") from None
        raise
    evaluate = jax.vmap(make_eval_fn(model, loss), in_axes=(0, None, None, 0))
    final_loss, acc = jax.jit(evaluate)(state.params, x, t, state.model_state)
    return PopulationResult(state.params, np.asarray(final_loss), np.asarray(acc), seeds, lrs,
                            np.asarray(losses) if record_losses else None)


def population_bytes(model: Layer, optimizer: optax.GradientTransformation, n: int,
                     batch: int, in_shape=None) -> int:
    """About how many bytes training ``n`` members needs: per member its params, optimizer
    state, gradients and updates, and what the forward pass keeps for the backward pass on a
    batch of ``batch`` examples (from shapes alone; nothing is allocated)."""
    shape = tuple(in_shape if in_shape is not None else model.in_shape)
    params, state, _ = jax.eval_shape(lambda k: model.init(k, shape), jax.random.key(0))
    opt_state = jax.eval_shape(optimizer.init, params)
    x = jax.ShapeDtypeStruct((batch, *shape), jnp.float32)
    y, residuals, _ = jax.eval_shape(
        lambda p, s, x: model.forward(p, s, x, train=False), params, state, x)

    def size(tree):
        return sum(int(np.prod(a.shape)) * np.dtype(a.dtype).itemsize
                   for a in jax.tree.leaves(tree) if hasattr(a, "shape"))

    per_member = 4 * size(params) + size(opt_state) + 3 * (size(residuals) + size(y))
    return n * per_member


def device_memory_bytes() -> int | None:
    """The memory of the default device: a GPU's ``bytes_limit``, or the host's available
    memory for the CPU (``None`` when unknown)."""
    device = jax.devices()[0]
    try:
        stats = device.memory_stats() or {}
    except Exception:  # noqa: BLE001 -- not every backend has memory statistics
        stats = {}
    if stats.get("bytes_limit"):
        return int(stats["bytes_limit"])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_population_memory(model: Layer, optimizer, n: int, n_examples: int,
                            batch_size: int | None = None, *, what: str | None = None) -> None:
    """Raise ``ValueError`` (an out-of-memory message) when training ``n`` members is
    estimated (:func:`population_bytes`) to need more than the device has."""
    batch = n_examples if batch_size is None else min(batch_size, n_examples)
    need = population_bytes(model, as_optimizer(optimizer), n, batch)
    have = device_memory_bytes()
    if have is not None and need > have:
        raise ValueError(
            f"out of memory: {what or f'a population of {n:,} networks'} needs about "
            f"{_gib(need)} (params, optimizer state and activations of {n:,} networks), more "
            f"than the {_gib(have)} this {jax.devices()[0].platform} has free; train fewer "
            "networks at once")


def _gib(b: int) -> str:
    return f"{b / 2**30:,.1f} GiB"


def _check_n(n) -> None:
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
        raise ValueError(f"population size must be a positive int, got {n!r}")


def _population_size(n, keys, seeds, lrs, params) -> int:
    sizes = {}
    if n is not None:
        _check_n(n)
        sizes["n"] = int(n)
    for name, value in (("keys", keys), ("seeds", seeds)):
        if value is not None:
            sizes[name] = len(value)
    if lrs is not None and lrs.ndim == 1:
        sizes["lrs"] = len(lrs)
    if params is not None:
        sizes["params"] = jax.tree.leaves(params)[0].shape[0]
    if not sizes:
        raise ValueError("fit_population: give n, keys, seeds, lrs or params")
    if len(set(sizes.values())) > 1:
        raise ValueError(f"fit_population: population sizes disagree: {sizes}")
    return next(iter(sizes.values()))
