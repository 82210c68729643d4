"""``jaxprop bench``: hand-written backprop vs NumPy vs jax.grad (vs PyTorch), per device."""

from __future__ import annotations

import argparse

from jaxprop.bench import DTYPES, IMPLS, ISOLATION, WORKLOADS, Config
from jaxprop.bench.harness import has_torch, installed_impls
from jaxprop.cli.args import parse_sizes

# the gpu workload's precision policies (jaxprop.train.precision.PRECISIONS but f64: its
# float32 model and data cannot run under a float64 policy)
GPU_PRECISIONS = ("highest", "f32", "bf16")


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


def _sizes(text):
    try:
        return parse_sizes(text, "--sizes must be at least two comma-separated positive "
                                 "integers like 1,32,32,1; got ")
    except ValueError as e:  # argparse shows this message (exit 2)
        raise argparse.ArgumentTypeError(str(e)) from None


def add_parser(p: argparse.ArgumentParser) -> None:
    from jaxprop.core.layers import ACTIVATIONS
    from jaxprop.core.losses import LOSSES

    names = tuple(WORKLOADS)
    p.add_argument("--workloads", type=_names(names, "workload"), default=(),
                   help=f"comma-separated, from {','.join(names)} (default: all but custom; "
                        "custom alone with --sizes)")
    p.add_argument("--impls", type=_names(IMPLS, "implementation"), default=None,
                   help=f"comma-separated, from {','.join(IMPLS)} (default: all installed)")
    p.add_argument("--dtypes", type=_names(DTYPES, "dtype"), default=DTYPES,
                   help="comma-separated: float32,bfloat16 (default: both)")
    p.add_argument("--backends", type=_names(("cpu", "gpu", "tpu"), "backend"), default=None,
                   help="JAX backends to use (default: every one present)")
    p.add_argument("--repeats", type=_positive, default=7, help="timed rounds per cell (7)")
    p.add_argument("--warmup", type=_positive, default=2, help="untimed calls first (2)")
    p.add_argument("--fresh", type=_positive, default=3,
                   help="fresh processes per first-call figure (3)")
    p.add_argument("--isolation", choices=ISOLATION, default="process",
                   help="process (default): NumPy and torch in their own processes, each call "
                        "timed with no other library's threads awake; shared: all in this "
                        "process, back to back (the old method, for comparison)")
    p.add_argument("--matmul-precision", choices=("default", "high", "highest"),
                   default="highest", help="float32 matmul precision on GPU/TPU (highest)")
    p.add_argument("--precision", type=_names(GPU_PRECISIONS, "precision"),
                   default=Config.precisions,
                   help="precision policies of the gpu workload: highest,f32,bf16 (default: "
                        "all three; f32 = the default matmul precision, TF32 on GPUs)")
    p.add_argument("--quick", action="store_true",
                   help="tiny sizes: a smoke test of the benchmark, not a measurement")
    p.add_argument("--json", metavar="FILE", help="write the header and one record per cell")
    p.add_argument("--markdown", metavar="FILE", help="write a markdown table")
    p.add_argument("--plots", metavar="DIR", help="write PNG plots (time vs batch, GFLOP/s vs width)")
    g = p.add_argument_group("your own MLP (the custom workload)")
    g.add_argument("--sizes", type=_sizes, default=None, help="layer sizes, e.g. 1,32,32,1")
    g.add_argument("--activation", choices=tuple(ACTIVATIONS), default=None,
                   help="hidden activation (default relu)")
    g.add_argument("--output-activation", choices=tuple(ACTIVATIONS), default=None,
                   help="output activation (default: sigmoid for bce, else identity)")
    g.add_argument("--loss", choices=tuple(LOSSES), default=None, help="loss (default mse)")
    g.add_argument("--batch", type=_positive, default=None, help="batch size (default 64)")


def config_from_args(args: argparse.Namespace) -> Config:
    """The :class:`~jaxprop.bench.Config` the command line asks for."""
    impls = args.impls or installed_impls()
    if "torch" in impls and not has_torch():
        raise ValueError("torch is not installed: pip install 'jaxprop[bench]'")
    custom = {}
    given = {k: getattr(args, k) for k in ("activation", "output_activation", "loss", "batch")}
    if args.sizes is None:
        extra = [k for k, v in given.items() if v is not None]
        if extra:
            raise ValueError(f"--{extra[0].replace('_', '-')} describes your own MLP: give "
                             "--sizes too, e.g. --sizes 1,32,32,1")
        if "custom" in args.workloads:
            raise ValueError("the custom workload needs --sizes, e.g. --sizes 1,32,32,1")
    else:  # only the options given: Config holds the defaults
        custom = {f"custom_{k}": v for k, v in given.items() if v is not None}
        custom["custom_sizes"] = args.sizes
    config = Config(
        workloads=args.workloads, impls=impls, dtypes=args.dtypes, backends=args.backends,
        repeats=args.repeats, warmup=args.warmup, fresh=args.fresh, isolation=args.isolation,
        matmul_precision=args.matmul_precision, precisions=args.precision, **custom,
    )
    return config.quick() if args.quick else config


def run(args: argparse.Namespace) -> int:
    from jaxprop.bench import check_output_paths
    from jaxprop.bench import run as run_bench
    from jaxprop.device import require_backends

    if args.backends:
        require_backends(args.backends)  # --backends gpu on a CPU-only machine: exit 2
    check_output_paths(args.json, args.markdown, args.plots)
    run_bench(config_from_args(args), json_path=args.json, markdown_path=args.markdown,
              plots_dir=args.plots)
    return 0
