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

import functools
import math
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxprop.core.checks import validate_data
from jaxprop.core.layers import Layer
from jaxprop.core.losses import Loss, get_loss
from jaxprop.core.cache import remember
from jaxprop.core.validate import check_int, is_int
from jaxprop.train.compile import (
    AUTO_FAST_COMPILE_RUN_FLOPS,
    AUTO_SINGLE_THREAD_STEP_FLOPS,
    FAST_COMPILE,
    CompiledPrograms,
    compile_lowered,
    forward_flops,
    step_flops,
)
from jaxprop.train.memory import check_training_fits, training_bytes
from jaxprop.train.optimizers import as_optimizer
from jaxprop.train.precision import get_precision
from jaxprop.train.step import (
    TrainState,
    init_state,
    key_from_seed,
    make_eval_fn,
    make_train_epochs,
)


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
    """The optax optimizer every member shares. With ``lrs``, ``optax.inject_hyperparams`` of
    the alias: each member's learning rate lives in its own optimizer state
    (:func:`_with_learning_rate`), so one optimizer (and one compiled program) serves all."""
    if lrs is None:
        return as_optimizer(optimizer)
    if isinstance(optimizer, optax.GradientTransformation):
        raise ValueError("fit_population: with lrs, pass an optax alias such as optax.adam "
                         "(the function), not an optimizer instance")
    return _injected(optimizer if callable(optimizer) else optax.sgd)


@remember(maxsize=16)
def _injected(factory):
    return optax.inject_hyperparams(factory)(learning_rate=1.0)


def _with_learning_rate(opt_state, lr):
    rate = opt_state.hyperparams["learning_rate"]
    return opt_state._replace(hyperparams={**opt_state.hyperparams,
                                           "learning_rate": jnp.asarray(lr, rate.dtype)})


def init_population_state(model: Layer, optimizer, keys: jax.Array, lrs=None,
                          params=None) -> TrainState:
    """A stacked :class:`~jaxprop.train.TrainState`, one member per key.

    Member ``i`` is ``init_state(model, opt, keys[i])`` (so a member from ``jax.random.key(s)``
    starts exactly like ``jaxprop train --seed s``); every leaf gets a leading member axis.

    Args:
      model: the model, with its input shape.
      optimizer: a learning rate or optax ``GradientTransformation``; with ``lrs``, an optax
        alias such as ``optax.adam`` (default ``optax.sgd`` when not callable), as in
        :func:`fit_population`.
      keys: the members' PRNG keys, ``(n,)``.
      lrs: ``(n,)`` learning rates: ``lrs[i]`` goes in member ``i``'s optimizer state; ``None``
        for the optimizer as it is.
      params: stacked params (a leading ``n`` axis) used instead of fresh ones, or ``None``.

    Returns:
      the stacked :class:`~jaxprop.train.TrainState`.
    """
    opt = _optimizer_for(optimizer, lrs)
    if lrs is None:
        return jax.vmap(lambda k, p: init_state(model, opt, k, p))(keys, params)

    def member(k, lr, p):
        state = init_state(model, opt, k, p)
        return state._replace(opt_state=_with_learning_rate(state.opt_state, lr))

    return jax.vmap(member)(keys, np.asarray(lrs, np.float32), params)


def make_population_train(model: Layer, loss: str | Loss, optimizer: optax.GradientTransformation,
                          n_examples: int, epochs: int, batch_size: int | None = None,
                          drop_last: bool = False, precision=None, *,
                          record_losses: bool = True, grad_fn: Callable | None = None) -> Callable:
    """Jitted ``(states, x, t) -> (states, losses (n, epochs))`` over a population's members.

    ``jax.vmap`` over members of ``jaxprop.train.make_train_epochs`` (a ``lax.scan`` of the
    hand-written step). ``states`` is a stacked ``TrainState`` (donated); ``x``, ``t`` are
    shared by every member.

    Args:
      model: the model.
      loss: a loss name or :class:`~jaxprop.Loss`.
      optimizer: the optax optimizer every member uses.
      n_examples: the number of training examples (the length of ``x``).
      epochs: epochs each call trains.
      batch_size: examples per minibatch; ``None`` for full batch.
      drop_last: drop a last minibatch smaller than ``batch_size``.
      precision: see :func:`jaxprop.train.make_train_step`.
      record_losses: ``False`` returns ``None`` for the losses (the loop then stores nothing
        per epoch).
      grad_fn: see :func:`jaxprop.train.make_train_step`.

    Returns:
      the jitted function.
    """
    train_epochs = make_train_epochs(model, loss, optimizer, n_examples, batch_size, drop_last,
                                     precision=precision, grad_fn=grad_fn)

    def member(state, x, t):
        state, losses = train_epochs(state, x, t, epochs)
        return state, (losses if record_losses else None)

    return jax.jit(jax.vmap(member, in_axes=(0, None, None)), donate_argnums=0)


def population_compiler_options(n_params: int, n_examples: int, epochs: int, n: int, *,
                                forward_flops: float | None = None) -> dict | None:
    """The XLA options :func:`fit_population` compiles with (CPU; ``None`` elsewhere).

    A population is compiled once and runs long: fast compilation only when the whole run's
    FLOPs (a step's per example, :func:`~jaxprop.train.compile.step_flops`, for every example,
    epoch and member) are under ``AUTO_FAST_COMPILE_RUN_FLOPS``; otherwise XLA's full
    optimisation (for 1000 XOR networks, about 2x faster code for 0.1 s more compilation).

    Args:
      n_params: parameters per member.
      n_examples: training examples.
      epochs: epochs of training.
      n: members.
      forward_flops: one member's forward FLOPs for one example
        (:func:`~jaxprop.train.compile.forward_flops`), or ``None`` when unknown.

    Returns:
      the fast-compilation options (a new dict), or ``None`` for XLA's defaults.
    """
    if jax.default_backend() != "cpu":
        return None
    run_flops = step_flops(n_params, forward_flops) * n_examples * epochs * n
    return dict(FAST_COMPILE) if run_flops < AUTO_FAST_COMPILE_RUN_FLOPS else None


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
    precision=None,
    compiler_options: dict | str | None = "auto",
    grad_fn: Callable | None = None,
) -> PopulationResult:
    """Train a population on ``data = (x, t)`` for ``epochs`` epochs in one compiled call.

    Members: ``n`` (keys from ``jax.random.split(key, n)``), or one per entry of ``keys``,
    ``seeds``, ``lrs`` or ``params``; the sizes given must agree. ``x: (N, *in_shape)`` and
    ``t``, shared by every member. A population too large for the device's memory is refused
    with an out-of-memory ``ValueError`` (:func:`check_population_memory`) before anything is
    allocated.

    Args:
      model: the model, with its input shape.
      loss: a loss name or :class:`~jaxprop.Loss`.
      optimizer: a learning rate (plain gradient descent), an optax ``GradientTransformation``,
        or with ``lrs`` an optax alias such as ``optax.adam`` called with each member's
        ``learning_rate`` (default ``optax.sgd``).
      data: the pair ``(x, t)``.
      n: the number of members.
      key: the key split into the members' keys (default ``jax.random.key(0)``).
      keys: the members' PRNG keys, one per member.
      seeds: ints, one per member: member ``i`` starts exactly like ``jaxprop train --seed
        seeds[i]`` (see :func:`init_population_state`); used instead of ``keys`` and ``key``.
      lrs: one learning rate per member (an ``(n,)`` array), or one scalar for all (positive).
      epochs: epochs of training (a positive int).
      batch_size: full batch by default; otherwise shuffled minibatches as in
        :func:`jaxprop.train.make_epoch_fn`, each member shuffling with its own key.
      drop_last: drop a last minibatch smaller than ``batch_size``.
      params: stacked params (a leading member axis) to start from instead of fresh ones
        (copied: the training call donates its input).
      record_losses: keep every member's loss before each step (``PopulationResult.losses``).
      precision: ``"f32"``, ``"bf16"``, ``"highest"``, ... (:mod:`jaxprop.train.precision`;
        default ``None``: the params' own dtype).
      compiler_options: XLA options, ``"auto"`` (default: :func:`population_compiler_options`)
        or ``None`` (XLA's defaults).
      grad_fn: another gradient for the same step (:func:`jaxprop.train.make_train_step`; the
        benchmarks pass ``jax.grad``'s).

    Returns:
      a :class:`PopulationResult`: final losses and training accuracies evaluated after
      training.
    """
    loss = get_loss(loss)
    epochs = _check_data_and_epochs(data, epochs)
    n, seeds, lrs = _members(n, keys, seeds, lrs, params)
    opt = _optimizer_for(optimizer, lrs)
    check_population_memory(model, opt, n, len(data[0]), batch_size)
    if params is not None:  # our own copy: the training call donates its input
        params = jax.tree.map(jnp.array, params)
    state = init_population_state(model, optimizer, _member_keys(n, key, keys, seeds), lrs,
                                  params)
    # (shapes and dtypes: no program to slice one member)
    x, t = validate_data(jax.tree.map(_member_shape, state.params), *data, loss=loss,
                         model=model)
    options, threads = _auto_choices(model, state, x, epochs, batch_size, compiler_options)
    program = _Program(model, loss, opt, x.shape[0], epochs, batch_size, drop_last,
                       record_losses, grad_fn, precision, _options_key(options))
    state, losses = _train(program, state, x, t, threads)
    return _result(program, state, losses, (x, t), seeds, lrs)


def _check_data_and_epochs(data, epochs) -> int:
    """``epochs`` as an int, after checking that ``data`` is a pair and ``epochs`` positive."""
    if data is None or len(data) != 2:
        raise ValueError("fit_population: data must be a pair (x, t)")
    return check_int("fit_population: epochs", epochs, minimum=1)


def _members(n, keys, seeds, lrs, params):
    """``(n, seeds, lrs)``: how many members the arguments that name them agree on, with
    ``seeds`` as an ``(n,)`` int64 array and ``lrs`` as ``(n,)`` positive float64 rates (each
    ``None`` when not given).

    Args:
      n: the number of members, or ``None``.
      keys: one PRNG key per member, or ``None``.
      seeds: one int per member, or ``None``.
      lrs: one learning rate per member, one for all, or ``None``.
      params: stacked params (a leading member axis), or ``None``.

    Returns:
      the triple.
    """
    seeds = None if seeds is None else np.asarray(seeds, dtype=np.int64).reshape(-1)
    lrs = None if lrs is None else np.asarray(lrs, dtype=np.float64)
    n = _population_size(n, keys, seeds, lrs, params)
    if lrs is not None:
        lrs = np.broadcast_to(lrs, (n,)).copy()
        if not np.all(np.isfinite(lrs) & (lrs > 0)):
            raise ValueError(f"fit_population: learning rates must be positive, got {lrs}")
    return n, seeds, lrs


def _member_keys(n: int, key, keys, seeds) -> jax.Array:
    """The members' PRNG keys: one per seed (as ``jaxprop train --seed``), ``keys`` as given,
    or ``n`` split from ``key`` (default ``jax.random.key(0)``).

    Args:
      n: the number of members.
      key: the key to split, or ``None``.
      keys: the members' keys, or ``None``.
      seeds: ``(n,)`` int seeds, or ``None``.

    Returns:
      ``(n,)`` PRNG keys.
    """
    if seeds is not None:
        return key_from_seed(seeds)  # = jax.vmap(jax.random.key)(seeds), made on the host
    if keys is not None:
        return keys
    return jax.random.split(jax.random.key(0) if key is None else key, n)


def _auto_choices(model: Layer, state: TrainState, x, epochs: int, batch_size: int | None,
                  compiler_options):
    """``(compiler_options, threads)`` for training ``state``'s members on ``x``, from one
    member's counted FLOPs (:func:`~jaxprop.train.compile.forward_flops`, remembered).

    Args:
      model: the model.
      state: the stacked :class:`~jaxprop.train.TrainState`.
      x: the training inputs.
      epochs: epochs of training.
      batch_size: examples per minibatch; ``None`` for full batch.
      compiler_options: XLA options, ``None``, or ``"auto"`` for
        :func:`population_compiler_options`.

    Returns:
      the options and the number of thread groups (:func:`population_threads`).
    """
    n = state.epoch.shape[0]
    params, model_state = jax.tree.map(_member_shape, (state.params, state.model_state))
    n_params = sum(math.prod(a.shape) for a in jax.tree.leaves(params))
    flops = forward_flops(model, params, model_state,
                          jax.ShapeDtypeStruct((1, *x.shape[1:]), x.dtype))
    if compiler_options == "auto":
        compiler_options = population_compiler_options(n_params, x.shape[0], epochs, n,
                                                       forward_flops=flops)
    batch = x.shape[0] if batch_size is None else min(batch_size, x.shape[0])
    return compiler_options, population_threads(n, n_params, batch, flops)


def _result(program: _Program, state: TrainState, losses, data, seeds, lrs) -> PopulationResult:
    """The :class:`PopulationResult` of the trained ``state``: every member's final loss and
    training accuracy, evaluated on ``data = (x, t)`` after training.

    Args:
      program: what the members were trained with (model, loss, precision, record_losses).
      state: the trained stacked state.
      losses: ``(n, epochs)`` losses from training, or ``None``.
      data: the training pair ``(x, t)``.
      seeds: the members' seeds, or ``None``.
      lrs: the members' learning rates, or ``None``.

    Returns:
      the result.
    """
    evaluate = _evaluate_fn(program.model, program.loss, program.precision)
    final_loss, acc = evaluate(state.params, *data, state.model_state)
    return PopulationResult(state.params, np.asarray(final_loss), np.asarray(acc), seeds, lrs,
                            np.asarray(losses) if program.record_losses else None)


# On a CPU, a population of networks whose step is small enough to run single-threaded
# (AUTO_SINGLE_THREAD_STEP_FLOPS, as fit decides for one network) runs its tiny fused loops on one
# core (XLA does not split them): members are then trained in groups, one thread per core and
# group, each group at least MIN_GROUP members.
MIN_GROUP = 64


def population_threads(n: int, n_params: int, batch: int,
                       forward_flops: float | None = None) -> int:
    """How many groups (threads) :func:`fit_population` trains ``n`` members in: one per CPU
    core for members whose step (:func:`~jaxprop.train.compile.step_flops` per example, from
    their ``forward_flops`` for one example when known) is under
    ``AUTO_SINGLE_THREAD_STEP_FLOPS``, at least ``MIN_GROUP`` members each; 1 on GPU/TPU or for
    bigger members (whose matmuls already use every core)."""
    tiny = step_flops(n_params, forward_flops) * batch < AUTO_SINGLE_THREAD_STEP_FLOPS
    if jax.default_backend() != "cpu" or not tiny:
        return 1
    return max(1, min(os.cpu_count() or 1, n // MIN_GROUP))


def _member_shape(a) -> jax.ShapeDtypeStruct:
    """One member's shape of a stacked leaf (its leading member axis dropped)."""
    return jax.ShapeDtypeStruct(a.shape[1:], a.dtype)


@functools.partial(jax.jit, static_argnums=(1, 2))
def _split(tree, k: int, size: int):
    """``k`` trees of ``size`` members each; the last one padded with copies of the first
    members (trained and then dropped by :func:`_merge`)."""
    def take(a, i):
        idx = (jnp.arange(size) + i * size) % a.shape[0]
        return a[idx]

    return tuple(jax.tree.map(lambda a, i=i: take(a, i), tree) for i in range(k))


@functools.partial(jax.jit, static_argnums=1)
def _merge(outs, n: int):
    """The groups' ``(state, losses)`` joined along the member axis, padding dropped."""
    return jax.tree.map(lambda *parts: jnp.concatenate(parts)[:n], *outs)


class _Program(NamedTuple):
    """What a population's training program is built and compiled for (with the types of its
    arguments, its key in the store of compiled programs)."""

    model: Layer
    loss: Loss
    optimizer: optax.GradientTransformation
    n_examples: int
    epochs: int
    batch_size: int | None
    drop_last: bool
    record_losses: bool
    grad_fn: Callable | None
    precision: object
    options: tuple  # the XLA options as sorted (name, value) pairs (hashable)


def _options_key(options: dict | None) -> tuple:
    return tuple(sorted((options or {}).items()))


def _train(program: _Program, state: TrainState, x, t, threads: int):
    """``(state, losses)`` of every member trained by ``program``: in one call, or in
    ``threads`` groups of members, each trained by its own thread (the same compiled program).
    Running out of memory (:func:`_out_of_memory`) raises a ``ValueError`` that says so."""
    n = state.epoch.shape[0]
    try:
        groups = (state,) if threads == 1 else _split(state, threads, -(-n // threads))
        train = _compiled_train(program, groups[0], x, t)

        def run(group):
            return jax.block_until_ready(train(group, x, t))

        if len(groups) == 1:
            return run(groups[0])
        with ThreadPoolExecutor(len(groups)) as pool:
            return _merge(list(pool.map(run, groups)), n)
    except jax.errors.JaxRuntimeError as e:
        if not _out_of_memory(e):
            raise
        raise ValueError(f"out of memory training {n:,} networks at once ("
                         f"{str(e).splitlines()[0][:200]}); train fewer") from None


def _out_of_memory(error: jax.errors.JaxRuntimeError) -> bool:
    """Whether the runtime ran out of memory: the error's status code is RESOURCE_EXHAUSTED.

    XLA reports every failed allocation with that code (its allocators, CUDA's
    ``CUDA_ERROR_OUT_OF_MEMORY``, TPU compilation), whatever the message says; jaxlib >= 0.9.2
    exposes it as ``error_code_string``. Older jaxlibs carry it only as the message's first
    word (``absl::Status::ToString``: ``"RESOURCE_EXHAUSTED: ..."``).
    """
    code = getattr(error, "error_code_string", None)
    if code is None:
        code = str(error).split(":", 1)[0]
    return code == "RESOURCE_EXHAUSTED"


# Compiled population programs, kept across calls.
_COMPILED = CompiledPrograms(maxsize=16)


def _compiled_train(program: _Program, state: TrainState, x, t):
    """``program`` (:func:`make_population_train`) compiled for these arguments, reused by later
    calls with the same settings and argument types."""
    leaves, treedef = jax.tree.flatten((state, x, t))
    key = (program, treedef, tuple(map(jax.typeof, leaves)))

    def build():
        p = program
        train = make_population_train(p.model, p.loss, p.optimizer, p.n_examples, p.epochs,
                                      p.batch_size, p.drop_last, p.precision,
                                      record_losses=p.record_losses, grad_fn=p.grad_fn)
        with get_precision(p.precision).matmul():  # "highest": around tracing and compilation
            return compile_lowered(train.lower(state, x, t), dict(p.options) or None)

    return _COMPILED.get(key, build)


@remember(maxsize=16)
def _evaluate_fn(model, loss, precision=None):
    return jax.jit(jax.vmap(make_eval_fn(model, loss, precision=precision),
                            in_axes=(0, None, None, 0)))


def population_bytes(model: Layer, optimizer: optax.GradientTransformation, n: int,
                     batch: int, in_shape=None) -> int:
    """About how many bytes training ``n`` members needs (from shapes alone; nothing is allocated):
    ``n`` times :func:`~jaxprop.train.memory.training_bytes` of one.

    Args:
      model: the model.
      optimizer: the optax optimizer (its state is counted).
      n: members.
      batch: examples per step.
      in_shape: one example's shape; ``None`` for the model's own ``in_shape``.

    Returns:
      the estimate in bytes.
    """
    shape = tuple(in_shape if in_shape is not None else model.in_shape)
    return n * training_bytes(model, optimizer, shape, batch)


def check_population_memory(model: Layer, optimizer, n: int, n_examples: int,
                            batch_size: int | None = None, *, what: str | None = None) -> None:
    """Raise :class:`~jaxprop.train.memory.InsufficientMemory` (a ``ValueError``) when ``n``
    members would not fit (:func:`~jaxprop.train.memory.check_training_fits`; nothing is
    checked when the device's free memory is unknown).

    Args:
      model: the model, with its input shape.
      optimizer: a learning rate or optax optimizer.
      n: members.
      n_examples: training examples.
      batch_size: examples per minibatch; ``None`` for full batch.
      what: how the message names the population (default ``"a population of n networks"``).
    """
    check_training_fits(model, as_optimizer(optimizer), model.in_shape, n_examples, batch_size,
                        n=n, what=what or f"a population of {n:,} networks")


def _check_n(n) -> None:
    if not is_int(n) or n < 1:
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
