"""The benchmark's worker process: builds NumPy and PyTorch calls and times them on request.

``python -m jaxprop.bench.worker`` reads pickled ``(command, args, kwargs)`` from stdin and
answers each with a pickled ``(ok, value)`` on stdout (anything the libraries print goes to
stderr). Commands: ``pid``; ``setup(name, factory, **kwargs)`` builds job ``name`` from
``FACTORIES[factory]``; ``warm(name, n)``; ``time(name, calls)`` -> ``(seconds per call,
settle)`` (a timed block of calls, then :func:`~jaxprop.bench.timing.quiet`); ``info(what)``;
``drop(name)``; ``close``.
Nothing here starts JAX: the worker's only threads are those of the library it times.
"""

from __future__ import annotations

import os
import pickle
import sys

import numpy as np

from jaxprop.bench import numpy_baseline as nb
from jaxprop.bench.timing import block_time, quiet, time_calls


def _no_sync(_):
    return None


def numpy_grad(*, sizes, activation, output_activation, loss, params, x, t):
    """One loss-and-gradient of :class:`~jaxprop.bench.numpy_baseline.NumpyMLP`.

    ``x: (batch, sizes[0])``, ``t: (batch, sizes[-1])``.

    Args:
      sizes: the layer widths, input first.
      activation: the hidden layers' activation name.
      output_activation: the output layer's activation name.
      loss: the loss name (``sse_half``, ``mse``, ``softmax_cross_entropy``).
      params: NumPy ``(W, b)`` pairs, one per Dense layer.
      x: the inputs.
      t: the targets.

    Returns:
      ``(call, sync)``: the call to time and a sync that does nothing.
    """
    net = nb.NumpyMLP(sizes, activation, output_activation, loss)
    return (lambda: net.loss_and_grad(params, x, t)), _no_sync


def numpy_xor(*, params, x, t, lr, epochs):
    """The classic NumPy XOR program, whole (:func:`~jaxprop.bench.numpy_baseline.classic_xor`).

    Args:
      params: the two NumPy ``(W, b)`` pairs of the 2-4-1 network (each call starts from them).
      x: the inputs, ``(batch, 2)``.
      t: the targets, ``(batch, 1)``.
      lr: the learning rate.
      epochs: the number of gradient steps of each call.

    Returns:
      ``(call, sync)``: the call to time and a sync that does nothing.
    """
    (W1, b1), (W2, b2) = params
    return (lambda: nb.classic_xor(W1, b1, W2, b2, lr=lr, epochs=epochs, x=x, t=t)), _no_sync


def _torch_net(params, acts, loss, dtype, device="cpu"):
    from jaxprop.bench import torch_impl

    return torch_impl, torch_impl.TorchMLP(params, acts, loss, device=device, dtype=dtype)


def torch_mlp(*, params, acts, loss, x, t, step="grad", dtype="float32", device="cpu"):
    """One loss-and-gradient by PyTorch autograd (``step="grad"``), or one
    ``torch.optim.Adam`` training step, learning rate 1e-3, full batch (``step="adam"``).

    ``x: (batch, in)``, ``t: (batch, out)``.

    Args:
      params: NumPy ``(W, b)`` pairs, one per Dense layer (copied into the tensors; Adam's
        steps train them in place).
      acts: one activation name per Dense layer (the hidden ones, then the output's).
      loss: the loss name (``sse_half``, ``mse``; anything else is softmax cross-entropy).
      x: the inputs, made a tensor of ``dtype`` on ``device`` once.
      t: the targets, likewise.
      step: ``"grad"`` or ``"adam"``: what one call does.
      dtype: ``"float32"`` or ``"bfloat16"``: the params' and the data's dtype.
      device: the torch device (``"cpu"``, ``"cuda:0"``).

    Returns:
      ``(call, sync)``: the call to time and a sync that waits for ``device``.
    """
    if step not in ("grad", "adam"):
        raise ValueError(f"step must be 'grad' or 'adam', not {step!r}")
    ti, net = _torch_net(params, acts, loss, dtype, device)
    xt, tt = net.to_tensor(x), net.to_tensor(t)
    call = (lambda: net.loss_and_grad(xt, tt)) if step == "grad" else net.adam_step_fn(xt, tt)
    return call, ti.sync(device)


def torch_xor(*, params, x, t, lr, epochs, device="cpu"):
    """Full-batch gradient descent on XOR for ``epochs`` epochs, in PyTorch.

    A sigmoid network with the loss ``sse_half``, in float32; the calls continue training the
    same tensors (in place).

    Args:
      params: the NumPy ``(W, b)`` pairs of the network (two for 2-4-1).
      x: the inputs, ``(batch, 2)``.
      t: the targets, ``(batch, 1)``.
      lr: the learning rate.
      epochs: the number of gradient steps of each call.
      device: the torch device (``"cpu"``, ``"cuda:0"``).

    Returns:
      ``(call, sync)``: the call to time and a sync that waits for ``device``.
    """
    ti, net = _torch_net(params, ["sigmoid", "sigmoid"], "sse_half", "float32", device)
    xt, tt = net.to_tensor(x), net.to_tensor(t)
    return (lambda: net.sgd_train(xt, tt, lr=lr, epochs=epochs)), ti.sync(device)


def torch_epochs(*, params, acts, loss, x, t, lr, batch_size, epochs, device="cpu"):
    """``epochs`` epochs of shuffled minibatches with Adam, in PyTorch eager mode (float32).

    ``x: (n, in)``, ``t: (n, out)``; the calls continue training the same tensors (in place).

    Args:
      params: NumPy ``(W, b)`` pairs, one per Dense layer.
      acts: one activation name per Dense layer (the hidden ones, then the output's).
      loss: the loss name (``sse_half``, ``mse``; anything else is softmax cross-entropy).
      x: the training inputs.
      t: the training targets.
      lr: Adam's learning rate.
      batch_size: examples per minibatch (the last one may have fewer).
      epochs: passes over the data in each call.
      device: the torch device (``"cpu"``, ``"cuda:0"``).

    Returns:
      ``(call, sync)``: the call to time and a sync that waits for ``device``.
    """
    ti, net = _torch_net(params, acts, loss, "float32", device)
    xt, tt = net.to_tensor(x), net.to_tensor(t)
    return (lambda: net.adam_epochs(xt, tt, lr=lr, batch_size=batch_size, epochs=epochs)), \
        ti.sync(device)


def numpy_cnn(*, text, params, x, t):
    """One loss-and-gradient of :class:`~jaxprop.bench.numpy_cnn.NumpyCNN` (im2col).

    ``x: (batch, H, W, C)`` (NHWC), ``t: (batch, classes)``.

    Args:
      text: the architecture text (the layers :mod:`~jaxprop.bench.numpy_cnn` supports).
      params: one entry per layer: NumPy ``(W, b)`` (``W`` in HWIO for a convolution) or ``()``.
      x: the images.
      t: the targets of softmax cross-entropy.

    Returns:
      ``(call, sync)``: the call to time and a sync that does nothing.
    """
    from jaxprop.bench.numpy_cnn import NumpyCNN

    net = NumpyCNN(text)
    return (lambda: net.loss_and_grad(params, x, t)), _no_sync


def torch_cnn(*, text, params, x, t, device="cpu"):
    """One loss-and-gradient of the same CNN by PyTorch autograd (float32).

    ``x: (batch, H, W, C)`` (NHWC, made NCHW for torch), ``t: (batch, classes)``.

    Args:
      text: the architecture text (the layers :mod:`~jaxprop.bench.numpy_cnn` supports).
      params: one entry per layer: NumPy ``(W, b)`` (``W`` in HWIO for a convolution) or ``()``.
      x: the images.
      t: the targets of softmax cross-entropy.
      device: the torch device (``"cpu"``, ``"cuda:0"``).

    Returns:
      ``(call, sync)``: the call to time and a sync that waits for ``device``.
    """
    from jaxprop.bench import torch_impl
    from jaxprop.bench.cnn import TorchCNN

    net = TorchCNN(text, params, device)
    xt, tt = net.to_tensor(x), net.to_tensor(t)
    return (lambda: net.loss_and_grad(xt, tt)), torch_impl.sync(device)


FACTORIES = {
    "numpy-grad": numpy_grad, "numpy-xor": numpy_xor, "torch-mlp": torch_mlp,
    "torch-xor": torch_xor, "torch-epochs": torch_epochs,
    "numpy-cnn": numpy_cnn, "torch-cnn": torch_cnn,
}


def _torch_devices():
    from jaxprop.bench import torch_impl

    return torch_impl.devices()


def _blas():
    from jaxprop.bench.report import numpy_blas

    return numpy_blas()


INFO = {"torch-devices": _torch_devices, "numpy-blas": _blas}


def main() -> None:
    out = os.fdopen(os.dup(1), "wb")  # the protocol's channel; stray prints go to stderr
    os.dup2(2, 1)
    inp = sys.stdin.buffer
    jobs = {}

    def reply(value, ok=True):
        pickle.dump((ok, value), out)
        out.flush()

    while True:
        try:
            command, args, kwargs = pickle.load(inp)
        except EOFError:
            return
        try:
            if command == "close":
                reply(None)
                return
            if command == "pid":
                reply(os.getpid())
            elif command == "setup":
                name, factory = args
                jobs[name] = FACTORIES[factory](**kwargs)
                reply(None)
            elif command == "warm":
                name, n = args
                call, sync = jobs[name]
                time_calls(call, repeats=0, warmup=n, sync=sync)
                quiet()
                reply(None)
            elif command == "time":
                name, calls = args
                seconds = block_time(*jobs[name], calls)
                reply((seconds, quiet()))
            elif command == "drop":
                jobs.pop(args[0], None)
                reply(None)
            elif command == "info":
                reply(INFO[args[0]]())
            else:
                reply(f"unknown command {command!r}", ok=False)
        except Exception as e:  # noqa: BLE001 - report it to the parent, keep serving
            reply(f"{type(e).__name__}: {e}", ok=False)


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
