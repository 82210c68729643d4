"""A plain NumPy CNN with im2col convolutions: the benchmark's baseline for the CNN workload, and
a readable reference of convolutional backprop in NumPy.

It runs the layers of a jaxprop architecture text made of ``conv(features,kernel)`` (stride 1,
``SAME`` padding, an odd kernel), ``relu``, ``maxpool(k)`` (``k x k`` windows, stride ``k``),
``flatten``, ``dense(n)`` and ``identity``, with jaxprop's params (``W`` in HWIO for a
convolution, ``(in, out)`` for a Dense layer) and the loss ``softmax_cross_entropy``.

A convolution becomes one matrix product: im2col copies every ``k x k x C`` patch of the padded
input into a row, ``(N*H*W, k*k*C) @ (k*k*C, F)``. Backward: ``dW = cols^T @ dy``,
``dcols = dy @ W^T``, and col2im adds each patch's gradient back where the patch came from.
Images are NHWC, as in jaxprop; max pooling sends the gradient to the first maximum of each
window in row-major order, as jaxprop does.
"""

from __future__ import annotations

import numpy as np

from jaxprop.bench.numpy_baseline import LOSSES

SUPPORTED = ("conv", "relu", "maxpool", "flatten", "dense", "identity")


def _conv_forward(params, x):
    W, b = params
    k, _, c, f = W.shape
    lo, hi = (k - 1) // 2, k - 1 - (k - 1) // 2  # SAME padding for stride 1
    xp = np.pad(x, ((0, 0), (lo, hi), (lo, hi), (0, 0)))
    n, h, w, _ = x.shape
    # (N, H, W, C, k, k) view of every patch -> rows (N*H*W, k*k*C) in (i, j, c) order
    patches = np.lib.stride_tricks.sliding_window_view(xp, (k, k), axis=(1, 2))
    cols = patches.transpose(0, 1, 2, 4, 5, 3).reshape(n * h * w, k * k * c)
    y = cols @ W.reshape(k * k * c, f) + b
    return y.reshape(n, h, w, f), (cols, x.shape)


def _conv_backward(params, cache, dy):
    W, _ = params
    cols, (n, h, w, c) = cache
    k, f = W.shape[0], W.shape[3]
    dy2 = dy.reshape(-1, f)
    dW = (cols.T @ dy2).reshape(W.shape)
    dcols = (dy2 @ W.reshape(-1, f).T).reshape(n, h, w, k, k, c)
    lo = (k - 1) // 2
    dxp = np.zeros((n, h + k - 1, w + k - 1, c), dy.dtype)
    for i in range(k):  # col2im: each kernel offset's gradients back to their pixels
        for j in range(k):
            dxp[:, i:i + h, j:j + w] += dcols[:, :, :, i, j]
    return (dW, dy2.sum(axis=0)), dxp[:, lo:lo + h, lo:lo + w]


def _pool_forward(k, x):
    n, h, w, c = x.shape
    ho, wo = h // k, w // k
    windows = x[:, :ho * k, :wo * k].reshape(n, ho, k, wo, k, c).transpose(0, 1, 3, 5, 2, 4)
    windows = windows.reshape(n, ho, wo, c, k * k)
    arg = windows.argmax(axis=-1)  # the first maximum, row-major in the window
    return np.take_along_axis(windows, arg[..., None], -1)[..., 0], (arg, x.shape)


def _pool_backward(k, cache, dy):
    arg, (n, h, w, c) = cache
    ho, wo = dy.shape[1:3]
    dwin = (np.arange(k * k) == arg[..., None]) * dy[..., None]  # (N, Ho, Wo, C, k*k)
    dwin = dwin.reshape(n, ho, wo, c, k, k).transpose(0, 1, 4, 2, 5, 3)
    dx = np.zeros((n, h, w, c), dy.dtype)
    dx[:, :ho * k, :wo * k] = dwin.reshape(n, ho * k, wo * k, c)
    return dx


class NumpyCNN:
    """The layers of ``text`` (see the module docstring) and softmax cross-entropy in NumPy."""

    def __init__(self, text: str):
        from jaxprop.core.spec import split_spec

        self.ops = []
        for token in split_spec(text):
            name, _, args = token.strip().partition("(")
            if name not in SUPPORTED:
                raise ValueError(f"NumpyCNN: unsupported layer {token!r}; it runs "
                                 f"{', '.join(SUPPORTED)}")
            numbers = [int(a) for a in args.rstrip(")").split(",") if a.strip()]
            if name == "conv" and (len(numbers) != 2 or numbers[1] % 2 == 0):
                raise ValueError(f"NumpyCNN: {token!r}: only conv(features,odd_kernel)")
            self.ops.append((name, numbers))
        self.loss_value, self.loss_grad = LOSSES["softmax_cross_entropy"]

    def forward(self, params, x):
        """``(logits, caches)``; ``params`` has one entry per layer: ``(W, b)`` or ``()``."""
        caches = []
        for (name, args), p in zip(self.ops, params):
            if name == "conv":
                x, cache = _conv_forward(p, x)
            elif name == "dense":
                x, cache = x @ p[0] + p[1], x
            elif name == "relu":
                cache = x > 0
                x = np.where(cache, x, 0)
            elif name == "maxpool":
                x, cache = _pool_forward(args[0], x)
            elif name == "flatten":
                x, cache = x.reshape(x.shape[0], -1), x.shape
            else:
                cache = None
            caches.append(cache)
        return x, caches

    def backward(self, params, caches, dy):
        """Gradients with ``params``' structure from ``dy = dL/dlogits``."""
        grads = [()] * len(self.ops)
        for i in reversed(range(len(self.ops))):
            (name, args), p, cache = self.ops[i], params[i], caches[i]
            if name == "conv":
                grads[i], dy = _conv_backward(p, cache, dy)
            elif name == "dense":
                x2 = cache.reshape(-1, cache.shape[-1])
                grads[i], dy = (x2.T @ dy, dy.sum(axis=0)), dy @ p[0].T
            elif name == "relu":
                dy = np.where(cache, dy, 0)
            elif name == "maxpool":
                dy = _pool_backward(args[0], cache, dy)
            elif name == "flatten":
                dy = dy.reshape(cache)
        return grads

    def loss_and_grad(self, params, x, t):
        """``(loss, grads)`` of softmax cross-entropy (mean over the batch)."""
        y, caches = self.forward(params, x)
        return self.loss_value(y, t), self.backward(params, caches, self.loss_grad(y, t))


def from_jaxprop(params) -> list:
    """jaxprop params (``{"W", "b"}`` or ``()`` per layer) as NumPy ``(W, b)`` or ``()``."""
    return [(np.array(p["W"]), np.array(p["b"])) if p else () for p in params]
