"""``jaxprop devices``, ``jaxprop bench --backends gpu`` without a GPU, the gpu workload's rows
(run on the CPU at tiny sizes), and ``benchmarks/device_check.sh`` in its no-GPU mode."""

import dataclasses
import json
import os
import re
import subprocess
import sys

import jax
import pytest

from jaxprop.bench import RECORD_KEYS, Bench, Config, report
from jaxprop.bench import gpu
from jaxprop.cli import main
from jaxprop.device import describe

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HAS_GPU = any(d.platform == "gpu" for d in jax.devices())


def test_devices_prints_backend_devices_precision_and_versions(capsys):
    assert main(["devices"]) == 0
    out = capsys.readouterr().out
    backend = jax.default_backend()
    for text in (f"default backend: {backend}", f"jax {jax.__version__}", "jaxlib",
                 "default matmul precision: default", f"float32 matmuls on {backend}",
                 f"{backend}:0"):
        assert text in out, text
    assert main(["devices", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info == json.loads(json.dumps(describe()))
    assert info["devices"] and {"id", "backend", "kind", "memory"} <= set(info["devices"][0])


@pytest.mark.skipif(HAS_GPU, reason="this machine has a GPU")
def test_bench_backends_gpu_without_a_gpu_exits_2(capsys):
    assert main(["bench", "--backends", "gpu", "--workloads", "gpu"]) == 2
    err = capsys.readouterr().err
    assert "no gpu backend here: JAX sees only cpu" in err and "cuda" in err
    assert err.count("\n") == 1


@pytest.mark.long
def test_gpu_workload_rows_on_the_cpu_when_asked():
    config = dataclasses.replace(Config(
        workloads=("gpu",), backends=("cpu",), impls=("numpy", "jaxprop", "jax.grad"),
        precisions=("highest", "bf16"), repeats=1, warmup=1).quick(), gpu_widths=(32,))
    bench = Bench(config)
    records = bench.run()
    cells = {(r["impl"], r["dtype"], r["width"]) for r in records}
    for width in config.gpu_widths:
        assert ("numpy", "float32", width) in cells
        for precision in config.precisions:
            for impl in ("matmul", "jaxprop", "jax.grad"):
                assert (impl, precision, width) in cells
    assert all(r["workload"] == "gpu-mlp" and r["batch"] == config.gpu_batch for r in records)
    assert all(r["roofline_ratio"] > 0 for r in records if r["impl"] in ("jaxprop", "jax.grad"))
    names = [t["target"] for t in gpu.targets(records)]
    assert len([n for n in names if n.endswith(": vs jax.grad")]) == 2
    # the rows carry every record key, so the report can print them (it groups by variant)
    assert all(tuple(r) == RECORD_KEYS and r["variant"] == "gradient" for r in records)
    assert len(report.groups(records)) == 1 + len(config.precisions)
    # without --backends cpu the CPU is left out, with a note
    plain = Bench(Config(workloads=("gpu",), impls=("jaxprop",), repeats=1, warmup=1).quick())
    if not HAS_GPU:
        assert plain.run() == [] and any("gpu workload skipped" in n for n in plain.notes)


def test_bench_cli_precision_flag(capsys):
    assert main(["bench", "--precision", "f16"]) == 2
    assert "unknown precision f16" in capsys.readouterr().err


@pytest.mark.skipif(HAS_GPU, reason="this machine has a GPU: the script would run for minutes")
def test_device_check_says_what_it_skips_and_exits_0_without_a_gpu(tmp_path):
    out = tmp_path / "out"
    r = subprocess.run(
        ["bash", os.path.join(ROOT, "benchmarks", "device_check.sh"), str(out)],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHON": sys.executable, "JAX_PLATFORMS": "cpu"})
    assert r.returncode == 0, r.stderr
    summary = (out / "summary.txt").read_text()
    assert "no GPU" in summary and "skipped:" in summary and "bench GPU rows" in summary
    assert "done devices: exit 0" in summary
    assert "default backend: cpu" in (out / "devices_tests.txt").read_text()
    files = sorted(p.name for p in out.rglob("*"))
    assert len(files) <= 11 and all(re.fullmatch(r"[A-Za-z0-9._-]+", f) for f in files)


def test_device_check_needs_one_argument():
    r = subprocess.run(["bash", os.path.join(ROOT, "benchmarks", "device_check.sh")],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "usage" in r.stderr
