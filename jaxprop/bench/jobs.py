"""The NumPy and PyTorch jobs a benchmark times: ``FACTORIES[name](**kwargs) -> (call, sync)``.

The worker process (:mod:`jaxprop.bench.worker`) builds them on request, and so does the
``shared`` runner in this process (:class:`~jaxprop.bench.timing.Shared`); ``INFO`` answers
questions about the process they run in. Nothing here starts JAX or imports torch until a torch
job is built.
"""

from __future__ import annotations

from jaxprop.bench import numpy_baseline as nb


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

    net = torch_impl.TorchCNN(text, params, device)
    xt, tt = net.to_tensor(x), net.to_tensor(t)
    return (lambda: net.loss_and_grad(xt, tt)), torch_impl.sync(device)


def torch_gpt(*, params, heads, x, t, step="adam", device="cpu"):
    """One ``torch.optim.Adam`` training step (learning rate 1e-3, ``step="adam"``) or one
    loss-and-gradient (``step="grad"``) of ``jp.gpt``'s network in PyTorch
    (:class:`~jaxprop.bench.torch_impl.TorchGPT`, float32).

    ``x: (batch, T)`` token ids, ``t: (batch, T)`` the next ids.

    Args:
      params: ``jp.gpt``'s params tree as NumPy arrays (copied into tensors; Adam's steps train
        them in place).
      heads: the attention heads.
      x: the input ids.
      t: the target ids.
      step: ``"adam"`` or ``"grad"``: what one call does.
      device: the torch device (``"cpu"``, ``"cuda:0"``).

    Returns:
      ``(call, sync)``: the call to time and a sync that waits for ``device``.
    """
    if step not in ("grad", "adam"):
        raise ValueError(f"step must be 'grad' or 'adam', not {step!r}")
    from jaxprop.bench import torch_impl

    net = torch_impl.TorchGPT(params, heads, device)
    xt, tt = net.to_tensor(x), net.to_tensor(t)
    call = (lambda: net.loss_and_grad(xt, tt)) if step == "grad" else net.adam_step_fn(xt, tt)
    return call, torch_impl.sync(device)


FACTORIES = {
    "numpy-grad": numpy_grad, "numpy-xor": numpy_xor, "torch-mlp": torch_mlp,
    "torch-xor": torch_xor, "torch-epochs": torch_epochs,
    "numpy-cnn": numpy_cnn, "torch-cnn": torch_cnn, "torch-gpt": torch_gpt,
}


def _torch_devices():
    from jaxprop.bench import torch_impl

    return torch_impl.devices()


INFO = {"torch-devices": _torch_devices, "numpy-blas": nb.numpy_blas}
