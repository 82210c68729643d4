"""Data parallel training on ``jax.sharding``: batch split over devices, parameters replicated.

A 1-D :class:`~jax.sharding.Mesh` over every device (axis ``"data"``) holds the batch sharded
along its first axis (``NamedSharding(mesh, P("data"))``) and the parameters and optimizer state
replicated (``P()``). The step is the ordinary hand-written step under ``jax.jit`` with those
shardings; XLA's sharding propagation runs each device's share of the forward and backward pass
and inserts the all-reduce that sums the gradient over devices (``x.T @ dy`` contracts the
sharded batch axis). We use propagation rather than ``shard_map`` + ``psum`` because the code is
the single-device code unchanged, and every loss keeps its exact reduction (a per-shard ``mean``
would need rescaling loss by loss before a ``psum``).

The step helpers here (:func:`data_parallel_grad_fn`, :class:`DataParallelStep`,
:func:`shard_batch`) need a batch that divides evenly by the number of devices: anything else
raises a ``ValueError`` naming the sizes. ``jaxprop.train.fit_state(..., mesh=data_mesh())``
takes any training set: :func:`place_for_training` (:mod:`jaxprop.train.placement`) pads it with
zero rows to a multiple of the device count and the training step and evaluation mask them out,
so the padding never counts and the loss equals one device's (to float32 rounding).

Multi-host: call ``jax.distributed.initialize()`` first in each process (one per host, or see
:mod:`jaxprop.scale.distributed`); ``jax.devices()`` then lists every host's devices, the same
code builds the global mesh, and :func:`shard_batch` assembles each process's local batch into
one global array (:func:`place_for_training` takes the whole data set in every process).
"""

from __future__ import annotations

from typing import Callable

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxprop.core.backprop import loss_and_grad_fn
from jaxprop.core.layers import Layer
from jaxprop.core.losses import Loss
from jaxprop.train.optimizers import as_optimizer
# the padded placement fit_state(mesh=...) trains on lives in train (which must not import
# scale); re-exported here, where it was
from jaxprop.train.placement import AXIS, pad_rows, place_for_training  # noqa: F401
from jaxprop.train.step import make_train_step


def data_mesh(devices=None) -> Mesh:
    """A 1-D mesh with axis ``"data"`` over ``devices`` (default: all devices, every host)."""
    devices = jax.devices() if devices is None else list(devices)
    return Mesh(np.array(devices), (AXIS,))


def _check_divisible(n: int, devices: int, what: str = "batch") -> None:
    if n % devices:
        raise ValueError(
            f"data parallel: the {what} has {n} examples, which does not divide evenly over "
            f"{devices} devices; use a multiple of {devices} (e.g. "
            f"{n - n % devices or devices}) or drop the remainder"
        )


def check_data_parallel(n_examples: int, mesh: Mesh | None = None) -> None:
    """Raise ``ValueError`` unless ``n_examples`` (this process's) split evenly over the mesh."""
    mesh = data_mesh() if mesh is None else mesh
    _check_divisible(n_examples, mesh.size // jax.process_count(), "training set")


def shard_batch(mesh: Mesh, *arrays):
    """Put each array on ``mesh`` split along its first axis (this process's rows, multi-host)."""
    sharding = NamedSharding(mesh, P(AXIS))
    out = []
    for a in arrays:
        _check_divisible(a.shape[0], mesh.size // jax.process_count(), "local batch")
        if jax.process_count() > 1:
            out.append(jax.make_array_from_process_local_data(sharding, np.asarray(a)))
        else:
            out.append(jax.device_put(a, sharding))
    return out[0] if len(out) == 1 else tuple(out)


def replicate(mesh: Mesh, tree, *, copy: bool = False):
    """Put every leaf of ``tree`` on every device of ``mesh`` (always new buffers when ``copy``)."""
    rep = NamedSharding(mesh, P())
    if copy:  # a jitted identity never hands back its inputs' buffers
        return jax.jit(lambda tree: tree, out_shardings=rep)(tree)
    return jax.device_put(tree, rep)


def data_parallel_grad_fn(model: Layer, loss: str | Loss, mesh: Mesh | None = None) -> Callable:
    """Jitted ``(params, x, t) -> (loss, grads)`` with the batch sharded over ``mesh``.

    The result equals ``loss_and_grad_fn(model, loss)`` on one device (up to the order of
    floating-point sums). ``loss`` and ``grads`` come back replicated.
    """
    mesh = data_mesh() if mesh is None else mesh
    rep, batch = NamedSharding(mesh, P()), NamedSharding(mesh, P(AXIS))
    fn = jax.jit(loss_and_grad_fn(model, loss), in_shardings=(rep, batch, batch),
                 out_shardings=(rep, rep))

    def grad(params, x, t):
        _check_divisible(x.shape[0], mesh.size)
        return fn(params, x, t)

    return grad


class DataParallelStep:
    """``init(params) -> (params, opt_state)`` replicated; ``step(...)`` one data parallel update.

    ``step(params, opt_state, x, t) -> (params, opt_state, loss)`` is compiled once, with the
    batch sharded over the mesh and ``params``/``opt_state`` replicated and donated. It is
    :func:`jaxprop.train.make_train_step` (the training step of ``fit``) jitted with those
    shardings. For models with state or keys, train with ``fit_state`` on
    :func:`data_parallel_inputs`.
    """

    def __init__(self, model: Layer, loss: str | Loss, optimizer, mesh: Mesh | None = None):
        self.mesh = data_mesh() if mesh is None else mesh
        self.optimizer = as_optimizer(optimizer)
        train_step = make_train_step(model, loss, self.optimizer)

        def step(params, opt_state, x, t):
            params, opt_state, _, value = train_step(params, opt_state, None, x, t, None)
            return params, opt_state, value

        rep, batch = NamedSharding(self.mesh, P()), NamedSharding(self.mesh, P(AXIS))
        self._step = jax.jit(step, in_shardings=(rep, rep, batch, batch),
                             out_shardings=(rep, rep, rep), donate_argnums=(0, 1))

    def init(self, params):
        """Replicated copies of ``params`` and a fresh optimizer state (the step donates them)."""
        params = replicate(self.mesh, params, copy=True)
        return params, replicate(self.mesh, self.optimizer.init(params), copy=True)

    def step(self, params, opt_state, x, t):
        """One data parallel update of ``params`` on the batch ``(x, t)``.

        ``x: (batch, *in_shape)``, ``t: (batch, ...)``, with ``batch`` a multiple of the number
        of devices in the mesh (``ValueError`` otherwise).

        Args:
          params: the replicated params (from :meth:`init`); donated.
          opt_state: the replicated optimizer state; donated.
          x: the inputs, sharded along the batch axis.
          t: the targets, likewise.

        Returns:
          ``(params, opt_state, loss)``: the updated params and optimizer state and the loss
          before the update.
        """
        _check_divisible(x.shape[0], self.mesh.size)
        return self._step(params, opt_state, x, t)

    __call__ = step


def make_data_parallel_step(model: Layer, loss: str | Loss, optimizer, mesh: Mesh | None = None):
    """A :class:`DataParallelStep` for ``model``, ``loss``, ``optimizer`` on ``mesh``.

    Args:
      model: the model to train (a Layer without state or keys).
      loss: a loss name or :class:`~jaxprop.Loss`.
      optimizer: an optax optimizer, or a number: the learning rate of plain gradient descent.
      mesh: the device mesh; ``None`` for all devices (:func:`data_mesh`).

    Returns:
      the :class:`DataParallelStep`.
    """
    return DataParallelStep(model, loss, optimizer, mesh)


def data_parallel_inputs(state, data, mesh: Mesh | None = None):
    """``(state, data)`` placed for data parallel training with ``jaxprop.train.fit_state``.

    ``state`` (any pytree, e.g. a ``TrainState``) is replicated (new buffers); ``data`` (a
    ``jaxprop.data.Dataset``, ``(x, t)`` or ``(x, t, x_test, t_test)``) gets its training
    arrays sharded along the batch axis (an error if they do not divide evenly over the
    devices) and its test arrays replicated. ``fit_state`` then runs unchanged: ``jax.jit``
    follows the shardings of its inputs, so every full-batch step is split over the devices and
    XLA sums the gradient. With minibatches the shuffled gather from the sharded training set is
    still correct, but how each minibatch is laid out is left to XLA.
    """
    mesh = data_mesh() if mesh is None else mesh
    state = replicate(mesh, state, copy=True)
    if hasattr(data, "x_train"):
        x, t = shard_batch(mesh, data.x_train, data.y_train)
        return state, data._replace(x_train=x, y_train=t, x_test=replicate(mesh, data.x_test),
                                    y_test=replicate(mesh, data.y_test))
    x, t = shard_batch(mesh, data[0], data[1])
    return state, (x, t, *replicate(mesh, tuple(data[2:])))
