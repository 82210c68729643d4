"""The FLOP counts behind the GFLOP/s columns: one counter for a model, a closed form for MLPs.

:func:`step_flops` counts any model's training step from its traced forward pass
(:func:`jaxprop.train.compile.forward_flops`, the count ``jp.fit`` sizes its compile options
with: exact for matmuls and convolutions, one per element of elementwise operations) times 3 (the
forward pass, the input gradients and the weight gradients). :func:`mlp_flops` is the MLP rows'
closed form: the same products, less what no implementation computes (the gradient with
respect to the data), without the elementwise work: ``mlp_flops(sizes, b) == b (3P - 2 W_1)``
for the traced forward pass's products ``P`` (tests/test_bench.py checks it).
"""

from __future__ import annotations

import jax
import numpy as np

from jaxprop.train.compile import forward_flops


def mlp_flops(sizes, batch: int) -> float:
    """FLOPs of one gradient of an MLP: forward ``2bW``, weight gradients ``2bW``, input
    gradients of every layer but the first ``2b(W - W_1)`` (no implementation computes dL/dx
    of the data), for ``W`` weights (biases and activations not counted)."""
    weights = [a * b for a, b in zip(sizes[:-1], sizes[1:])]
    return 2.0 * batch * (2 * sum(weights) + sum(weights[1:]))


def step_flops(model, params, model_state, x) -> float:
    """FLOPs of one gradient of ``model`` on the batch ``x: (batch, *in_shape)``: 3x its traced
    forward pass per example, times the batch; ``6 x batch x`` the number of params where the
    forward pass cannot be traced."""
    one = jax.ShapeDtypeStruct((1, *x.shape[1:]), x.dtype)
    forward = forward_flops(model, params, model_state, one)
    if forward is None:  # as jp.fit's compile options do: count the params instead
        forward = 2.0 * sum(int(np.size(p)) for p in jax.tree.leaves(params))
    return 3.0 * forward * x.shape[0]
