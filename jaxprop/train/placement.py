"""Placing a training run on a device mesh: the padded layout ``fit_state(mesh=...)`` trains on.

The training set is padded with zero rows to a multiple of the mesh's size and split along the
batch axis (``NamedSharding(mesh, P(AXIS))``); the state and the test data are replicated
(``P()``). The training step and the evaluation mask the padding out, so it never counts. Works
across processes (``jax.distributed``): every process holds the whole data set and places the
rows of its own devices. :mod:`jaxprop.scale.parallel` builds meshes and the other data parallel
helpers on top of this.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

# The name of the mesh axis the batch is split along.
AXIS = "data"


def _put(mesh: Mesh, spec: P, a):
    """``a`` (the same value in every process) as a global array on ``mesh`` laid out by
    ``spec``; typed PRNG keys too."""
    if jnp.issubdtype(a.dtype, jax.dtypes.prng_key):
        data = _put(mesh, spec, jax.random.key_data(a))
        return jax.random.wrap_key_data(data, impl=jax.random.key_impl(a))
    host = np.asarray(a)
    return jax.make_array_from_callback(host.shape, NamedSharding(mesh, spec),
                                        lambda index: host[index])


def pad_rows(a, rows: int) -> np.ndarray:
    """``a`` with zero rows appended up to ``rows`` rows (on the host)."""
    a = np.asarray(a)
    return np.concatenate([a, np.zeros((rows - a.shape[0], *a.shape[1:]), a.dtype)])


def place_for_training(mesh: Mesh, state, x, t, test_data=()):
    """``(state, x, t, test_data)`` laid out for data parallel training on ``mesh``.

    The caller masks the padding (``fit_state(mesh=...)`` does, so it never counts). Works
    across processes: each process places the rows of its own devices.

    Args:
      mesh: the device mesh.
      state: the training state (any pytree), replicated.
      x: the whole training set's inputs ``(n, ...)``, the same in every process: zero rows
        are appended up to a multiple of ``mesh.size`` and it is split along the batch axis.
      t: the training targets ``(n, ...)``, likewise.
      test_data: the test arrays (e.g. ``(x_test, t_test)``), replicated.

    Returns:
      ``(state, x, t, test_data)`` as global arrays on ``mesh``.
    """
    rows = -(-x.shape[0] // mesh.size) * mesh.size
    x, t = (_put(mesh, P(AXIS), pad_rows(a, rows)) for a in (x, t))
    state = jax.tree.map(lambda a: _put(mesh, P(), a), jax.device_get(state))
    test_data = tuple(_put(mesh, P(), a) for a in test_data)
    return state, x, t, test_data
