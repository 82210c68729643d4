"""A model's summary, as Keras's ``model.summary()`` or torchinfo give it: one row per layer
(nested layers indented under their block) with its output shape, parameters, forward FLOPs and
state, and the totals.

Nothing is run and no array is allocated: shapes come from ``jax.eval_shape`` of each layer's
``init`` and from tracing its ``forward`` on abstract arguments; FLOPs are XLA's own count
(``cost_analysis`` of the lowered, uncompiled forward pass, evaluation mode) for one example.
A layer's sublayers are taken to run in order on its input (``serial``'s layers, ``Residual``'s
block): each row's input shape is the output shape of the row before it at the same depth.

In ``jaxprop.core`` (and not next to :func:`jaxprop.train.compile.forward_flops`) so that
``Layer.summary`` can call it: core never imports ``train``.
"""

from __future__ import annotations

import dataclasses
import io
import math

import jax
import jax.numpy as jnp

from jaxprop.core.layers import Layer
from jaxprop.core.network import Model
from jaxprop.core.validate import is_int

# The FLOPs of a training step (forward, backward to the inputs, backward to the weights) are
# about this many times the forward pass's (jaxprop.train.compile.step_flops uses the same).
STEP_PER_FORWARD = 3
COLUMNS = ("layer", "output_shape", "params", "flops", "state")


@dataclasses.dataclass(frozen=True)
class Summary:
    """A model's summary: the rows and the totals; ``print`` it, or read its numbers.

    Attributes:
      rows: one dict per layer, in order, nested layers right after their block:
        ``layer`` (its name), ``depth`` (0 at the top; a block's layers one deeper),
        ``output_shape`` (one example's), ``params`` and ``state`` (counts of values),
        ``flops`` (XLA's count of the forward pass for one example; ``None`` if XLA gives none).
      in_shape: one example's input shape.
      params: the parameter count (the rows at depth 0, summed).
      param_bytes: the parameters' bytes, each in its own dtype.
      dtypes: the dtypes of the parameters (names).
      state: the state's count (BatchNorm's running averages).
      flops: the forward pass's FLOPs for one example (a training step's: about 3x).
    """

    rows: list[dict]
    in_shape: tuple[int, ...]
    params: int
    param_bytes: int
    dtypes: tuple[str, ...]
    state: int
    flops: float | None

    def __rich__(self):
        """A ``rich`` table, the totals in its last row, and what the numbers mean under it."""
        from rich import box
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        table = Table(box=box.HORIZONTALS, pad_edge=False)
        table.add_column("Layer", overflow="fold")
        table.add_column("Output shape", overflow="fold")
        for name in ("Params", "FLOPs", "State"):
            table.add_column(name, justify="right", no_wrap=True)
        for row in self.rows:
            table.add_row("  " * row["depth"] + row["layer"], _shape(row["output_shape"]),
                          f"{row['params']:,}", _si(row["flops"]), f"{row['state']:,}")
        table.add_section()
        table.add_row("Total", "", f"{self.params:,}", _si(self.flops), f"{self.state:,}",
                      style="bold")
        return Group(table, Text(self.notes()))

    def __str__(self) -> str:
        """The table as plain text, at most 80 columns wide."""
        from rich.console import Console

        out = io.StringIO()
        Console(file=out, width=80, color_system=None, force_terminal=False).print(self)
        return "\n".join(line.rstrip() for line in out.getvalue().splitlines()).strip("\n")

    def notes(self) -> str:
        """What the table's totals and FLOPs mean, in words."""
        dtypes = "/".join(self.dtypes) or "none"
        step = "" if self.flops is None else f": {_si(STEP_PER_FORWARD * self.flops)}"
        return (f"Input {_shape(self.in_shape)} per example. Parameters: {self.params:,} "
                f"({_bytes(self.param_bytes)}, {dtypes}); state: {self.state:,}.\n"
                "FLOPs: XLA's count of the forward pass for one example (evaluation mode); "
                f"a training step (forward and backward) takes about {STEP_PER_FORWARD}x"
                f"{step}.")


def summarize(layer: Layer, in_shape=None) -> Summary:
    """The :class:`Summary` of ``layer`` (a model, or any layer) for inputs of ``in_shape``.

    Shapes: ``in_shape`` is one example's (``(8, 8, 1)`` for a digits image); default the
    model's own ``in_shape``.
    """
    if not isinstance(layer, Layer):
        raise ValueError(f"summary: takes a Layer or Model, got {type(layer).__name__}")
    shape = getattr(layer, "in_shape", None) if in_shape is None else in_shape
    if shape is None:
        raise ValueError("summary: this layer has no input shape: pass in_shape, e.g. (8, 8, 1)")
    if isinstance(shape, (str, bytes)) or not hasattr(shape, "__iter__") or not tuple(shape) \
            or any(not is_int(d) or d < 1 for d in shape):
        raise ValueError(f"summary: in_shape must be a tuple of positive ints, got {shape!r}")
    shape = tuple(int(d) for d in shape)
    params, state = _init_shapes(layer, shape)
    floats = [leaf.dtype for leaf in jax.tree.leaves(params)
              if jnp.issubdtype(leaf.dtype, jnp.floating)]
    x_dtype = floats[0] if floats else jnp.float32  # the inputs': the params' (first) dtype
    if _transparent(layer):
        rows = _rows(layer, shape, x_dtype, depth=0)
    else:
        rows = [_Stats.of(layer, shape, x_dtype).row(layer, 0)] + _rows(layer, shape, x_dtype, 1)
    top = [row["flops"] for row in rows if row["depth"] == 0]
    leaves = jax.tree.leaves(params)
    return Summary(rows, shape, _count(params),
                   sum(math.prod(leaf.shape) * leaf.dtype.itemsize for leaf in leaves),
                   tuple(sorted({leaf.dtype.name for leaf in leaves})), _count(state),
                   None if None in top else float(sum(top)))


def _init_shapes(layer: Layer, in_shape: tuple[int, ...]):
    """``(params, state)`` of ``layer`` for ``in_shape``, as ``jax.ShapeDtypeStruct``s."""
    return jax.eval_shape(lambda k: layer.init(k, in_shape)[:2], jax.random.key(0))


@dataclasses.dataclass(frozen=True)
class _Stats:
    """One layer's parameter and state counts, output shape and forward FLOPs."""

    n_params: int
    n_state: int
    out_shape: tuple[int, ...]
    flops: float | None

    @classmethod
    def of(cls, layer: Layer, in_shape: tuple[int, ...], x_dtype) -> "_Stats":
        params, state = _init_shapes(layer, in_shape)
        x = jax.ShapeDtypeStruct((1, *in_shape), jnp.int32 if layer.integer_inputs else x_dtype)
        traced = jax.jit(lambda p, s, x: layer.forward(p, s, x, train=False)[0]).trace(
            params, state, x)
        cost = traced.lower().cost_analysis()  # {} for a program without operations
        flops = None if cost is None else cost.get("flops", 0.0)
        return cls(_count(params), _count(state), tuple(traced.out_info.shape[1:]),
                   None if flops is None else float(flops))

    def row(self, layer: Layer, depth: int) -> dict:
        return {"layer": _label(layer), "depth": depth, "output_shape": self.out_shape,
                "params": self.n_params, "flops": self.flops, "state": self.n_state}


def _rows(layer: Layer, in_shape: tuple[int, ...], x_dtype, depth: int) -> list[dict]:
    """The rows of ``layer``'s sublayers (and theirs, one deeper), run in order from
    ``in_shape``."""
    rows = []
    for sub in layer.sublayers:
        if _transparent(sub, parent=layer):  # the only sublayer: no shape to thread on
            rows += _rows(sub, in_shape, x_dtype, depth)
            continue
        stats = _Stats.of(sub, in_shape, x_dtype)
        rows += [stats.row(sub, depth)] + _rows(sub, in_shape, x_dtype, depth + 1)
        in_shape = stats.out_shape
    return rows


def _transparent(layer: Layer, parent: Layer | None = None) -> bool:
    """A ``serial`` shown as its layers alone: the model summarised, or a block's only
    sublayer (``Residual(serial(...))``: its row would repeat the block's)."""
    return isinstance(layer, Model) and (parent is None or len(parent.sublayers) == 1)


def _label(layer: Layer) -> str:
    """The layer's name; for a block, with its sublayers' names (listed under it) elided."""
    if isinstance(layer, Model):  # a Repeat of 4 copies is named "4 x (block)": "4 x (…)"
        n = len(layer.sublayers)  # (a serial whose first layer is a Repeat is not one)
        repeat = n and layer.name == f"{n} x ({layer.sublayers[0].name})"
        return f"{n} x (…)" if repeat else "serial"
    name = layer.name
    for sub in layer.sublayers:
        name = name.replace(sub.name, "…")
    return name


def _count(tree) -> int:
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(tree))


def _shape(shape) -> str:
    return "(" + ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "") + ")"


def _si(value: float | None) -> str:
    """``16_826_378.0 -> "16.8M"``; exact below 10,000; ``"?"`` when unknown."""
    if value is None:
        return "?"
    if value < 10_000:
        return f"{value:,.0f}"
    for unit, size in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= size:
            return f"{value / size:.3g}{unit}"
    return f"{value:.0f}"


def _bytes(n: int) -> str:
    """``70_338_600 -> "67.1 MiB"``."""
    for unit, size in (("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"
