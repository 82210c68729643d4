"""``jaxprop check``: hand-written gradients against ``jax.grad`` and finite differences.

Builds a preset network (``--preset mixed|xor``) or a described one (``--sizes 4,16,8,3
--activation tanh --output-activation identity --loss mse``), draws a batch of inputs and
targets that suit the loss, runs :func:`jaxprop.tools.gradcheck.check_gradients` and prints a table
and a one-line verdict. Exit 0 when every leaf agrees, 1 when any does not, 2 on bad arguments.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp

from jaxprop.core.checks import check_output_fits_loss
from jaxprop.core.layers import ACTIVATIONS
from jaxprop.core.losses import LOSSES, get_loss
from jaxprop.core.network import Model, mlp
from jaxprop.tools.gradcheck import MAX_FD_COORDS, GradCheckReport, check_gradients
from jaxprop.tools.presets import PRESETS, make_data, preset, xor_data


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(s) for s in text.split(",")]
    except ValueError:
        raise ValueError(
            f"--sizes must be comma-separated ints like 4,16,8,3, got {text!r}"
        ) from None
    if len(sizes) < 2 or min(sizes) < 1:
        raise ValueError(f"--sizes needs at least two positive ints, got {text!r}")
    return sizes


def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", choices=PRESETS, default=None,
                   help="network to check (default: mixed, unless --sizes is given)")
    p.add_argument("--sizes", help="layer widths, e.g. 4,16,8,3 (instead of a preset)")
    p.add_argument("--activation", default="tanh",
                   help="hidden activation, or one per hidden layer: a,b,c "
                        f"(known: {', '.join(ACTIVATIONS)})")
    p.add_argument("--output-activation", default="identity", help="output activation")
    p.add_argument("--loss", default=None,
                   help=f"loss (known: {', '.join(LOSSES)}; default: the preset's, else mse)")
    p.add_argument("--batch", type=int, default=8,
                   help="examples in the batch (default 8; --preset xor uses its 4 points)")
    p.add_argument("--seed", type=int, default=0, help="random seed for params and data")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--max-fd-coords", type=int, default=MAX_FD_COORDS,
                   help="finite differences on at most this many random coordinates per leaf")


def build(args) -> tuple[Model, str]:
    """The model and loss name that ``args`` describe."""
    dtype = jnp.dtype(args.dtype)
    if args.sizes is not None:
        if args.preset is not None:
            raise ValueError("give either --preset or --sizes, not both")
        acts = args.activation.split(",") if "," in args.activation else args.activation
        model = mlp(_sizes(args.sizes), acts, args.output_activation, dtype=dtype)
        loss_name = args.loss or "mse"
    else:
        model, loss_name = preset(args.preset or "mixed", dtype)
        loss_name = args.loss or loss_name
    loss_name = get_loss(loss_name).name  # unknown name -> ValueError
    check_output_fits_loss(model, loss_name)
    return model, loss_name


def run(args) -> int:
    if args.batch < 1:
        raise ValueError(f"--batch must be >= 1, got {args.batch}")
    with jax.enable_x64(args.dtype == "float64" or jax.config.jax_enable_x64):
        model, loss_name = build(args)
        dtype = jnp.dtype(args.dtype)
        k_params, k_data = jax.random.split(jax.random.key(args.seed))
        params, _, out_shape = model.init(k_params, model.in_shape)
        if args.preset == "xor" and args.sizes is None:
            x, t = xor_data(dtype)
        else:
            x, t = make_data(k_data, loss_name, model.in_shape, out_shape, args.batch, dtype)
        report = check_gradients(
            model, loss_name, params, x, t, max_fd_coords=args.max_fd_coords, seed=args.seed
        )
    print_report(report, f"{model.describe()}  |  loss {loss_name}  |  batch {x.shape[0]}")
    return 0 if report.ok else 1


def print_report(report: GradCheckReport, title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    table.add_column("leaf", no_wrap=True)
    table.add_column("shape", no_wrap=True)
    table.add_column("vs jax.grad: abs / rel", justify="right", no_wrap=True)
    table.add_column("vs FD: abs / rel", justify="right", no_wrap=True)
    table.add_column("ok", justify="center")
    for c in report.leaves:
        fd = f"{c.fd_abs_err:.1e} / {c.fd_rel_err:.1e}"
        if c.sampled:
            fd += f" ({c.fd_coords} of {c.size})"
        table.add_row(
            c.name, str(c.shape), f"{c.grad_abs_err:.1e} / {c.grad_rel_err:.1e}", fd,
            "[green]yes[/green]" if c.ok else "[bold red]NO[/bold red]",
        )  # fmt: skip
    console = Console()
    if not console.is_terminal:  # piped or captured: don't squeeze the table into 80 columns
        console = Console(width=130)
    console.print(table)
    console.print(report.verdict(), style="green" if report.ok else "bold red", highlight=False)
