"""The gpt benchmark workload (issue 20): at a tiny size (1 block, 16 features, context 8) the
hand-written and ``jax.grad`` steps it times agree, PyTorch's network is the same one, and the
workload runs every installed implementation. No speed is asserted here (benchmarks/README.md).
"""

import os

import chex
import jax
import numpy as np
import pytest

from jaxprop.bench import RECORD_KEYS, Bench, Config, report
from jaxprop.bench.harness import Harness, installed_impls
from jaxprop.bench.steps import jax_step
from jaxprop.bench.workloads import GPT_LOSS, gpt_setup

TINY = Config(impls=installed_impls(), repeats=1, warmup=1).quick()


@pytest.fixture(scope="module")
def tiny():
    """The tiny workload's model, params and ids, and one call of each JAX gradient step it
    times (hand-written, then ``jax.grad``) on the default device (a GPU's at the bench's
    highest matmul precision): ``(params, x, t, [(loss, grads), (loss, grads)])``."""
    model, x, t = gpt_setup(TINY)
    # params drawn on the host: model.init would compile a program per shape (seconds)
    rng = np.random.default_rng(0)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0)))
    params = jax.tree.map(lambda s: (0.5 * rng.standard_normal(s.shape)).astype(s.dtype), shapes)
    with Harness(TINY) as bench:
        dev = bench.devices[f"{jax.default_backend()}:0"]
        steps = [jax_step(bench, impl, model, GPT_LOSS, params, x, t, "float32", dev, "grad")[0]
                 for impl in ("jaxprop", "jax.grad")]
        return params, x, t, [step() for step in steps]


def test_hand_written_and_jax_grad_steps_agree(tiny):
    params, x, t, ((hand_loss, hand), (auto_loss, auto)) = tiny
    assert x.shape == t.shape == (4, 8) and x.dtype == np.int32  # the ids stay integers
    assert params[1]["table"].shape == (8, 16)  # context 8, 16 features
    np.testing.assert_allclose(hand_loss, auto_loss, rtol=1e-6)
    chex.assert_trees_all_close(hand, auto, rtol=1e-4, atol=1e-6)


def test_torch_gpt_equals_jaxprop_when_torch_is_installed(tiny):
    pytest.importorskip("torch")
    from jaxprop.bench.torch_impl import TorchGPT

    params, x, t, ((value, grads), _) = tiny
    net = TorchGPT(jax.tree.map(np.asarray, params), TINY.gpt_heads, "cpu")
    t_value, t_grads = net.loss_and_grad(net.to_tensor(x), net.to_tensor(t))
    np.testing.assert_allclose(float(t_value.detach()), value, rtol=1e-5)
    # TorchGPT's leaves: the two tables, each block's params, the last LayerNorm and Dense
    emb, pos, blocks, ln_f, head = grads
    ours = [emb["table"], pos["table"]] + [
        g for (ln1, attn), (ln2, fc, _, proj) in blocks
        for p in (ln1, attn, ln2, fc, proj) for g in p.values()] + [*ln_f.values(),
                                                                   *head.values()]
    assert len(ours) == len(t_grads)
    for a, b in zip(ours, t_grads, strict=True):
        np.testing.assert_allclose(b.numpy(), a, rtol=1e-4, atol=1e-6)


def test_gpt_table_fits_80_columns_with_every_column():
    """The gpt table's widest rows (a GPU's: peak memory, big times and rates) fit 80 columns,
    with its tokens/s and vs torch columns, and its target reads as a speed-up."""
    from rich.console import Console

    rows = [{k: None for k in RECORD_KEYS} | dict(
        workload="gpt", impl=impl, variant="adam step", device="gpu:0", dtype="float32",
        batch=16, width=256, median_s=s, min_s=s, max_s=s, compile_s=123.45, gflops=12345.6,
        roofline_ratio=0.99, tokens_per_s=12_345_678.0, peak_bytes=81_000 * 2**20,
        vs_jax_grad=1.25 if impl == "jaxprop" else None,
        vs_torch=12.5 if impl == "jaxprop" else None)
        for impl, s in (("jaxprop", 2.0), ("jax.grad", 2.5), ("torch", 25.0))]
    ((title, columns, _),) = report.groups(rows)
    assert [k for _, k, _ in columns] == [
        "impl", "median_s", "compile_s", "vs_jax_grad", "vs_torch", "gflops", "roofline_ratio",
        "tokens_per_s", "peak_bytes"]  # no NumPy: no vs NumPy column
    console = Console(width=200, record=True, file=open(os.devnull, "w"))
    summary = report.targets(rows)
    report.print_table(console, rows, summary)
    assert max(map(len, console.export_text().splitlines())) <= 80
    assert max(map(len, report.markdown(_HEAD, rows, summary).splitlines())) <= 80
    assert [(t["target"], t["value"]) for t in summary] == [
        ("gpt float32 gpu:0 batch 16: vs jax.grad", 1.25)]


_HEAD = dict(device="gpu:0", cpu_model="cpu", gpu_model="gpu", jax_version="0", date="today",
             isolation="process", command="jaxprop bench --workloads gpt")


@pytest.mark.long
def test_quick_gpt_workload_runs_every_installed_implementation():
    config = Config(workloads=("gpt",), repeats=1, warmup=1, backends=("cpu",)).quick()
    with Bench(config) as bench:
        records = bench.run()
    cells = [r for r in records if r["workload"] == "gpt"]
    assert {r["impl"] for r in cells} == set(installed_impls()) - {"numpy"}
    assert all(r["tokens_per_s"] == pytest.approx(4 * 8 / r["median_s"]) for r in cells)
    hand = next(r for r in cells if r["impl"] == "jaxprop")
    assert hand["variant"] == "adam step" and hand["vs_jax_grad"] > 0 and hand["gflops"] > 0
    assert (hand["vs_torch"] is not None) == ("torch" in installed_impls())
    (found,) = [t for t in report.targets(records) if t["target"].startswith("gpt")]
    assert found["target"] == "gpt float32 cpu:0 batch 4: vs jax.grad" and found["goal"] == 1.0
