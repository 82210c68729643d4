"""``jaxprop check``: hand-written gradients against ``jax.grad``/``jax.vjp`` and finite differences.

What to check:

* a preset network (``--preset mixed|xor``, the default) or a described one (``--sizes 4,16,8,3
  --activation tanh --output-activation identity --loss mse``);
* your own layer: ``--layer my_module:MyLayer --in-shape 8 [--batch 16]``;
* your own model: ``--model my_module:make_model [--in-shape 8] [--loss mse]``, or as text:
  ``--model "dense(8)-swish-dense(1)" --in-shape 4 --import my_layers`` (``--import``: a module
  or ``.py`` file imported first, e.g. one that registers layers with ``jp.register_layer``);
* any JAX function's gradient rule (a ``jax.custom_vjp`` or ``jax.custom_jvp``):
  ``--function my_module:fn --args "f32[8,16],f32[16]"`` (:mod:`jaxprop.tools.check_function`);
* second order too: ``--order 2`` (:func:`jaxprop.check_hvp` after the first-order check).

Inputs: ``check_layer``'s draws (normal, wide, near kinks), plus ``--input-scale S``,
``--input-range LO,HI`` or ``--inputs FILE.npy`` (for a model: its inputs ``x`` instead).

``my_module`` is a module on the path (the current folder included) or a file,
``path/to/file.py:Name``; ``Name`` is a Layer (a model is a Layer) or a function of no
arguments that returns one. The checking lives in :mod:`jaxprop.tools.gradcheck`; this module
parses, loads and prints the per-layer table, the per-leaf table and a one-line verdict.
Exit 0 when everything agrees, 1 when anything does not, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import inspect
import re

import jax
import jax.numpy as jnp
import numpy as np

from jaxprop.core.checks import check_output_fits_loss
from jaxprop.core.layers import ACTIVATIONS, Layer
from jaxprop.core.losses import LOSSES, get_loss
from jaxprop.core.network import Model, mlp, serial
from jaxprop.core.spec import parse_model
from jaxprop.tools.check_function import MAX_FD_COORDS as MAX_FD_COORDS_FUNCTION
from jaxprop.tools.check_function import check_jvp, check_vjp
from jaxprop.tools.gradcheck import (
    DEFAULT_BATCH,
    MAX_FD_COORDS,
    check_fits,
    check_gradients,
    check_layer,
    draw_inputs,
    input_draw,
)
from jaxprop.tools.gradcheck_report import (
    ERROR_LEGEND,
    GradCheckReport,
    LayerReport,
    layer_rows,
    leaf_rows,
    quantity_rows,
)
from jaxprop.cli.args import add_import_option, import_modules, parse_sizes
from jaxprop.imports import import_source
from jaxprop.predict import read_npy
from jaxprop.tools.presets import PRESETS, make_data, preset

DEFAULT_ACTIVATION, DEFAULT_OUTPUT_ACTIVATION = "tanh", "identity"  # of a --sizes network
ARG_DTYPES = {"f64": "float64", "f32": "float32", "f16": "float16", "bf16": "bfloat16",
              "i32": "int32", "i64": "int64"}


def _sizes(text: str) -> tuple[int, ...]:
    return parse_sizes(text, "--sizes must be comma-separated ints like 4,16,8,3, got ",
                       "--sizes needs at least two positive ints, got ")


def parse_in_shape(text: str) -> tuple[int, ...]:
    """``"8"`` (or ``"(8,)"``) -> ``(8,)``, ``"28,28,1"`` (or ``"28x28x1"``, ``"(28, 28, 1)"``)
    -> ``(28, 28, 1)``; an empty part (``"3x"``, ``"x3"``, ``"3,,4"``) is refused."""
    body = text.strip().strip("()[]").strip()
    if body.endswith(","):  # (8,): a one-element tuple as Python writes it
        body = body[:-1]
    try:
        shape = tuple(int(p) for p in re.split(r"[x,]", body))
    except ValueError:
        shape = ()
    if not shape or min(shape) < 1:
        raise ValueError(f"--in-shape must be positive ints like 8 or 28,28,1, got {text!r}")
    return shape


def parse_arg_specs(text: str) -> list[jax.ShapeDtypeStruct]:
    """``"f32[8,16],f32[16]"`` -> ``[ShapeDtypeStruct((8, 16), float32), ...]`` (``f32[]``: a
    scalar); ``ValueError`` naming the bad part."""
    parts = re.findall(r"\s*([^,\[\]]*)\[([^\]]*)\]\s*(?:,|$)", text)
    rebuilt = ",".join(f"{d}[{s}]" for d, s in parts)
    if not parts or rebuilt.replace(" ", "") != text.replace(" ", ""):
        raise ValueError(f'--args must be dtype[shape] parts like "f32[8,16],f32[16]", got '
                         f"{text!r}")
    specs = []
    for dtype, shape in parts:
        if dtype.strip() not in ARG_DTYPES:
            raise ValueError(f"--args: unknown dtype {dtype.strip()!r} in {text!r}; known: "
                             f"{', '.join(ARG_DTYPES)}")
        try:
            dims = tuple(int(d) for d in shape.split(",")) if shape.strip() else ()
        except ValueError:
            dims = (-1,)
        if any(d < 1 for d in dims):
            raise ValueError(f"--args: bad shape [{shape}] in {text!r} (positive ints)")
        specs.append(jax.ShapeDtypeStruct(dims, jnp.dtype(ARG_DTYPES[dtype.strip()])))
    return specs


def _in_shape_arg(text: str) -> tuple[int, ...]:
    try:
        return parse_in_shape(text)
    except ValueError as e:  # argparse shows this message (exit 2)
        raise argparse.ArgumentTypeError(str(e)) from None


def add_parser(p: argparse.ArgumentParser) -> None:
    what = p.add_mutually_exclusive_group()
    what.add_argument("--preset", choices=PRESETS, default=None,
                      help="network to check (default: mixed, unless another choice is given)")
    what.add_argument("--sizes", help="layer widths, e.g. 4,16,8,3 (instead of a preset)")
    what.add_argument("--layer", metavar="MODULE:NAME",
                      help="check your own layer: a Layer, or a function of no arguments "
                           "returning one, from a module (my_layers:Scale) or a file "
                           "(path/to/file.py:Scale); needs --in-shape")
    what.add_argument("--model", metavar="MODULE:NAME|TEXT",
                      help="check your own model layer by layer, then end to end (as --layer), "
                           "or an architecture text such as 'dense(8)-tanh-dense(1)' (with "
                           "--in-shape)")
    what.add_argument("--function", metavar="MODULE:NAME",
                      help="check a JAX function's gradient rule (jax.custom_vjp: reverse mode, "
                           "jax.custom_jvp: forward mode) at random arguments; needs --args")
    p.add_argument("--args", metavar="SPEC", default=None,
                   help='--function\'s arguments as dtype[shape], e.g. "f32[8,16],f32[16]" '
                        f"(dtypes: {', '.join(ARG_DTYPES)})")
    given = p.add_mutually_exclusive_group()
    given.add_argument("--input-scale", type=float, default=None, metavar="S",
                       help="also check at inputs drawn from N(0, S^2)")
    given.add_argument("--input-range", default=None, metavar="LO,HI",
                       help="also check at inputs drawn uniformly from [LO, HI]")
    given.add_argument("--inputs", default=None, metavar="FILE.npy",
                       help="also check at these inputs: (n, *in_shape)")
    p.add_argument("--in-shape", type=_in_shape_arg, default=None,
                   help="one example's shape for --layer/--model, e.g. 8 or 28,28,1")
    p.add_argument("--eval", action="store_true",
                   help="check the evaluation-mode backward (train=False; default: training)")
    p.add_argument("--activation", default=None,
                   help=f"hidden activation of a --sizes network (default "
                        f"{DEFAULT_ACTIVATION}), or one per hidden layer: a,b,c "
                        f"(known: {', '.join(ACTIVATIONS)})")
    p.add_argument("--output-activation", default=None,
                   help=f"output activation of a --sizes network (default "
                        f"{DEFAULT_OUTPUT_ACTIVATION})")
    p.add_argument("--loss", default=None,
                   help=f"loss (known: {', '.join(LOSSES)}; default: the preset's, else mse; "
                        "not with --layer)")
    p.add_argument("--batch", type=int, default=DEFAULT_BATCH,
                   help=f"examples in the batch (default {DEFAULT_BATCH}, as jp.check_layer; "
                        "--preset xor uses its 4 points)")
    p.add_argument("--seed", type=int, default=0, help="random seed for params and data")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--order", type=int, choices=(1, 2), default=1,
                   help="2: also check second derivatives through every backward and the "
                        "loss's Hessian-vector products (not with --layer)")
    add_import_option(p)
    p.add_argument("--max-fd-coords", type=int, default=None,
                   help="end to end, finite differences on at most this many random "
                        f"coordinates per leaf (default {MAX_FD_COORDS}; not with --layer)")


# --------------------------------------------------------------------------------------------
# Loading user code


def load_object(text: str, option: str):
    """The object ``NAME`` of ``MODULE:NAME`` or ``path/to/file.py:NAME``; ``ValueError`` for
    a missing file, module or attribute, or a module that fails to import."""
    source, _, name = text.rpartition(":")
    if not source or not name.isidentifier():
        raise ValueError(f"{option} must be MODULE:NAME or path/to/file.py:NAME, got {text!r}")
    try:
        module = import_source(source, option)
    except ValueError as e:
        if isinstance(e.__cause__, SystemExit):  # the user's module ended the process's work
            raise ValueError(f"{e}; nothing was checked") from None
        raise
    if not hasattr(module, name):
        found = sorted(k for k, v in vars(module).items()
                       if not k.startswith("_") and (isinstance(v, Layer) or inspect.isfunction(v)))
        hint = f"; it has: {', '.join(found)}" if found else ""
        raise ValueError(f"{option}: {source} has no attribute {name!r}{hint}")
    return getattr(module, name)


def as_layer(obj, text: str, option: str) -> Layer:
    """``obj`` if it is a Layer, else what calling it with no arguments returns, if a Layer."""
    if isinstance(obj, Layer):
        return obj
    if callable(obj):
        try:
            required = [p.name for p in inspect.signature(obj).parameters.values()
                        if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY,
                                                               p.POSITIONAL_OR_KEYWORD,
                                                               p.KEYWORD_ONLY)]
        except (TypeError, ValueError):
            required = []
        if required:
            raise ValueError(f"{option}: {text} takes arguments ({', '.join(required)}); give a "
                             "Layer or a function of no arguments that returns one")
        try:
            made = obj()
        except Exception as e:  # noqa: BLE001 - the user's code: one line, exit 2
            raise ValueError(f"{option}: calling {text}() failed: {type(e).__name__}: {e}") \
                from e
        if isinstance(made, Layer):
            return made
        raise ValueError(f"{option}: {text}() returned an object of type "
                         f"{type(made).__name__}, not a jaxprop Layer")
    raise ValueError(f"{option}: {text} is not a jaxprop Layer or a function returning one "
                     f"(it is of type {type(obj).__name__})")


# --------------------------------------------------------------------------------------------
# Running


def build(args) -> tuple[Model, str, tuple | None]:
    """The model, loss name and the preset's own data (``(x, t)``, or ``None``: random data
    that suits the loss) that ``args`` describe (a preset, ``--sizes`` or ``--model``)."""
    dtype = jnp.dtype(args.dtype)
    data = None
    if args.model is not None and ":" not in args.model:  # an architecture text
        if args.in_shape is None:
            raise ValueError(f"--model {args.model!r} is an architecture text: give --in-shape")
        model, loss_name = parse_model(args.model, args.in_shape), args.loss or "mse"
    elif args.model is not None:
        layer = as_layer(load_object(args.model, "--model"), args.model, "--model")
        shape = args.in_shape or getattr(layer, "in_shape", None)
        if shape is None:
            raise ValueError(f"--model {args.model} has no input shape: give --in-shape")
        model = layer if isinstance(layer, Model) else serial(layer, in_shape=shape)
        loss_name = args.loss or "mse"
    elif args.sizes is not None:
        activation = args.activation or DEFAULT_ACTIVATION
        acts = activation.split(",") if "," in activation else activation
        model = mlp(list(_sizes(args.sizes)), acts,
                    args.output_activation or DEFAULT_OUTPUT_ACTIVATION, dtype=dtype)
        loss_name = args.loss or "mse"
    else:
        model, loss_name, data = preset(args.preset or "mixed", dtype)
        loss_name = args.loss or loss_name
    loss_name = get_loss(loss_name).name  # unknown name -> ValueError
    check_output_fits_loss(model, loss_name)
    return model, loss_name, data


# options that --layer / --model do not use: (option, why), refused when given
_NOT_WITH_LAYER = (
    ("activation", "it describes a --sizes network"),
    ("output_activation", "it describes a --sizes network"),
    ("loss", "a layer is checked alone, without a loss (check it in a --model for that)"),
    ("max_fd_coords", "it samples the end-to-end check, which a layer alone does not have"),
)
_NOT_WITH_MODEL = _NOT_WITH_LAYER[:2]


def _check_options(args) -> None:
    """Bad or unused options: one ``ValueError`` (exit 2)."""
    if args.batch < 1:
        raise ValueError(f"--batch must be >= 1, got {args.batch}")
    if args.max_fd_coords is not None and args.max_fd_coords < 1:
        raise ValueError(f"--max-fd-coords must be >= 1, got {args.max_fd_coords}")
    if args.order == 2 and args.layer is not None:
        raise ValueError("--order 2 checks a model's second derivatives; not with --layer "
                         "(give --model)")
    if args.in_shape is not None and args.layer is None and args.model is None:
        raise ValueError("--in-shape goes with --layer or --model")
    if (args.args is None) != (args.function is None):
        raise ValueError("--function needs --args (e.g. \"f32[8,16],f32[16]\")" if
                         args.args is None else "--args goes with --function")
    if args.function is not None:
        for name in ("in_shape", "activation", "output_activation", "loss", "input_scale",
                     "input_range", "inputs"):
            if getattr(args, name) not in (None, False):
                raise ValueError(f"--{name.replace('_', '-')} does not go with --function "
                                 "(--args gives its arguments)")
        if args.eval:
            raise ValueError("--eval does not go with --function")
        if args.order == 2:
            raise ValueError("--order 2 checks a model's second derivatives; not with "
                             "--function (give --model)")
    mode, unused = (("--layer", _NOT_WITH_LAYER) if args.layer is not None else
                    ("--model", _NOT_WITH_MODEL) if args.model is not None else (None, ()))
    for name, why in unused:
        if getattr(args, name) is not None:
            raise ValueError(f"--{name.replace('_', '-')} does not go with {mode}: {why}")


def user_inputs(args):
    """The inputs ``--input-scale``/``--input-range``/``--inputs`` ask for (``check_layer``'s
    ``inputs=``), or ``None``; ``ValueError`` (exit 2) for a bad value or file."""
    if args.input_scale is not None:
        input_draw(args.input_scale)  # checked now: exit 2
        return args.input_scale
    if args.input_range is not None:
        try:
            lo, hi = (float(v) for v in args.input_range.split(","))
        except ValueError:
            raise ValueError(f"--input-range must be LO,HI like -8,-4, got "
                             f"{args.input_range!r}") from None
        if not lo < hi:
            raise ValueError(f"--input-range must have LO < HI, got {args.input_range!r}")
        return (lo, hi)
    if args.inputs is not None:
        return read_npy(args.inputs)
    return None


def run(args) -> int:
    import_modules(args)
    _check_options(args)
    if args.function is not None:
        return run_function(args)
    if args.layer is not None:
        return run_layer(args)
    with jax.enable_x64(args.dtype == "float64" or jax.config.jax_enable_x64):
        model, loss_name, data = build(args)
        dtype = jnp.dtype(args.dtype)
        in_shape = args.in_shape or model.in_shape
        k_params, k_data = jax.random.split(jax.random.key(args.seed))
        if data is None:  # before anything is initialised or drawn
            check_fits(model, tuple(in_shape), args.batch)
        params, state, out_shape = model.init(k_params, in_shape)
        inputs = user_inputs(args)
        if inputs is not None and data is not None:
            raise ValueError("--input-scale/--input-range/--inputs do not go with --preset xor "
                             "(it checks at its own 4 points)")
        if inputs is not None and model.integer_inputs:
            raise ValueError("--input-scale/--input-range/--inputs draw float inputs, but this "
                             "model takes token ids: leave them out (ids are drawn uniformly)")
        batch = args.batch if not hasattr(inputs, "shape") else int(inputs.shape[0])
        x, t = data or make_data(k_data, loss_name, in_shape, out_shape, batch, dtype,
                                 integer_inputs=model.integer_inputs)
        if inputs is not None:  # the model's inputs from the user's draw
            rng = np.random.default_rng(args.seed)
            x = draw_inputs(input_draw(inputs), rng, batch, tuple(in_shape)).astype(dtype)
        report = check_gradients(
            model, loss_name, params, x, t, state=state, train=not args.eval, dtype=dtype,
            max_fd_coords=MAX_FD_COORDS if args.max_fd_coords is None else args.max_fd_coords,
            seed=args.seed, order=args.order,
        )
    title = f"{model.describe()}  |  loss {loss_name}  |  batch {x.shape[0]}"
    if args.order == 2:
        print_report(report.first, title)
        print(report.second.by_place())  # every comparison: print(report.second) in Python
    else:
        print_report(report, title)
    return 0 if report.ok else 1


def run_layer(args) -> int:
    """``--layer``: :func:`~jaxprop.tools.gradcheck.check_layer` and its table."""
    if args.in_shape is None:
        raise ValueError("--layer needs --in-shape (one example's shape, e.g. 8 or 28,28,1)")
    layer = as_layer(load_object(args.layer, "--layer"), args.layer, "--layer")
    report = check_layer(layer, args.in_shape, batch=args.batch, key=jax.random.key(args.seed),
                         dtype=jnp.dtype(args.dtype), train=not args.eval,
                         inputs=user_inputs(args))
    mode = "evaluation" if args.eval else "training"
    print_layer_report(report, f"{layer.name}  |  in shape {args.in_shape}  |  batch "
                               f"{args.batch}  |  {mode}  |  {args.dtype}")
    return 0 if report.ok else 1


def run_function(args) -> int:
    """``--function``: :func:`~jaxprop.check_vjp` (``check_jvp`` for a ``jax.custom_jvp``)."""
    specs = parse_arg_specs(args.args)
    fn = load_object(args.function, "--function")
    if not callable(fn) or isinstance(fn, Layer):
        raise ValueError(f"--function: {args.function} is not a function (it is of type "
                         f"{type(fn).__name__}; check a layer with --layer)")
    check = check_jvp if isinstance(fn, jax.custom_jvp) else check_vjp
    f64 = any(s.dtype == jnp.float64 for s in specs)
    with jax.enable_x64(f64 or jax.config.jax_enable_x64):
        report = check(fn, *specs, seed=args.seed, max_fd_coords=args.max_fd_coords or
                       MAX_FD_COORDS_FUNCTION)
    console = _console()
    console.print(report.verdict(), style="green" if report.ok else "bold red",
                  highlight=False, soft_wrap=True)
    console.print(report.details(), highlight=False, soft_wrap=True)
    return 0 if report.ok else 1


# --------------------------------------------------------------------------------------------
# Printing


def _console():
    from rich.console import Console

    console = Console()
    if not console.is_terminal:  # piped or captured: don't squeeze the table into 80 columns
        console = Console(width=150)
    return console


def _rich_table(header, rows):
    from rich.table import Table

    table = Table()
    for i, name in enumerate(header):
        table.add_column(name, no_wrap=True, justify="right" if name == "error" else
                         "center" if name == "ok" else "left")
    for row in rows:
        table.add_row(*row[:-1], "[green]yes[/green]" if row[-1] == "yes" else
                      "[bold red]NO[/bold red]")
    return table


def _print_verdict_and_details(console, report) -> None:
    console.print(ERROR_LEGEND, style="dim", highlight=False, soft_wrap=True)
    console.print(report.verdict(), style="green" if report.ok else "bold red", highlight=False,
                  soft_wrap=True)
    console.print(report.details(), highlight=False, soft_wrap=True)


def print_layer_report(report: LayerReport, title: str) -> None:
    console = _console()
    console.print(title, highlight=False, soft_wrap=True)
    console.print(_rich_table(*quantity_rows(report.layers)))
    _print_verdict_and_details(console, report)


def print_report(report: GradCheckReport, title: str) -> None:
    console = _console()
    if report.layers:
        console.print(f"{title}  |  every layer's backward", highlight=False, soft_wrap=True)
        console.print(_rich_table(*layer_rows(report.layers)))
    if report.leaves:
        console.print(f"{title}  |  end to end", highlight=False, soft_wrap=True)
        console.print(_rich_table(*leaf_rows(report)))
    _print_verdict_and_details(console, report)
