"""The same MLP, CNN and GPT in PyTorch (autograd), for the optional ``torch`` implementation.

Import this module only when torch is installed (``pip install 'jaxprop[bench]'``). The benchmark
imports it in its own worker process (:mod:`jaxprop.bench.worker`), so torch's threads never share
a process with XLA's.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from jaxprop.bench.numpy_cnn import NumpyCNN

_ACTS = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu, "identity": lambda z: z}
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def devices() -> list[tuple[str, str]]:
    """``[(name, torch_device)]``: the CPU, and the first CUDA GPU when there is one."""
    out = [("cpu:0", "cpu")]
    if torch.cuda.is_available():
        out.append(("gpu:0", "cuda:0"))
    return out


def sync(device: str):
    """A function that waits for the work queued on ``device``."""
    if device.startswith("cuda"):
        return lambda _: torch.cuda.synchronize()
    return lambda _: None


def peak_bytes(device: str) -> int | None:
    return torch.cuda.max_memory_allocated() if device.startswith("cuda") else None


def reset_peak(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()


def adam_step_fn(params, value, lr=1e-3):
    """A no-argument Adam step on ``params`` (torch tensors) minimising ``value()``; it returns
    the loss before the step."""
    opt = torch.optim.Adam(params, lr=lr)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = value()
        loss.backward()
        opt.step()
        return loss

    return step


class TorchMLP:
    """``params``: ``[W1, b1, W2, b2, ...]`` leaf tensors with ``requires_grad``."""

    def __init__(self, np_params, acts, loss, *, device, dtype):
        self.acts = [_ACTS[a] for a in acts]
        self.loss = loss
        self.params = [
            torch.tensor(np.asarray(a, np.float32), device=device, dtype=_DTYPES[dtype],
                         requires_grad=True)
            for pair in np_params for a in pair
        ]

    def to_tensor(self, a):
        p = self.params[0]
        return torch.tensor(np.asarray(a, np.float32), device=p.device, dtype=p.dtype)

    def value(self, x, t):
        for i, act in enumerate(self.acts):
            x = act(x @ self.params[2 * i] + self.params[2 * i + 1])
        if self.loss == "sse_half":
            return 0.5 * ((x - t) ** 2).sum()
        if self.loss == "mse":
            return ((x - t) ** 2).mean()
        return -(t * torch.log_softmax(x, dim=-1)).sum() / x.shape[0]

    def loss_and_grad(self, x, t):
        value = self.value(x, t)
        return value, torch.autograd.grad(value, self.params)

    def sgd_train(self, x, t, *, lr, epochs):
        """Classic full-batch gradient descent, in place.

        ``x: (batch, in)``, ``t: (batch, out)``, tensors on the params' device and dtype
        (:meth:`to_tensor`).

        Args:
          x: the inputs, all of them in every step.
          t: the targets.
          lr: the learning rate: each step subtracts ``lr * grad`` from every param.
          epochs: the number of gradient steps.

        Returns:
          ``None``: the params are trained in place.
        """
        for _ in range(epochs):
            _, grads = self.loss_and_grad(x, t)
            with torch.no_grad():
                for p, g in zip(self.params, grads):
                    p -= lr * g

    def adam_step_fn(self, x, t, lr=1e-3):
        return adam_step_fn(self.params, lambda: self.value(x, t), lr)

    def adam_epochs(self, x, t, *, lr, batch_size, epochs):
        """``epochs`` epochs of shuffled minibatches with Adam, in place.

        The eager training loop a PyTorch user writes: a fresh ``torch.optim.Adam`` per call,
        a new permutation each epoch, the last minibatch ragged. ``x: (n, in)``,
        ``t: (n, out)``, tensors on the params' device and dtype (:meth:`to_tensor`).

        Args:
          x: the training inputs.
          t: the training targets.
          lr: Adam's learning rate.
          batch_size: examples per minibatch (the last one may have fewer).
          epochs: passes over the ``n`` examples.

        Returns:
          ``None``: the params are trained in place.
        """
        opt = torch.optim.Adam(self.params, lr=lr)
        n = x.shape[0]
        for _ in range(epochs):
            perm = torch.randperm(n, device=x.device)
            for i in range(0, n, batch_size):
                idx = perm[i:i + batch_size]
                opt.zero_grad(set_to_none=True)
                self.value(x[idx], t[idx]).backward()
                opt.step()


class TorchCNN:
    """The same layers in PyTorch (NCHW inside, flattened in NHWC order as jaxprop does)."""

    def __init__(self, text: str, np_params, device: str):
        self.device = device
        self.ops = NumpyCNN(text).ops
        self.params = []
        for (name, _), p in zip(self.ops, np_params):
            if name == "conv":  # HWIO -> OIHW
                p = (np.ascontiguousarray(p[0].transpose(3, 2, 0, 1)), p[1])
            self.params.append([torch.tensor(np.asarray(a, np.float32), device=device,
                                             requires_grad=True) for a in p])
        self.leaves = [a for p in self.params for a in p]

    def to_tensor(self, a):
        a = torch.tensor(np.asarray(a, np.float32), device=self.device)
        return a.permute(0, 3, 1, 2).contiguous() if a.ndim == 4 else a

    def loss_and_grad(self, x, t):
        F = torch.nn.functional
        for (name, args), p in zip(self.ops, self.params):
            if name == "conv":
                x = F.conv2d(x, p[0], p[1], padding="same")
            elif name == "relu":
                x = F.relu(x)
            elif name == "maxpool":
                x = F.max_pool2d(x, args[0])
            elif name == "flatten":
                x = x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)
            elif name == "dense":
                x = x @ p[0] + p[1]
        value = -(t * torch.log_softmax(x, dim=-1)).sum() / x.shape[0]
        return value, torch.autograd.grad(value, self.leaves)


class TorchGPT:
    """``jp.gpt``'s network in plain PyTorch (the same params, copied): pre-LN blocks of causal
    self-attention and a tanh-GELU MLP, the loss the mean cross-entropy over every token.

    ``np_params`` is ``jp.gpt``'s params tree as NumPy arrays: ``[{"table"}, {"table"},
    [[[ln, attention], [ln, dense, (), dense]], ...], ln, dense]``.
    """

    def __init__(self, np_params, heads: int, device: str):
        emb, pos, blocks, ln_f, head = np_params
        self.heads, self.device = heads, device
        tensor = lambda a: torch.tensor(np.asarray(a, np.float32), device=device,  # noqa: E731
                                        requires_grad=True)
        as_dict = lambda p: {k: tensor(v) for k, v in p.items()}  # noqa: E731
        self.emb, self.pos = tensor(emb["table"]), tensor(pos["table"])
        self.blocks = [(as_dict(ln1), as_dict(attn), as_dict(ln2), as_dict(fc), as_dict(proj))
                       for (ln1, attn), (ln2, fc, _, proj) in blocks]
        self.ln_f, self.head = as_dict(ln_f), as_dict(head)
        self.leaves = [self.emb, self.pos] + [
            t for p in (*[q for b in self.blocks for q in b], self.ln_f, self.head)
            for t in p.values()]

    def to_tensor(self, a):
        return torch.tensor(np.asarray(a), dtype=torch.long, device=self.device)

    @staticmethod
    def _ln(x, p):
        return torch.nn.functional.layer_norm(x, x.shape[-1:], p["scale"], p["offset"], 1e-5)

    def _attention(self, x, p):
        B, T, D = x.shape
        H = self.heads
        d = p["W_o"].shape[0] // H
        qkv = (x @ p["W_qkv"] + p["b_qkv"]).reshape(B, T, 3, H, d).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # (B, H, T, d)
        s = (q @ k.transpose(-1, -2)) / math.sqrt(d)
        causal = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
        att = torch.softmax(s.masked_fill(~causal, float("-inf")), dim=-1)
        o = (att @ v).transpose(1, 2).reshape(B, T, H * d)
        return o @ p["W_o"] + p["b_o"]

    def value(self, ids, targets):
        x = self.emb[ids] + self.pos[:ids.shape[1]]
        for ln1, attn, ln2, fc, proj in self.blocks:
            x = x + self._attention(self._ln(x, ln1), attn)
            h = torch.nn.functional.gelu(self._ln(x, ln2) @ fc["W"] + fc["b"], approximate="tanh")
            x = x + h @ proj["W"] + proj["b"]
        logits = self._ln(x, self.ln_f) @ self.head["W"] + self.head["b"]
        return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                 targets.reshape(-1))

    def loss_and_grad(self, ids, targets):
        value = self.value(ids, targets)
        return value, torch.autograd.grad(value, self.leaves)

    def adam_step_fn(self, ids, targets, lr=1e-3):
        return adam_step_fn(self.leaves, lambda: self.value(ids, targets), lr)
