"""``jaxprop check``: hand-written gradients against ``jax.grad`` and finite differences.

Builds a preset network (``--preset mixed|xor``) or a described one (``--sizes 4,16,8,3
--activation tanh --output-activation identity --loss mse``), draws a batch of inputs and
targets that suit the loss, runs :func:`jaxprop.gradcheck.check_gradients` and prints a table
and a one-line verdict. Exit 0 when every leaf agrees, 1 when any does not, 2 on bad arguments.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from jaxprop.gradcheck import MAX_FD_COORDS, GradCheckReport, check_gradients
from jaxprop.layers import ACTIVATIONS, Dense, activation
from jaxprop.losses import LOSSES, get_loss
from jaxprop.network import Model, mlp, serial

PRESETS = ("mixed", "xor")


def mixed_preset(dtype=jnp.float32) -> tuple[Model, str]:
    """Five Dense layers (4 -> 8 -> 8 -> 8 -> 8 -> 3) using every activation in ACTIVATIONS.

    Loss ``mse`` on the softmax output.
    """
    d = dict(dtype=dtype)
    model = serial(
        Dense(8, **d), activation("tanh"), activation("gelu"),
        Dense(8, **d), activation("leaky_relu"), activation("sigmoid"),
        Dense(8, **d), activation("relu"), activation("softplus"),
        Dense(8, **d), activation("gelu_tanh"), activation("identity"),
        Dense(3, **d), activation("softmax"),
        in_shape=(4,),
    )  # fmt: skip
    used = {layer.name for layer in model.layers}
    assert set(ACTIVATIONS) <= used, set(ACTIVATIONS) - used
    return model, "mse"


def xor_preset(dtype=jnp.float32) -> tuple[Model, str]:
    """The classic 2-4-1 sigmoid network, standard-normal weights, sum-of-squares loss."""
    return mlp([2, 4, 1], "sigmoid", "sigmoid", init="normal", dtype=dtype), "sse_half"


XOR_X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float64)
XOR_T = np.array([[0], [1], [1], [0]], np.float64)


def make_data(key, loss_name: str, in_shape, out_shape, batch: int, dtype):
    """Inputs ~ N(0, 1) and targets that suit the loss (probabilities, one-hot, or reals)."""
    kx, kt = jax.random.split(key)
    x = jax.random.normal(kx, (batch, *in_shape), dtype)
    shape = (batch, *out_shape)
    if loss_name in ("bce", "bce_with_logits"):
        t = jax.random.uniform(kt, shape, dtype)
    elif loss_name == "softmax_cross_entropy":
        t = jax.nn.one_hot(jax.random.randint(kt, shape[:-1], 0, shape[-1]), shape[-1], dtype=dtype)
    else:
        t = jax.random.normal(kt, shape, dtype)
    return x, t


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
        model, loss_name = (xor_preset if args.preset == "xor" else mixed_preset)(dtype)
        loss_name = args.loss or loss_name
    loss_name = get_loss(loss_name).name  # unknown name -> ValueError
    last = model.layers[-1].name
    if loss_name == "bce" and last not in ("sigmoid", "softmax"):
        raise ValueError(
            f"loss bce takes probabilities but the output activation is {last}; "
            "use --output-activation sigmoid, or --loss bce_with_logits"
        )
    return model, loss_name


def run(args) -> int:
    if args.batch < 1:
        raise ValueError(f"--batch must be >= 1, got {args.batch}")
    with jax.enable_x64(args.dtype == "float64" or jax.config.jax_enable_x64):
        model, loss_name = build(args)
        dtype = jnp.dtype(args.dtype)
        k_params, k_data = jax.random.split(jax.random.key(args.seed))
        params, out_shape = model.init_with_shape(k_params, model.in_shape)
        if args.preset == "xor" and args.sizes is None:
            x, t = jnp.asarray(XOR_X, dtype), jnp.asarray(XOR_T, dtype)
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
