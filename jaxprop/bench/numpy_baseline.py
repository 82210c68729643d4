"""A plain, vectorised NumPy MLP: the same forward, losses and backward as jaxprop.

This is the baseline the benchmarks compare against, and a readable reference of backprop in
NumPy. Params are a list of ``(W, b)`` pairs, ``W: (in, out)``, ``b: (out,)``, one per Dense
layer; each Dense layer is followed by its activation (``sigmoid``, ``tanh``, ``relu`` or
``identity``). Losses and their reductions are those of :mod:`jaxprop.losses`:

* ``sse_half``: ``1/2 sum((y - t)^2)``, gradient ``y - t``;
* ``mse``: ``mean((y - t)^2)``, gradient ``2 (y - t) / y.size``;
* ``softmax_cross_entropy``: ``mean_rows(-sum(t log_softmax(y)))``, gradient
  ``(softmax(y) sum(t) - t) / rows``.

Batches are rows: ``x: (batch, in)``, ``t: (batch, out)``.
"""

from __future__ import annotations

import numpy as np

from jaxprop.data.synthetic import xor

# --------------------------------------------------------------------------------------------
# Activations: forward(z) -> (a, residual); backward(residual, da) -> dz.


def _sigmoid(z):
    # 1 / (1 + exp(-z)), written with tanh so it never overflows
    s = 0.5 * (1.0 + np.tanh(0.5 * z))
    return s, s


def _tanh(z):
    a = np.tanh(z)
    return a, a


def _relu(z):
    mask = z > 0
    return np.where(mask, z, 0), mask


ACTIVATIONS = {
    "sigmoid": (_sigmoid, lambda s, da: da * s * (1 - s)),
    "tanh": (_tanh, lambda a, da: da * (1 - a * a)),
    "relu": (_relu, lambda mask, da: da * mask),
    "identity": (lambda z: (z, None), lambda _, da: da),
}

# --------------------------------------------------------------------------------------------
# Losses: value(y, t) -> float; grad(y, t) -> dL/dy.


def _rows(y):
    return max(1, y.size // y.shape[-1])


def _log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def _softmax_ce_grad(z, t):
    p = np.exp(_log_softmax(z))
    return (p * t.sum(axis=-1, keepdims=True) - t) / _rows(z)


LOSSES = {
    "sse_half": (lambda y, t: 0.5 * np.sum((y - t) ** 2), lambda y, t: y - t),
    "mse": (lambda y, t: np.mean((y - t) ** 2), lambda y, t: 2 * (y - t) / y.size),
    "softmax_cross_entropy": (
        lambda z, t: -np.sum(t * _log_softmax(z)) / _rows(z),
        _softmax_ce_grad,
    ),
}


class NumpyMLP:
    """``sizes[0] -> ... -> sizes[-1]``; ``activation`` on hidden layers, then ``output_activation``.

    Mirrors ``jaxprop.mlp(sizes, activation, output_activation)`` with the loss ``loss``.
    """

    def __init__(self, sizes, activation="sigmoid", output_activation="sigmoid", loss="sse_half"):
        self.sizes = list(sizes)
        acts = [activation] * (len(self.sizes) - 2) + [output_activation]
        for name in acts:
            if name not in ACTIVATIONS:
                raise ValueError(f"unknown activation {name!r}; known: {', '.join(ACTIVATIONS)}")
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}; known: {', '.join(LOSSES)}")
        self.acts = [ACTIVATIONS[name] for name in acts]
        self.loss_value, self.loss_grad = LOSSES[loss]

    def init(self, rng: np.random.Generator, dtype=np.float32):
        """Glorot-uniform weights, zero biases."""
        params = []
        for n_in, n_out in zip(self.sizes[:-1], self.sizes[1:]):
            limit = np.sqrt(6.0 / (n_in + n_out))
            W = rng.uniform(-limit, limit, (n_in, n_out)).astype(dtype)
            params.append((W, np.zeros(n_out, dtype)))
        return params

    def forward(self, params, x):
        """``(y, cache)``; the cache keeps each layer's input and its activation's residual."""
        cache = []
        for (W, b), (act, _) in zip(params, self.acts):
            a, r = act(x @ W + b)
            cache.append((x, r))
            x = a
        return x, cache

    def backward(self, params, cache, dy):
        """``[(dW, db), ...]`` from ``dy = dL/dy`` (``dL/dx`` of the input is not computed)."""
        grads = [None] * len(params)
        for i in reversed(range(len(params))):
            x, r = cache[i]
            dz = self.acts[i][1](r, dy)  # through the activation
            grads[i] = (x.T @ dz, dz.sum(axis=0))
            if i:
                dy = dz @ params[i][0].T  # to the previous layer's output
        return grads

    def loss_and_grad(self, params, x, t):
        """``(loss, grads)`` of ``loss(forward(params, x), t)``."""
        y, cache = self.forward(params, x)
        return self.loss_value(y, t), self.backward(params, cache, self.loss_grad(y, t))

    def train(self, params, x, t, *, lr=0.1, epochs=10_000):
        """Classic full-batch gradient descent; returns ``(params, last_loss)`` (inputs untouched).

        ``x: (batch, sizes[0])``, ``t: (batch, sizes[-1])``; params are ``(W, b)`` pairs,
        ``W: (in, out)``, ``b: (out,)``.

        Args:
          params: the starting ``(W, b)`` pairs, one per Dense layer (copied, not modified).
          x: the inputs, all of them in every step.
          t: the targets.
          lr: the learning rate: each step subtracts ``lr * grad`` in place.
          epochs: the number of gradient steps.

        Returns:
          ``(params, last_loss)``: the trained pairs and the loss computed in the last epoch
          (before its update; ``None`` for ``epochs=0``).
        """
        params = [(W.copy(), b.copy()) for W, b in params]
        value = None
        for _ in range(epochs):
            value, grads = self.loss_and_grad(params, x, t)
            for (W, b), (dW, db) in zip(params, grads):
                W -= lr * dW
                b -= lr * db
        return params, value


def from_jaxprop(params):
    """jaxprop ``mlp`` params (a list of ``{"W", "b"}`` and ``()``) as NumPy ``(W, b)`` pairs."""
    return [(np.array(p["W"]), np.array(p["b"])) for p in params if p]


XOR_X, XOR_T = (a.astype(np.float64) for a in xor())


def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


def classic_xor(W1, b1, W2, b2, *, lr=0.1, epochs=10_000, x=None, t=None):
    """The classic program, written out: a 2-4-1 sigmoid network learning XOR.

    Full-batch gradient descent on ``1/2 sum((out - t)^2)`` with in-place updates. Works in the
    weights' dtype (the inputs are not modified). ``W1: (2, 4)``, ``b1: (4,)``, ``W2: (4, 1)``,
    ``b2: (1,)``; ``x: (batch, 2)``, ``t: (batch, 1)``.

    Args:
      W1: the hidden layer's weights (copied; their dtype is the working dtype).
      b1: the hidden layer's biases (copied).
      W2: the output layer's weights (copied).
      b2: the output layer's biases (copied).
      lr: the learning rate.
      epochs: the number of gradient steps.
      x: the inputs, cast to ``W1``'s dtype; ``None`` for the four XOR patterns.
      t: the targets, cast to ``W1``'s dtype; ``None`` for the four XOR targets.

    Returns:
      the trained ``(W1, b1, W2, b2)``.
    """
    W1, b1, W2, b2 = (np.array(a) for a in (W1, b1, W2, b2))
    x = (XOR_X if x is None else np.asarray(x)).astype(W1.dtype)
    t = (XOR_T if t is None else np.asarray(t)).astype(W1.dtype)
    for _ in range(epochs):
        hidden = _sigmoid(x @ W1 + b1)
        out = _sigmoid(hidden @ W2 + b2)
        d_out = (out - t) * out * (1 - out)  # dE/dz2 for E = 1/2 sum (out - t)^2
        d_hidden = (d_out @ W2.T) * hidden * (1 - hidden)  # dE/dz1
        W2 -= lr * hidden.T @ d_out
        b2 -= lr * d_out.sum(axis=0)
        W1 -= lr * x.T @ d_hidden
        b1 -= lr * d_hidden.sum(axis=0)
    return W1, b1, W2, b2


def numpy_blas() -> str | None:
    """NumPy's BLAS library, version and threads (threadpoolctl), or None."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    return "; ".join(
        f"{i.get('internal_api')} {i.get('version')} ({i.get('architecture')}, "
        f"{i.get('num_threads')} threads)"
        for i in threadpool_info() if i.get("user_api") == "blas"
    ) or None


def main() -> None:
    """The classic program: a 2-4-1 sigmoid network learns XOR in 10,000 epochs (lr 0.1)."""
    net = NumpyMLP([2, 4, 1], "sigmoid", "sigmoid", "sse_half")
    rng = np.random.default_rng(0)
    params = [(rng.normal(size=(i, o)), np.zeros(o)) for i, o in ((2, 4), (4, 1))]
    params, value = net.train(params, XOR_X, XOR_T, lr=0.1, epochs=10_000)
    y, _ = net.forward(params, XOR_X)
    print(f"final loss {value:.6f}; outputs {np.round(y.ravel(), 3).tolist()}")


if __name__ == "__main__":
    main()
