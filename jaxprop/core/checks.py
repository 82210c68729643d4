"""Input checks shared by every entry point: params, data arrays that suit them, outputs that
suit the loss."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxprop.core.cache import remember


def params_dtype(params):
    """The floating dtype of ``params`` (``None`` for a model without params).

    Raises ``ValueError`` naming the first leaf that is not a floating-point array.
    """
    dtypes = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        dtype = leaf.dtype if hasattr(leaf, "dtype") else jnp.result_type(leaf)
        if not jnp.issubdtype(dtype, jnp.floating):
            raise ValueError(
                f"params{jax.tree_util.keystr(path)} has dtype {dtype}; parameters must be "
                "floating point (initialise them with model.init, or cast with "
                ".astype(jnp.float32))"
            )
        dtypes.append(dtype)
    return jnp.result_type(*dtypes) if dtypes else None


def _check_finite(name, a):
    if isinstance(a, jax.core.Tracer):
        return
    bad = ~np.isfinite(np.asarray(a))
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"{name} contains {int(bad.sum())} NaN/Inf value(s) (first at index {idx}, "
            f"shape {tuple(a.shape)})"
        )


def _floating(name, a, want, check_finite):
    """``a`` as a floating array of dtype ``want``: other float dtypes are cast (NumPy or JAX
    alike, as Flax and Keras do); integers, objects and empty arrays are refused."""
    if not isinstance(a, jax.Array):
        a = np.asarray(a)
        if a.dtype == object:
            raise ValueError(f"{name} is not a numeric array (ragged or mixed types?)")
    if not jnp.issubdtype(a.dtype, jnp.floating):
        raise ValueError(
            f"{name} has dtype {a.dtype}; inputs and targets must be floating point "
            f"(cast with .astype({want or 'float32'}))"
        )
    if want is not None and a.dtype != want:
        a = a.astype(want)  # data follows the params' precision
    if check_finite:
        _check_finite(name, a)
    return _to_device(a)


def _labels(a, check_finite):
    """Integer class labels as int32 (whole-number floats are accepted)."""
    if isinstance(a, jax.core.Tracer):
        if not jnp.issubdtype(a.dtype, jnp.integer):
            raise ValueError(f"t has dtype {a.dtype}; class labels must be integers 0..k-1")
        return a.astype(jnp.int32)
    host = np.asarray(a)
    if jnp.issubdtype(host.dtype, jnp.floating):
        if check_finite:
            _check_finite("t", host)
        if not np.all(host == np.round(host)):
            raise ValueError("t holds class labels but has fractional values; labels are "
                             "integers 0..k-1 (one per example)")
    elif not jnp.issubdtype(host.dtype, jnp.integer):
        raise ValueError(f"t has dtype {host.dtype}; class labels must be integers 0..k-1")
    low = int(host.min()) if host.size else 0
    if low < 0:
        raise ValueError(f"t holds a negative class label ({low}); labels are integers 0..k-1")
    high = int(host.max()) if host.size else 0
    if high > np.iinfo(np.int32).max:  # it would wrap as int32
        raise ValueError(f"t holds class label {high}, more than any model has outputs "
                         "(labels are integers 0..k-1)")
    if isinstance(a, jax.Array) and a.dtype == jnp.int32:
        return a
    return _to_device(host.astype(np.int32))  # (jnp.asarray would compile a program per shape)


def _ids(a, vocab: int, where: str):
    """Integer ids ``0..vocab-1`` as int32 (the inputs of a model that starts with an
    Embedding); floats are refused, and concrete ids outside the range too."""
    if not isinstance(a, jax.Array):
        a = np.asarray(a)
    if not jnp.issubdtype(a.dtype, jnp.integer):
        raise ValueError(f"x has dtype {a.dtype} but {where} takes integer token ids "
                         f"0..{vocab - 1}")
    if isinstance(a, jax.core.Tracer):
        return a.astype(jnp.int32)
    host = np.asarray(a)
    low, high = (int(host.min()), int(host.max())) if host.size else (0, 0)
    if low < 0 or high >= vocab:
        raise ValueError(f"x holds token id {low if low < 0 else high} but {where} takes ids "
                         f"0..{vocab - 1}")
    if isinstance(a, jax.Array) and a.dtype == jnp.int32:
        return a
    return _to_device(host.astype(np.int32))


def validate_data(params, x, t=None, *, check_finite: bool = True, loss=None, model=None):
    """Check ``x`` (and ``t``) suit ``params``: floating arrays, cast to the params' dtype.

    Not empty, finite when concrete. With a ``loss`` on integer labels
    (``loss.integer_labels``), ``t`` must hold integer class labels instead (returned as
    int32). With a ``model`` on integer ids (``model.integer_inputs``: it starts with an
    Embedding), ``x`` must hold integer ids in ``0..integer_inputs-1`` instead (returned as
    int32). Raises ``ValueError`` naming the problem (also for params that are not floating
    point).

    Args:
      params: the model's params; their floating dtype is the one ``x`` and ``t`` get.
      x: the inputs (at least one example).
      t: the targets, or ``None`` to check ``x`` alone.
      check_finite: check concrete (not traced) arrays for NaN/Inf.
      loss: a loss name or :class:`~jaxprop.Loss`, or ``None``; only whether it takes integer
        labels matters.
      model: the model, or ``None``; only whether it takes integer ids matters.

    Returns:
      JAX arrays: ``x`` when ``t`` is ``None``, else ``(x, t)``.
    """
    from jaxprop.core.losses import get_loss

    want = params_dtype(params)
    vocab = getattr(model, "integer_inputs", None)
    if vocab:
        x = _ids(x, vocab, f"the model's first layer ({_first_layer_name(model)})")
    else:
        x = _floating("x", x, want, check_finite)
    if x.size == 0:
        raise ValueError(f"x is empty (shape {tuple(x.shape)}): a batch needs at least one "
                         "example")
    if t is None:
        return x
    if loss is not None and get_loss(loss).integer_labels:
        return x, _labels(t, check_finite)
    return x, _floating("t", t, want, check_finite)


def check_labels_fit(model, params, state, x, t) -> None:
    """Raise ``ValueError`` when concrete integer labels ``t`` reach the model's number of outputs.

    The number of outputs is found by tracing ``model.forward`` (evaluation mode) on the
    shapes, no computation. Traced or empty ``t`` is not checked.

    Args:
      model: the model (any Layer).
      params: its params.
      state: its state.
      x: the inputs, ``(batch, *in_shape)``.
      t: the integer class labels, ``(batch,)``.

    Returns:
      ``None`` when every label fits (or ``t`` is not checked).
    """
    if isinstance(t, jax.core.Tracer) or not np.size(t):
        return
    leaves, treedef = jax.tree.flatten((params, state, x))
    num_outputs = _num_outputs(model, treedef, tuple((np.shape(a), jnp.result_type(a))
                                                     for a in leaves))
    top = int(np.max(np.asarray(t)))
    if top >= num_outputs:
        raise ValueError(f"t holds class label {top} but the model has {num_outputs} outputs "
                         f"(labels must be 0..{num_outputs - 1})")


@remember(maxsize=64)
def _num_outputs(model, treedef, shapes) -> int:
    """The size of the model's output axis for params, state and inputs of these shapes (an
    abstract trace of ``forward``, remembered: ``value_and_grad`` checks every call's labels)."""
    params, state, x = jax.tree.unflatten(
        treedef, [jax.ShapeDtypeStruct(shape, dtype) for shape, dtype in shapes])
    y = jax.eval_shape(lambda p, s, x: model.forward(p, s, x, train=False)[0], params, state, x)
    return y.shape[-1] if y.ndim else 1


def _to_device(a):
    """``a`` as a JAX array; a host array goes by ``device_put`` (``jnp.asarray`` compiles a
    small program per shape: 20-70 ms of a first ``fit``)."""
    if isinstance(a, jax.Array):
        return a
    if isinstance(a, np.ndarray) and a.dtype == jax.dtypes.canonicalize_dtype(a.dtype):
        return jax.device_put(a)
    return jnp.asarray(a)


def _first_layer_name(model) -> str:
    """The name of the innermost first layer of ``model`` (the one that takes its inputs)."""
    while getattr(model, "sublayers", ()):
        model = model.sublayers[0]
    return model.name


def _output_layer_name(model) -> str:
    """The name of the layer that makes the model's outputs (the model's own for one layer)."""
    return model.sublayers[-1].name if getattr(model, "sublayers", ()) else model.name


def require_model(model, who: str) -> None:
    """``ValueError`` unless ``model`` is a layer or model (a name or a spec text is not)."""
    if callable(getattr(model, "forward", None)) and callable(getattr(model, "backward", None)):
        return
    hint = (f"; build it first, e.g. jp.parse_model({model!r}, in_shape) or jp.mlp([...])"
            if isinstance(model, str) else "")
    raise ValueError(f"{who} takes a model (a jaxprop Layer: jp.mlp, jp.serial, "
                     f"jp.parse_model), got {type(model).__name__}{hint}")


def check_output_fits_loss(model, loss) -> None:
    """Raise ``ValueError`` when the model's outputs cannot be what ``loss`` expects: a loss on
    probabilities (``input_range``) after an output that leaves that range, or a loss on logits
    after a bounded output activation (a sigmoid or softmax applied twice); or when ``model``
    is no model at all."""
    from jaxprop.core.losses import get_loss

    require_model(model, "training")
    loss = get_loss(loss)
    out = getattr(model, "output_range", None)
    last = _output_layer_name(model)
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


def warn_if_targets_outside_output(model, loss, t) -> None:
    """Warn when concrete targets ``t`` do not suit the loss (outside its ``target_range``;
    rows of a categorical loss's targets that do not sum to 1) or lie outside the range the
    model's output layer can give (``output_range``): a sigmoid output behind targets in
    [-1, 1] can never fit them."""
    import warnings

    from jaxprop.core.losses import get_loss

    loss = get_loss(loss)
    if loss.integer_labels or isinstance(t, jax.core.Tracer) or not np.size(t):
        return
    host = np.asarray(t)
    lo, hi = float(np.min(host)), float(np.max(host))
    if loss.target_range is not None and (lo < loss.target_range[0]
                                          or hi > loss.target_range[1]):
        warnings.warn(
            f"the targets lie in [{lo:.4g}, {hi:.4g}] but {loss.name} takes targets in "
            f"[{loss.target_range[0]:g}, {loss.target_range[1]:g}] (probabilities); outside it "
            "the loss has no minimum at the target", UserWarning, stacklevel=3)
    elif loss.categorical and host.ndim and host.shape[-1] > 1:
        sums = host.sum(axis=-1).ravel()
        off = np.flatnonzero(np.abs(sums - 1) > 1e-3)
        if off.size:
            warnings.warn(
                f"{off.size} of {sums.size} target rows do not sum to 1 (row {int(off[0])} "
                f"sums to {float(sums[off[0]]):.4g}); "
                f"{loss.name} takes one distribution over the classes per row (one-hot "
                "labels)", UserWarning, stacklevel=3)
    out = getattr(model, "output_range", None)
    if out is None or loss.from_logits:
        return
    if lo < out[0] or hi > out[1]:
        last = _output_layer_name(model)
        warnings.warn(
            f"the targets lie in [{lo:.4g}, {hi:.4g}] but the output layer {last} only gives "
            f"values in [{out[0]:g}, {out[1]:g}]: the network cannot fit them (use an identity "
            "output for regression)", UserWarning, stacklevel=3)

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
    ``dx`` must be an array with the input's shape and dtype. A parameter-free layer may return
    ``None`` for ``dparams``. Raises :class:`BackwardError`.

    Args:
      where: the layer's label, named in the error.
      params: the layer's params.
      out: what ``backward`` returned.
      x_spec: the layer's input: anything with ``.shape`` and ``.dtype``; ``None`` skips the
        check of ``dx``, as does a non-floating input.
      dy: the cotangent given to ``backward`` (optional); it only sharpens the messages.

    Returns:
      ``(dparams, dx)``; a parameter-free layer's ``dparams`` is ``params`` itself.
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
        want = [jax.tree_util.keystr(p) or "the parameter" for p, _ in p_leaves]
        if dparams is None:
            raise BackwardError(where, f"dparams is None but the layer has parameters "
                                       f"{', '.join(want)}; return zeros where a parameter "
                                       "gets no gradient")
        try:
            got = [jax.tree_util.keystr(p) or "a leaf" for p, _ in
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
        name = f"dparams{jax.tree_util.keystr(path)}"
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
    """``layer.backward(params, residuals, dy)`` with its output checked.

    The check is :func:`check_backward_output`; an exception inside ``backward`` becomes a
    :class:`BackwardError` naming ``where``, and one from a nested model gets ``where`` in front.

    Args:
      layer: the :class:`~jaxprop.Layer` whose ``backward`` runs.
      where: the layer's label, named in errors.
      params: the layer's params.
      residuals: what its ``forward`` kept.
      dy: ``dL/dy``, the cotangent of its output.
      x_spec: the layer's input (anything with ``.shape`` and ``.dtype``), or ``None`` to skip
        the check of ``dx``.

    Returns:
      ``(dparams, dx)``, checked.
    """
    try:
        out = layer.backward(params, residuals, dy)
    except BackwardError as e:
        raise e.within(where) from None
    except Exception as e:  # noqa: BLE001 - any failure inside a user's backward
        raise BackwardError(where, f"backward raised {type(e).__name__}: {e}") from e
    return check_backward_output(where, params, out, x_spec, dy)
