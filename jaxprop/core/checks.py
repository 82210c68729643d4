"""Input checks shared by every entry point: data arrays that suit the params."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def _float_dtype(params):
    leaves = [leaf for leaf in jax.tree.leaves(params) if hasattr(leaf, "dtype")]
    return jnp.result_type(*leaves) if leaves else None


def validate_data(params, x, t=None, *, check_finite: bool = True):
    """Check ``x`` (and ``t``) are floating arrays of the params' dtype, finite when concrete.

    Returns them as JAX arrays. Raises ``ValueError`` naming the problem.
    """
    out = []
    want = _float_dtype(params)
    for name, a in (("x", x), ("t", t)):
        if a is None:
            continue
        if not isinstance(a, jax.Array):
            a = np.asarray(a)
            if a.dtype == object:
                raise ValueError(f"{name} is not a numeric array (ragged or mixed types?)")
            if np.issubdtype(a.dtype, np.floating) and want is not None:
                a = a.astype(want)  # host float data follows the params' precision
        if not jnp.issubdtype(a.dtype, jnp.floating):
            raise ValueError(
                f"{name} has dtype {a.dtype}; inputs and targets must be floating point "
                f"(cast with .astype({want or 'float32'}))"
            )
        if want is not None and a.dtype != want:
            raise ValueError(
                f"{name} has dtype {a.dtype} but the parameters are {want}; cast one to the other"
            )
        if check_finite and not isinstance(a, jax.core.Tracer):
            bad = ~np.isfinite(np.asarray(a))
            if bad.any():
                idx = tuple(int(i) for i in np.argwhere(bad)[0])
                raise ValueError(
                    f"{name} contains {int(bad.sum())} NaN/Inf value(s) (first at index {idx}, "
                    f"shape {tuple(a.shape)})"
                )
        out.append(jnp.asarray(a))
    return tuple(out) if t is not None else out[0]


def check_output_fits_loss(model, loss) -> None:
    """Raise ``ValueError`` when the model's outputs cannot be what ``loss`` expects: a loss on
    probabilities (``input_range``) after an output that leaves that range, or a loss on logits
    after a bounded output activation (a sigmoid or softmax applied twice)."""
    from jaxprop.core.losses import get_loss

    loss = get_loss(loss)
    out = getattr(model, "output_range", None)
    last = model.sublayers[-1].name if getattr(model, "sublayers", ()) else model.name
    if loss.input_range is not None:
        lo, hi = loss.input_range
        if out is None or out[0] < lo or out[1] > hi:
            what = "probabilities" if (lo, hi) == (0, 1) else f"predictions in [{lo:g}, {hi:g}]"
            raise ValueError(
                f"loss {loss.name} takes {what} but the output layer "
                f"{last} can give any value{'' if out is None else f' in [{out[0]:g}, {out[1]:g}]'}"
                f"; use a sigmoid output, or a loss on logits (bce_with_logits)")
    if loss.from_logits and out is not None:
        raise ValueError(
            f"loss {loss.name} takes logits (it applies the sigmoid/softmax itself) but the "
            f"output layer {last} is bounded to [{out[0]:g}, {out[1]:g}]; use an identity output")


# --------------------------------------------------------------------------------------------
# What a layer's backward returns: checked once, at trace time (shapes and dtypes are static
# under jit, so none of this costs anything at run time).


class BackwardError(ValueError):
    """A layer's ``backward`` returned something malformed (or raised); the message names the
    layer (``where``, e.g. ``"layer 3 (scale)"``) and the problem."""

    def __init__(self, where: str, problem: str):
        super().__init__(f"{where}: {problem}")
        self.where, self.problem = where, problem

    def within(self, where: str) -> "BackwardError":
        """The same error seen from an enclosing model: ``"layer 2 (block) > layer 1 (tanh)"``."""
        return BackwardError(f"{where} > {self.where}", self.problem)


def layer_label(index, name: str) -> str:
    """``"layer 3 (scale)"``: how errors and reports name a layer of a model."""
    return f"layer {index} ({name})"


def _key_text(path) -> str:
    parts = []
    for k in path:
        for attr in ("key", "idx", "name"):
            if hasattr(k, attr):
                parts.append(repr(getattr(k, attr)) if attr == "key" else str(getattr(k, attr)))
                break
        else:
            parts.append(str(k))
    return "[" + "][".join(parts) + "]" if parts else ""


def _describe(v) -> str:
    if v is None:
        return "None"
    if hasattr(v, "shape") and hasattr(v, "dtype"):
        return f"an array of shape {tuple(v.shape)} and dtype {jnp.dtype(v.dtype).name}"
    return f"a {type(v).__name__}"


def _is_array(v) -> bool:
    return hasattr(v, "shape") and hasattr(v, "dtype") and hasattr(v, "ndim")


def check_backward_output(where: str, params, out, x_spec=None, dy=None):
    """Check what ``backward(params, residuals, dy)`` returned and give ``(dparams, dx)``.

    ``dparams`` must have the pytree structure of ``params`` with each leaf's shape and dtype;
    ``dx`` must be an array with the input's shape and dtype (``x_spec``: anything with
    ``.shape`` and ``.dtype``; ``None`` skips that check, as does a non-floating input). A
    parameter-free layer may return ``None`` for ``dparams``. ``dy`` (optional) only sharpens
    the messages. Raises :class:`BackwardError`.
    """
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise BackwardError(where, f"backward must return a pair (dparams, dx), got "
                                   f"{_describe(out) if not isinstance(out, (tuple, list)) else f'{len(out)} values'}")
    dparams, dx = out
    p_leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    if not p_leaves and (dparams is None or not jax.tree.leaves(dparams)):
        dparams = params  # no parameters: (), None, {} all mean "no gradient"
    _check_dparams(where, params, dparams, dx, x_spec)
    _check_dx(where, dx, x_spec, dy)
    return dparams, dx


def _check_dparams(where, params, dparams, dx, x_spec):
    p_leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    swapped = (_is_array(dparams) and x_spec is not None and not _is_array(params)
               and tuple(dparams.shape) == tuple(x_spec.shape)
               and jax.tree.structure(dx) == jax.tree.structure(params))
    if swapped:
        raise BackwardError(where, "backward returned (dx, dparams); it must return "
                                   "(dparams, dx) in that order")
    if jax.tree.structure(dparams) != jax.tree.structure(params):
        want = [_key_text(p) or "the parameter" for p, _ in p_leaves]
        if dparams is None:
            raise BackwardError(where, f"dparams is None but the layer has parameters "
                                       f"{', '.join(want)}; return zeros where a parameter "
                                       "gets no gradient")
        try:
            got = [_key_text(p) or "a leaf" for p, _ in
                   jax.tree_util.tree_flatten_with_path(dparams)[0]]
        except Exception:  # noqa: BLE001 - not a pytree at all
            got = []
        detail = [f"missing {', '.join(m for m in want if m not in got)}"] \
            if set(want) - set(got) else []
        detail += [f"unexpected {', '.join(e for e in got if e not in want)}"] \
            if set(got) - set(want) else []
        raise BackwardError(
            where, f"dparams must have the structure of params {jax.tree.structure(params)}, "
                   f"got {jax.tree.structure(dparams)}" + (f" ({'; '.join(detail)})" if detail
                                                          else ""))
    for (path, p), g in zip(p_leaves, jax.tree.leaves(dparams)):
        name = f"dparams{_key_text(path)}"
        if not _is_array(p):
            continue
        if not _is_array(g):
            raise BackwardError(where, f"{name} is {_describe(g)}, not an array")
        if tuple(g.shape) != tuple(p.shape):
            raise BackwardError(where, f"{name} has shape {tuple(g.shape)} but the parameter "
                                       f"has shape {tuple(p.shape)}")
        if jnp.issubdtype(p.dtype, jnp.floating) and jnp.dtype(g.dtype) != jnp.dtype(p.dtype):
            raise BackwardError(where, f"{name} has dtype {jnp.dtype(g.dtype).name} but the "
                                       f"parameter is {jnp.dtype(p.dtype).name}")


def _check_dx(where, dx, x_spec, dy):
    if x_spec is None or not jnp.issubdtype(x_spec.dtype, jnp.floating):
        return
    shape, dtype = tuple(x_spec.shape), jnp.dtype(x_spec.dtype)
    if not _is_array(dx):
        raise BackwardError(where, f"dx is {_describe(dx)}; backward must return dL/dx, an "
                                   f"array of the input's shape {shape}")
    if tuple(dx.shape) != shape:
        hint = (" (the shape of dy: did backward return dy unchanged?)"
                if dy is not None and tuple(dy.shape) == tuple(dx.shape) else "")
        raise BackwardError(where, f"dx has shape {tuple(dx.shape)} but the layer's input has "
                                   f"shape {shape}{hint}")
    if jnp.dtype(dx.dtype) != dtype:
        raise BackwardError(where, f"dx has dtype {jnp.dtype(dx.dtype).name} but the layer's "
                                   f"input is {dtype.name}")


def checked_backward(layer, where: str, params, residuals, dy, x_spec=None):
    """``layer.backward(params, residuals, dy)`` with its output checked
    (:func:`check_backward_output`); an exception inside it becomes a :class:`BackwardError`
    naming ``where``, and one from a nested model gets ``where`` in front."""
    try:
        out = layer.backward(params, residuals, dy)
    except BackwardError as e:
        raise e.within(where) from None
    except Exception as e:  # noqa: BLE001 - any failure inside a user's backward
        raise BackwardError(where, f"backward raised {type(e).__name__}: {e}") from e
    return check_backward_output(where, params, out, x_spec, dy)
