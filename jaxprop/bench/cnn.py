"""The CNN gradient workload: hand-written backprop vs ``jax.grad`` vs NumPy im2col vs PyTorch.

One gradient of softmax cross-entropy (mean over the batch) for a small CNN on 28x28x1 images,
batch 256 (``jaxprop bench --workloads cnn``; ``--quick`` shrinks every size)::

    conv(32,3)-relu-maxpool(2)-conv(64,3)-relu-maxpool(2)-flatten-dense(128)-relu-dense(10)

Implementations, timed in alternating rounds, each undisturbed (NumPy and torch in worker
processes; see :mod:`jaxprop.bench.timing`):

* ``jaxprop``: the hand-written gradient, :func:`jaxprop.loss_and_grad_fn`, compiled once;
* ``jax.grad``: ``jax.value_and_grad`` of the same forward pass, compiled once;
* ``numpy``: :class:`~jaxprop.bench.numpy_cnn.NumpyCNN`, im2col convolutions (CPU, float32);
* ``torch``: the same network and weights with PyTorch autograd
  (:class:`~jaxprop.bench.torch_impl.TorchCNN`), when torch is installed;
* the roofline: the machine's best measured float32 matmul rate (``roofline`` rows), against
  which ``roofline_ratio`` puts the CNN's GFLOP/s.

GFLOP/s count 3x the traced forward pass per example (:func:`~jaxprop.bench.flops.step_flops`:
the forward pass, the input gradient and the weight gradient; the convolutions and Dense layers
exactly, ~4% more for the elementwise work); that overstates by the first convolution's input
gradient, which no implementation computes.
"""

from __future__ import annotations

import jax
import numpy as np

import jaxprop as jp
from jaxprop.bench.flops import step_flops
from jaxprop.bench.harness import VS_JAX_GRAD, VS_NUMPY, Entry, target
from jaxprop.bench.numpy_cnn import from_jaxprop
from jaxprop.bench.steps import jax_entries

LOSS = "softmax_cross_entropy"


def architecture(channels=(32, 64), dense: int = 128, classes: int = 10) -> str:
    """The workload's network as text: two 3x3 conv + ReLU + 2x2 max-pool blocks, two Dense."""
    c1, c2 = channels
    return (f"conv({c1},3)-relu-maxpool(2)-conv({c2},3)-relu-maxpool(2)-flatten-dense({dense})"
            f"-relu-dense({classes})")


def run(bench) -> None:
    """Time every implementation on the CNN workload and add the records to ``bench`` (a
    :class:`~jaxprop.bench.harness.Harness`; its config gives the sizes)."""
    cfg = bench.config
    side, batch = cfg.cnn_side, cfg.cnn_batch
    text = architecture(cfg.cnn_channels, cfg.cnn_dense)
    model = jp.parse_model(text, (side, side, 1))
    params0, state0 = model.init_with_state(jax.random.key(0))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, side, side, 1)).astype(np.float32)
    t = np.eye(10, dtype=np.float32)[rng.integers(0, 10, batch)]
    flops = step_flops(model, params0, state0, x)
    work = dict(flops=flops, samples=batch, step_flops=flops)
    entries = []
    if bench.has("numpy"):
        runner = bench.library("numpy")
        job = bench.job(runner, "numpy-cnn", text=text, params=from_jaxprop(params0), x=x, t=t)
        entries.append(Entry("numpy", "gradient", "cpu:0", runner, job, cfg.warmup, **work))
    entries += jax_entries(bench, model, LOSS, params0, x, t, "float32", "grad", **work)
    if bench.has("torch"):
        runner = bench.library("torch")
        for dname, tdev in bench.torch_devices():
            job = bench.job(runner, "torch-cnn", text=text, params=from_jaxprop(params0), x=x,
                            t=t, device=tdev)
            # torch's first calls per shape are slow (oneDNN kernel set-up): warm up longer
            entries.append(Entry("torch", "gradient", dname, runner, job, max(cfg.warmup, 8),
                                 **work))
    bench.cell("cnn", "float32", batch, cfg.cnn_channels[-1], entries)


def targets(records) -> list[dict]:
    """The CNN targets as speed-ups measured in one run, per device: vs ``jax.grad`` (its time
    / the hand-written one's) >= 0.9 and vs NumPy >= 3."""
    cells = {(r["impl"], r["device"]): r for r in records if r["workload"] == "cnn"}
    out = []
    numpy = cells.get(("numpy", "cpu:0"))
    for (impl, dev), hand in sorted(cells.items()):
        if impl != "jaxprop":
            continue
        tag = f"cnn float32 {dev} batch {hand['batch']}"
        for other, name, goal in ((cells.get(("jax.grad", dev)), VS_JAX_GRAD, 0.9),
                                  (numpy, VS_NUMPY, 3.0)):
            if other is not None:
                out.append(target(f"{tag}: {name}", other["median_s"] / hand["median_s"], goal))
    return out
