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
        out.append(_to_device(a))
    return tuple(out) if t is not None else out[0]


def _to_device(a):
    """``a`` as a JAX array; a host array goes by ``device_put`` (``jnp.asarray`` compiles a
    small program per shape: 20-70 ms of a first ``fit``)."""
    if isinstance(a, jax.Array):
        return a
    if isinstance(a, np.ndarray) and a.dtype == jax.dtypes.canonicalize_dtype(a.dtype):
        return jax.device_put(a)
    return jnp.asarray(a)


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


def require_dtype(dtype, what: str) -> None:
    """Raise ``ValueError`` when ``dtype`` would silently become a narrower one here (float64
    without ``jax_enable_x64``); ``what`` names the layer or option that asked for it."""
    want = jnp.dtype(dtype)
    have = jax.dtypes.canonicalize_dtype(want)
    if have != want:
        raise ValueError(
            f"{what}: {want.name} needs jax_enable_x64 (without it JAX silently makes it "
            f"{have.name}); run jax.config.update('jax_enable_x64', True) at start-up, or "
            f"wrap the code in `with jax.enable_x64(True):`")

def output_shape(layer, in_shape) -> tuple[int, ...]:
    """The per-example output shape of ``layer`` for inputs of shape ``in_shape``, from its
    ``init`` traced abstractly (nothing is computed); the layers' own shape errors surface."""
    shapes = []

    def init(key):
        params, state, out = layer.init(key, tuple(in_shape))
        shapes.append(tuple(out))
        return params, state

    jax.eval_shape(init, jax.random.key(0))
    return shapes[0]
