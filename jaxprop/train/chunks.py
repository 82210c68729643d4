"""The compiled chunk ``fit`` calls again and again, and running it so that it can be left.

``make_chunk_fn`` builds the jitted ``(state, x, t, test_data, n_epochs) -> (state, losses,
metrics)``: ``n_epochs`` epochs (:func:`~jaxprop.train.step.make_train_epochs`), then loss and
accuracy (R² and RMSE for a regression) on the training and test data. A :class:`ChunkRunner`
compiles it once per chunk length into a shared
:class:`~jaxprop.train.compile.CompiledPrograms` store, counts the seconds spent compiling,
and runs it.

**Stopping.** A compiled chunk cannot be cut short, so with ``should_stop`` the runner never
blocks on one: each chunk compiles and runs in a daemon thread (XLA releases the GIL; the CPU
backend may run a call inline, so asynchronous dispatch alone is not enough) while the calling
thread polls ``should_stop()`` every ``POLL_SECONDS``; when it says stop, :class:`Stopped` is
raised and the work in flight is abandoned (a process that exits then should leave with
``os._exit``, which does not wait for it).
"""

from __future__ import annotations

import threading
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxprop.core.cache import remember
from jaxprop.train.compile import CompiledPrograms, compile_lowered
from jaxprop.train.precision import Precision
from jaxprop.train.step import make_eval_fn, make_train_epochs

# How often (seconds) the host asks should_stop() while a chunk computes or compiles.
POLL_SECONDS = 0.02


class Stopped(Exception):
    """``should_stop()`` said stop while a chunk compiled or ran (the work is abandoned)."""


# Reused across fit calls with the same model, loss and optimizer objects (e.g. a resumed run
# in the same process), so the compiled programs keyed by the jitted function apply.
@remember(maxsize=16)
def make_chunk_fn(model, loss, optimizer, n_examples, batch_size, drop_last, accuracy, donate,
                  precision=None, grad_fn=None, unroll=1, n_rows=None):
    """The jitted ``(state, x, t, test_data, n_epochs) -> (state, losses, metrics)``.

    ``n_epochs`` (static) epochs, then loss and accuracy on the training (and test) data;
    ``metrics`` is a dict ``{"train_loss", "train_accuracy", "test_loss", "test_accuracy"}``
    (a regression, ``accuracy`` ``False``: ``r2`` and ``rmse`` instead of ``accuracy``, in the
    units of the targets trained on; no test entries without ``test_data``).

    Args:
      model, loss, optimizer, n_examples, batch_size, drop_last: those of
        :func:`~jaxprop.train.step.make_train_epochs`.
      accuracy: that of :func:`~jaxprop.train.step.make_eval_fn`.
      donate: donate the state's buffers to each call.
      precision, grad_fn, unroll, n_rows: those of
        :func:`~jaxprop.train.step.make_train_epochs` (with ``n_rows``, the evaluation on the
        training data masks the padding out).

    Returns:
      the jitted chunk (``n_epochs`` static).
    """
    train_epochs = make_train_epochs(model, loss, optimizer, n_examples, batch_size, drop_last,
                                     precision=precision, grad_fn=grad_fn, unroll=unroll,
                                     n_rows=n_rows)
    evaluate = make_eval_fn(model, loss, accuracy, precision=precision)
    names = ("loss", "r2", "rmse") if accuracy is False else ("loss", "accuracy")
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


def signature(tree):
    """What a compiled program is specialised to: the tree, each leaf's type and placement."""
    leaves, treedef = jax.tree.flatten(tree)
    return treedef, tuple((jax.typeof(a), getattr(a, "sharding", None)) for a in leaves)


class ChunkRunner:
    """Compiles and runs one training run's chunks, leaving them as soon as ``should_stop`` says.

    Each chunk length is compiled once, into ``store`` (shared across runs: a second run with
    the same program, options, settings and argument types compiles nothing); ``compile_time``
    adds up the seconds this run spent compiling (also when a compilation is abandoned).

    Args:
      store: the :class:`~jaxprop.train.compile.CompiledPrograms` the programs are kept in.
      jitted: the jitted chunk (:func:`make_chunk_fn`).
      data: ``(x, t, test_data)``, the arrays every chunk is called with.
      state: a state like those the chunks will get (its signature keys the store).
      compiler_options: the XLA options to compile with (a dict or ``None``).
      policy: the :class:`~jaxprop.train.precision.Precision` whose matmul precision applies
        while tracing and compiling.
      should_stop: polled before each chunk and while it compiles and runs, or ``None``.
    """

    def __init__(self, store: CompiledPrograms, jitted, data, state, compiler_options,
                 policy: Precision, should_stop: Callable[[], bool] | None):
        self.store, self.jitted, self.data = store, jitted, tuple(data)
        self.compiler_options, self.policy = compiler_options, policy
        self.should_stop = should_stop
        self.options_key = tuple(sorted((compiler_options or {}).items()))
        self.signature = signature((state, *self.data))
        self.compile_time = 0.0

    def run(self, state, n_epochs: int):
        """``(state, losses, metrics)`` after ``n_epochs`` epochs from ``state``, on the device
        (``state`` is donated when the program donates); :class:`Stopped` when asked."""
        if self.should_stop is not None and self.should_stop():
            raise Stopped
        program = self.program(state, n_epochs)
        return stoppable(lambda: jax.block_until_ready(program(state, *self.data)),
                         self.should_stop)

    def program(self, state, n_epochs: int):
        """The compiled chunk of ``n_epochs`` epochs, from the store or compiled now."""
        key = (self.jitted, n_epochs, self.options_key, self.signature)
        return self.store.get(key, lambda: self._compile(state, n_epochs))

    def _compile(self, state, n_epochs: int):
        t0 = time.perf_counter()
        try:
            return stoppable(lambda: self._lower_and_compile(state, n_epochs), self.should_stop)
        finally:
            self.compile_time += time.perf_counter() - t0

    def _lower_and_compile(self, state, n_epochs: int):
        with self.policy.matmul():  # "highest": around tracing and compilation, in this thread
            return compile_lowered(self.jitted.lower(state, *self.data, n_epochs),
                                   self.compiler_options)


def stoppable(work: Callable, should_stop: Callable[[], bool] | None):
    """``work()``; with ``should_stop``, in a daemon thread while the caller polls it, raising
    :class:`Stopped` (the thread abandoned) as soon as it says stop."""
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
            raise Stopped
    if "error" in result:
        raise result["error"]
    return result["value"]
