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
    """One loss-and-gradient of :class:`~jaxprop.bench.numpy_baseline.NumpyMLP`."""
    net = nb.NumpyMLP(sizes, activation, output_activation, loss)
    return (lambda: net.loss_and_grad(params, x, t)), _no_sync


def numpy_xor(*, params, x, t, lr, epochs):
    """The classic NumPy XOR program, whole (:func:`~jaxprop.bench.numpy_baseline.classic_xor`)."""
    (W1, b1), (W2, b2) = params
    return (lambda: nb.classic_xor(W1, b1, W2, b2, lr=lr, epochs=epochs, x=x, t=t)), _no_sync


def _torch_net(params, acts, loss, dtype, device="cpu"):
    from jaxprop.bench import torch_impl

    return torch_impl, torch_impl.TorchMLP(params, acts, loss, device=device, dtype=dtype)


def torch_grad(*, params, acts, loss, x, t, dtype="float32", device="cpu"):
    """One loss-and-gradient by PyTorch autograd."""
    ti, net = _torch_net(params, acts, loss, dtype, device)
    xt, tt = net.to_tensor(x), net.to_tensor(t)
    return (lambda: net.loss_and_grad(xt, tt)), ti.sync(device)


def torch_adam(*, params, acts, loss, x, t, dtype="float32", device="cpu"):
    """One ``torch.optim.Adam`` training step."""
    ti, net = _torch_net(params, acts, loss, dtype, device)
    return net.adam_step_fn(net.to_tensor(x), net.to_tensor(t)), ti.sync(device)


def torch_xor(*, params, x, t, lr, epochs, device="cpu"):
    """Full-batch gradient descent on XOR for ``epochs`` epochs, in PyTorch."""
    ti, net = _torch_net(params, ["sigmoid", "sigmoid"], "sse_half", "float32", device)
    xt, tt = net.to_tensor(x), net.to_tensor(t)
    return (lambda: net.sgd_train(xt, tt, lr=lr, epochs=epochs)), ti.sync(device)


def torch_epochs(*, params, acts, loss, x, t, lr, batch_size, epochs, device="cpu"):
    """``epochs`` epochs of shuffled minibatches with Adam, in PyTorch eager mode."""
    ti, net = _torch_net(params, acts, loss, "float32", device)
    xt, tt = net.to_tensor(x), net.to_tensor(t)
    return (lambda: net.adam_epochs(xt, tt, lr=lr, batch_size=batch_size, epochs=epochs)), \
        ti.sync(device)


def numpy_cnn(*, text, params, x, t):
    """One loss-and-gradient of :class:`~jaxprop.bench.numpy_cnn.NumpyCNN` (im2col)."""
    from jaxprop.bench.numpy_cnn import NumpyCNN

    net = NumpyCNN(text)
    return (lambda: net.loss_and_grad(params, x, t)), _no_sync


def torch_cnn(*, text, params, x, t, device="cpu"):
    """One loss-and-gradient of the same CNN by PyTorch autograd."""
    from jaxprop.bench import torch_impl
    from jaxprop.bench.cnn import TorchCNN

    net = TorchCNN(text, params, device)
    xt, tt = net.to_tensor(x), net.to_tensor(t)
    return (lambda: net.loss_and_grad(xt, tt)), torch_impl.sync(device)


FACTORIES = {
    "numpy-grad": numpy_grad, "numpy-xor": numpy_xor, "torch-grad": torch_grad,
    "torch-adam": torch_adam, "torch-xor": torch_xor, "torch-epochs": torch_epochs,
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
