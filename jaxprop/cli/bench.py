"""``jaxprop bench``: hand-written backprop vs NumPy vs jax.grad (vs PyTorch), per device."""

from __future__ import annotations

import argparse
import importlib.util

from jaxprop.bench import DTYPES, IMPLS, WORKLOADS, Config
from jaxprop.train.precision import PRECISIONS


def _names(known, what):
    def parse(text):
        names = tuple(n.strip() for n in text.split(",") if n.strip())
        bad = [n for n in names if n not in known]
        if bad or not names:
            raise argparse.ArgumentTypeError(
                f"unknown {what} {', '.join(bad) or repr(text)}; known: {', '.join(known)}"
            )
        return names

    return parse


def _positive(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workloads", type=_names(WORKLOADS, "workload"), default=WORKLOADS,
                   help=f"comma-separated, from {','.join(WORKLOADS)} (default: all)")
    p.add_argument("--impls", type=_names(IMPLS, "implementation"), default=None,
                   help=f"comma-separated, from {','.join(IMPLS)} (default: all installed)")
    p.add_argument("--dtypes", type=_names(DTYPES, "dtype"), default=DTYPES,
                   help="comma-separated: float32,bfloat16 (default: both)")
    p.add_argument("--backends", type=_names(("cpu", "gpu", "tpu"), "backend"), default=None,
                   help="JAX backends to use (default: every one present)")
    p.add_argument("--repeats", type=_positive, default=7, help="timed calls per cell (7)")
    p.add_argument("--warmup", type=_positive, default=2, help="untimed calls first (2)")
    p.add_argument("--matmul-precision", choices=("default", "high", "highest"),
                   default="highest", help="float32 matmul precision on GPU/TPU (highest)")
    p.add_argument("--precision", type=_names(tuple(PRECISIONS), "precision"),
                   default=Config.precisions,
                   help="precision policies of the gpu workload: highest,f32,bf16 (default: "
                        "all three; f32 = the default matmul precision, TF32 on GPUs)")
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test, not a measurement")
    p.add_argument("--json", metavar="FILE", help="write the header and one record per cell")
    p.add_argument("--markdown", metavar="FILE", help="write a markdown table")
    p.add_argument("--plots", metavar="DIR", help="write PNG plots (time vs batch, GFLOP/s vs width)")


def _has_torch() -> bool:
    # find_spec, not import: torch_impl sets OMP_WAIT_POLICY before torch is first imported
    return importlib.util.find_spec("torch") is not None


def run(args: argparse.Namespace) -> int:
    from jaxprop.bench import run as run_bench
    from jaxprop.device import require_backends

    if args.backends:
        require_backends(args.backends)  # --backends gpu on a CPU-only machine: exit 2
    impls = args.impls or tuple(i for i in IMPLS if i != "torch" or _has_torch())
    if "torch" in impls and not _has_torch():
        raise ValueError("torch is not installed: pip install 'jaxprop[bench]'")
    config = Config(
        workloads=args.workloads, impls=impls, dtypes=args.dtypes, backends=args.backends,
        repeats=args.repeats, warmup=args.warmup, matmul_precision=args.matmul_precision,
        precisions=args.precision,
    )
    if args.quick:
        config = config.quick()
    run_bench(config, json_path=args.json, markdown_path=args.markdown, plots_dir=args.plots)
    return 0
