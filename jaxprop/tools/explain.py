"""Explain gradient descent step by step on a small network given as a JSON spec.

A spec describes a user's own network, one example batch and the training settings::

    {"layers": [{"W": [[...], ...], "b": [...], "activation": "sigmoid"}, ...],
     "input": [[...]], "target": [[...]], "loss": "sse_half",
     "learning_rate": 0.5, "steps": 1, "update_biases": true}

``W`` is ``(in, out)``: row ``i`` holds the weights leaving input ``i`` (as :func:`jaxprop.Dense`).
Required: ``layers``, ``input``, ``target``, ``learning_rate``. Optional, with defaults:
``b`` zeros, ``activation`` ``"sigmoid"``, ``loss`` ``"sse_half"``, ``steps`` 1,
``update_biases`` true, ``description`` (free text). Unknown keys are errors (typos would
otherwise be ignored silently). ``input``/``target`` are ``(batch, width)``; a flat list is one row.
``steps`` is at most ``MAX_STEPS`` (every quantity of every step is kept); numbers must fit a
float64 and JSON may nest at most as deep as Python's parser allows.

:func:`explain` runs plain gradient descent (``p <- p - learning_rate * dL/dp``) in float64
with the library's own layers and hand-written backward pass (``Model.forward_trace`` and
``Model.backward_trace``; no autodiff) and returns, per step and per Dense layer, the
pre-activations ``z``, activations ``a``, their gradients ``dL/da``, deltas ``dL/dz``, ``dL/dW``, ``dL/db`` and the updated
``W``/``b``. Note the sign: ``delta`` here is ``dL/dz``; textbooks that write
``delta = (t - y) f'(z)`` for ``sse_half`` use the opposite sign (and ``W += lr * delta * a``).
"""

from __future__ import annotations

import json
import math
import os
import reprlib
from importlib import resources
from typing import Any, Callable, Mapping, NamedTuple

import numpy as np

from jaxprop.core.cache import remember
from jaxprop.core.registry import lookup
from jaxprop.core.validate import is_int, is_number

DEFAULT_ACTIVATION = "sigmoid"
# the entries of a Dense layer in each step of the trace, in order
TRACE_KEYS = ("z", "a", "da", "delta", "dadz", "dW", "db", "W_after", "b_after")
# explain keeps every quantity of every step (for tables and JSON): a worked example, not a run.
MAX_STEPS = 10_000
_repr = reprlib.Repr()  # values quoted in errors: short, even when nested 100,000 deep
_repr.maxlevel, _repr.maxlist, _repr.maxstring, _repr.maxlong = 2, 4, 40, 40
_short = _repr.repr


class LayerSpec(NamedTuple):
    """One Dense layer and its activation: ``W: (in, out)``, ``b: (out,)``, float64."""

    W: np.ndarray
    b: np.ndarray
    activation: str


class Spec(NamedTuple):
    """A validated spec: float64 NumPy arrays, ``input: (batch, in)``, ``target: (batch, out)``."""

    layers: tuple[LayerSpec, ...]
    input: np.ndarray
    target: np.ndarray
    loss: str
    learning_rate: float
    steps: int
    update_biases: bool
    description: str = ""


# --------------------------------------------------------------------------------------------
# Loading and validation


def load_spec(source: str | os.PathLike | Mapping | Spec) -> Spec:
    """A validated :class:`Spec` from a JSON file path or an already-parsed dict.

    Raises ``ValueError`` naming the problem (with the layer index and shapes where relevant)
    for an unreadable file, invalid JSON, missing/unknown keys, ragged or non-numeric arrays,
    shape mismatches, unknown activation/loss names, bad settings and NaN/Inf values.
    """
    if isinstance(source, Spec):
        return source
    if isinstance(source, Mapping):
        return _validate(source, where="spec")
    if not isinstance(source, (str, os.PathLike)):
        raise ValueError(
            f"a spec must be a JSON object (a dict) or a JSON file path, got {_kind(source)}"
        )
    path = os.fspath(source)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ValueError(f"cannot read spec file {path!r}: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"spec file {path!r} is not UTF-8 text: {e.reason}") from None
    return _validate(_parse_json(text, path), where=path)


def _parse_json(text: str, name: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(
            f"{name}: invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}"
        ) from None
    except ValueError as e:  # e.g. an integer literal longer than Python's digit limit
        raise ValueError(f"{name}: cannot read the JSON: {e}") from None
    except RecursionError:
        raise ValueError(f"{name}: the JSON is nested too deeply (a spec needs lists of rows "
                         "of numbers, two levels deep)") from None


def _validate(d: Any, where: str) -> Spec:
    """The :class:`Spec` in the parsed JSON ``d``: each key parsed by its :data:`SPEC_SCHEMA`
    field, then the shapes checked against each other."""
    fields = _parse_object(d, SPEC_SCHEMA, where)
    _check_shapes(fields["input"], fields["target"], fields["layers"])
    return Spec(**fields)


def _check_shapes(x: np.ndarray, t: np.ndarray, layers: tuple[LayerSpec, ...]) -> None:
    """One target row per input row, each layer's ``W`` as wide as what feeds it, and the
    target as wide as the last layer."""
    if x.shape[0] != t.shape[0]:
        raise ValueError(
            f"input has {x.shape[0]} row(s) (shape {x.shape}) but target has {t.shape[0]} "
            f"(shape {t.shape}); one target row per input row"
        )
    width, prev = x.shape[1], f"the input (shape {x.shape})"
    for i, ls in enumerate(layers):
        if ls.W.shape[0] != width:
            raise ValueError(
                f"layers[{i}].W has shape {ls.W.shape} but {prev} has width {width}; "
                f"W must have {width} row(s), one per input (W is (in, out))"
            )
        width, prev = ls.W.shape[1], f"layers[{i}] (W shape {ls.W.shape})"
    if t.shape[1] != width:
        raise ValueError(
            f"target has shape {t.shape} but the last layer, layers[{len(layers) - 1}], has "
            f"{width} output(s) (W shape {layers[-1].W.shape}); target needs {width} column(s)"
        )


# -- the schema: a table of fields per JSON object, walked by _parse_object ------------------

REQUIRED = object()  # the default of a key that must be given


class Field(NamedTuple):
    """One key of a JSON object in a spec.

    ``parse(value, label)`` returns what the spec keeps of a given value, or raises a
    ``ValueError`` naming it as ``label``; ``default`` stands in for an absent key (``REQUIRED``:
    it must be given). ``label`` formats the name errors give the value (from ``where``, the
    object's name, and ``key``); ``None`` takes the schema's.
    """

    name: str
    parse: Callable[[Any, str], Any]
    default: Any = REQUIRED
    label: str | None = None


class Schema(NamedTuple):
    """The fields of a JSON object in a spec, and the errors for an object that is not one
    (formatted with ``where``, ``kind``), lacks required keys or has unknown keys (``where``,
    ``keys``, ``required``, ``allowed``); ``label`` formats each field's name in errors."""

    fields: tuple[Field, ...]
    label: str
    not_object: str
    missing: str
    unknown: str


def _parse_object(d: Any, schema: Schema, where: str) -> dict[str, Any]:
    """``{key: parsed value}`` for every field of ``schema`` (defaults for absent keys) from the
    JSON object ``d`` called ``where``; the first problem found as a ``ValueError``."""
    if not isinstance(d, Mapping):
        raise ValueError(schema.not_object.format(where=where, kind=_kind(d)))
    names = [f.name for f in schema.fields]
    required = [f.name for f in schema.fields if f.default is REQUIRED]
    words = dict(where=where, required=", ".join(required), allowed=", ".join(names))
    missing = [k for k in required if k not in d]
    if missing:
        raise ValueError(schema.missing.format(keys=", ".join(map(repr, missing)), **words))
    extra = sorted(set(d) - set(names))
    if extra:
        raise ValueError(schema.unknown.format(keys=", ".join(map(repr, extra)), **words))
    return {f.name: f.parse(d[f.name], (f.label or schema.label).format(where=where, key=f.name))
            if f.name in d else f.default for f in schema.fields}


def _expect(test: Callable[[Any], bool], wording: str, convert: Callable | None = None):
    """A field's parser: a value that passes ``test`` (``convert``-ed), else the error
    ``"{label} {wording}"`` with the value's ``{short}`` repr or ``{kind}`` filled in."""

    def parse(value, label):
        if not test(value):
            raise ValueError(f"{label} " + wording.format(short=_short(value), kind=_kind(value)))
        return value if convert is None else convert(value)

    return parse


def _rows(v: Any, name: str) -> np.ndarray:
    """``input``/``target``: a matrix, or a flat list as one row."""
    return _matrix(v, name, allow_vector=True)


def _layers(v: Any, name: str) -> tuple[LayerSpec, ...]:
    """``layers``: a non-empty list of layer objects."""
    if not isinstance(v, list) or not v:
        raise ValueError(f"'{name}' must be a non-empty list of layer objects, got {_kind(v)}")
    return tuple(_layer(raw, f"{name}[{i}]") for i, raw in enumerate(v))


def _layer(raw: Any, where: str) -> LayerSpec:
    """One layer object: its :data:`LAYER_SCHEMA` fields; ``b`` zeros when absent or null."""
    fields = _parse_object(raw, LAYER_SCHEMA, where)
    W, b = fields["W"], fields["b"]
    if b is None:
        b = np.zeros(W.shape[1])
    elif b.shape != (W.shape[1],):
        raise ValueError(
            f"{where}.b has length {b.shape[0]} but {where}.W has shape {W.shape}; "
            f"b needs {W.shape[1]} entries, one per output unit"
        )
    return LayerSpec(W, b, fields["activation"])


def _bias(v: Any, name: str) -> np.ndarray | None:
    """A layer's ``b``: a vector, or ``None`` (null) for zeros."""
    return None if v is None else _vector(v, name)


def _activation(v: Any, where: str) -> str:
    """A layer's ``activation``: a name in ``ACTIVATIONS``; errors name the layer ``where``."""
    from jaxprop.core.layers import ACTIVATIONS

    try:
        lookup(ACTIVATIONS, v, "activation", show=_short)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None
    return v


def _loss(v: Any, name: str) -> str:
    """``loss``: a name in ``LOSSES`` of a loss on target matrices (no integer labels)."""
    from jaxprop.core.losses import LOSSES

    del name  # the messages name the loss itself

    if lookup(LOSSES, v, "loss", show=_short).integer_labels:
        raise ValueError(f"loss {v} takes integer class labels, but explain's target is a "
                         "matrix: use softmax_cross_entropy with one-hot target rows")
    return v


def _check_steps(steps: Any, name: str) -> int:
    """A step count: a positive integer (``2.0`` counts) of at most ``MAX_STEPS``."""
    if isinstance(steps, float) and steps.is_integer():
        steps = int(steps)
    if not is_int(steps) or steps < 1:
        raise ValueError(f"{name} must be a positive integer, got {_short(steps)}")
    if steps > MAX_STEPS:
        raise ValueError(f"{name} must be at most {MAX_STEPS:,} (explain keeps every quantity "
                         f"of every step; train longer runs with jaxprop train), got "
                         f"{_short(steps)}")
    return int(steps)


def _positive_finite(v: Any) -> bool:
    return is_number(v) and _finite(v) and v > 0


_learning_rate = _expect(_positive_finite, "must be a positive finite number, got {short}", float)




# -- values: numbers, vectors, matrices ----------------------------------------------------


def _finite(v) -> bool:
    """``math.isfinite`` that says no to an integer too large for a float64."""
    try:
        return math.isfinite(v)
    except OverflowError:
        return False


def _kind(v: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
            type(None): "null"}.get(type(v), f"a {type(v).__name__}")


def _numbers(row: Any, name: str) -> list[float]:
    for j, v in enumerate(row):
        if not is_number(v):
            raise ValueError(f"{name}[{j}] is {_short(v)} ({_kind(v)}), not a number")
        if not _finite(v):
            raise ValueError(f"{name}[{j}] is {_short(v)}; NaN/Inf values and numbers too "
                             "large for a float64 are not allowed")
    return [float(v) for v in row]


def _vector(v: Any, name: str) -> np.ndarray:
    if not isinstance(v, list) or not v:
        raise ValueError(f"{name} must be a non-empty list of numbers, got {_kind(v)}")
    return np.asarray(_numbers(v, name), dtype=np.float64)


def _matrix(m: Any, name: str, allow_vector: bool = False) -> np.ndarray:
    """A ``(rows, cols)`` float64 array from a list of equal-length lists of numbers."""
    if not isinstance(m, list) or not m:
        raise ValueError(f"{name} must be a non-empty list of rows (a matrix), got {_kind(m)}")
    if allow_vector and all(not isinstance(v, list) for v in m):
        return _vector(m, name)[None, :]  # a flat list is one row
    rows = []
    for i, row in enumerate(m):
        if not isinstance(row, list) or not row:
            raise ValueError(
                f"{name}[{i}] must be a non-empty list of numbers, got {_kind(row)}; "
                f"{name} is a matrix (list of rows)"
            )
        if rows and len(row) != len(rows[0]):
            raise ValueError(
                f"{name} is ragged: row 0 has {len(rows[0])} entries but row {i} has {len(row)}"
            )
        rows.append(_numbers(row, f"{name}[{i}]"))
    return np.asarray(rows, dtype=np.float64)


# -- the tables ---------------------------------------------------------------------------

SPEC_SCHEMA = Schema(
    fields=(
        Field("layers", _layers),
        Field("input", _rows),
        Field("target", _rows),
        Field("learning_rate", _learning_rate),
        Field("loss", _loss, "sse_half"),
        Field("steps", _check_steps, 1),
        Field("update_biases", _expect(lambda v: isinstance(v, bool),
                                       "must be true or false, got {short}"), True),
        Field("description", _expect(lambda v: isinstance(v, str),
                                     "must be a string, got {kind}"), ""),
    ),
    label="{key}",
    not_object="{where}: the spec must be a JSON object, got {kind}",
    missing="{where}: missing required key(s) {keys} (required: {required})",
    unknown="{where}: unknown key(s) {keys} (allowed: {allowed})",
)
LAYER_SCHEMA = Schema(
    fields=(
        Field("W", _matrix),
        Field("b", _bias, None),
        Field("activation", _activation, DEFAULT_ACTIVATION, label="{where}"),
    ),
    label="{where}.{key}",
    not_object="{where} must be an object with 'W' (and optional 'b', 'activation'), got {kind}",
    missing="{where} is missing required key 'W' (shape (in, out))",
    unknown="{where}: unknown key(s) {keys} (allowed: {allowed})",
)
REQUIRED_KEYS = tuple(f.name for f in SPEC_SCHEMA.fields if f.default is REQUIRED)
OPTIONAL_KEYS = {f.name: f.default for f in SPEC_SCHEMA.fields if f.default is not REQUIRED}
LAYER_KEYS = tuple(f.name for f in LAYER_SCHEMA.fields)


# --------------------------------------------------------------------------------------------
# Bundled examples


def list_examples() -> dict[str, str]:
    """``{name: description}`` of the examples bundled in ``jaxprop/examples``."""
    out = {}
    folder = resources.files("jaxprop").joinpath("examples")
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        if entry.name.endswith(".json"):
            text = entry.read_text(encoding="utf-8")
            out[entry.name[:-5]] = json.loads(text).get("description", "")
    return out


def load_example(name: str) -> Spec:
    """The bundled example ``name`` (see :func:`list_examples`) as a validated :class:`Spec`."""
    lookup(list_examples(), name, "example")
    entry = resources.files("jaxprop").joinpath("examples", f"{name}.json")
    text = entry.read_text(encoding="utf-8")
    return _validate(_parse_json(text, f"example {name}"), where=f"example {name}")


# --------------------------------------------------------------------------------------------
# The computation


def build_model(spec: Spec):
    """``(model, params, pairs)``: Dense + activation layers composed with
    :func:`jaxprop.serial`; ``pairs`` holds each spec layer's ``(dense, activation)`` Layer
    objects, the keys of the trace."""
    model, pairs = _chain(_layout(spec))
    return model, _params(spec), pairs


def _params(spec: Spec) -> list:
    """The params of :func:`build_model`'s model: ``{"W", "b"}`` of each Dense layer, ``()``
    of the activation after it."""
    return [p for ls in spec.layers for p in ({"W": ls.W, "b": ls.b}, ())]


def explain(spec: Spec | str | os.PathLike | Mapping, steps: int | None = None) -> dict:
    """Run ``steps`` (default: the spec's) gradient-descent steps and record every quantity.

    Returns ``{"steps": [{"loss": L, "layers": [{"z", "a", "da", "delta", "dadz", "dW", "db",
    "W_after", "b_after"}, ...]}, ...], "final_loss": L}``: nested lists of Python floats, one
    entry per Dense layer; ``z``, ``a``, ``da``, ``delta`` are ``(batch, out)``, ``dW``/``W_after`` ``(in, out)``,
    ``db``/``b_after`` ``(out,)``. Each step's ``loss`` is the loss before its update;
    ``final_loss`` is the loss after the last update. ``da = dL/da`` (the next layer's
    ``W @ delta``, or the loss gradient for the last layer), ``delta = dL/dz`` and ``dadz``
    the activation's ``da/dz`` (:func:`local_derivative`: ``(batch, out)``, or ``(batch, out,
    out)`` for one that couples its units, softmax). Computed in float64 inside ``jax.enable_x64(True)``, leaving the global setting untouched.

    For a :class:`TableSpec` (:func:`from_model`) each step's ``layers`` has one entry per
    layer of the model: ``{"layer": its spec, "output": (batch, *shape), "doutput": dL/d
    output, "params", "grads", "params_after": {name: values}}``.
    """
    import jax

    spec = spec if isinstance(spec, TableSpec) else load_spec(spec)
    n_steps = spec.steps if steps is None else _check_steps(steps, "steps")
    descend = _descend_tables if isinstance(spec, TableSpec) else _descend
    with jax.enable_x64(True):
        steps_out, final = descend(spec, n_steps)
    if not math.isfinite(final):
        raise ValueError(
            f"step {n_steps}: the loss after the last update is {final}; "
            f"training diverged (learning_rate {spec.learning_rate} too large?)"
        )
    return {"steps": steps_out, "final_loss": final}


def _layout(spec: Spec) -> tuple:
    """What the program depends on: ``(in, ((out, activation), ...))``."""
    return spec.input.shape[1], tuple((ls.W.shape[1], ls.activation) for ls in spec.layers)


def _chain(layout: tuple):
    """``(model, pairs)`` of a :func:`_layout`: a Dense layer and its activation per pair."""
    from jaxprop.core.layers import Dense
    from jaxprop.core.network import serial
    from jaxprop.core.spec import parse_layer

    width, layers = layout
    pairs = [(Dense(out), parse_layer(act)) for out, act in layers]
    return serial(*[layer for pair in pairs for layer in pair], in_shape=(width,)), pairs


def _descend(spec: Spec, n_steps: int) -> tuple[list[dict], float]:
    """``(steps, final_loss)``: ``n_steps`` steps of gradient descent in float64 (run it inside
    ``jax.enable_x64``), each step recorded as :func:`explain` returns it."""
    import jax
    import jax.numpy as jnp

    x = jnp.asarray(spec.input, dtype=jnp.float64)
    t = jnp.asarray(spec.target, dtype=jnp.float64)
    params = [jax.tree.map(lambda v: jnp.asarray(v, jnp.float64), p) for p in _params(spec)]
    step = _compiled_step(_layout(spec), spec.loss, spec.learning_rate, spec.update_biases)
    steps_out, coupled = [], None
    for i in range(n_steps):
        value, record, params = step(params, x, t)
        if coupled is None:  # from the first step's Jacobians: softmax's, not sigmoid's
            coupled = [couples_units(np.asarray(r["dadz"])) for r in record]
        record = [{**r, "dadz": local_derivative(np.asarray(r["dadz"]), c)}
                  for r, c in zip(record, coupled)]
        steps_out.append(_step_record(i, value, record))
    return steps_out, float(step(params, x, t)[0])  # the loss after the last update


@remember(maxsize=32)
def _compiled_step(layout: tuple, loss_name: str, learning_rate: float, update_biases: bool):
    """One step of gradient descent on the Dense chain ``layout`` (:func:`_layout`), compiled
    once and remembered: ``(params, x, t) -> (loss, record, new_params)``.

    ``loss`` is the loss before the update, ``record`` one dict per pair with ``z``, ``a``,
    ``da = dL/da``, ``delta = dL/dz``, ``dadz`` (the activation's Jacobian,
    :func:`local_jacobian`), ``dW``, ``db``, ``W_after``, ``b_after``.
    """
    import jax

    from jaxprop.core.losses import get_loss

    model, pairs = _chain(layout)
    loss = get_loss(loss_name)
    # every quantity keyed by the layer it belongs to: z is the Dense output, a the
    # activation's output, delta = dL/dz the gradient w.r.t. the activation's input
    at = {layer: i for i, layer in enumerate(model.layers)}

    def update(p, g):
        return {"W": p["W"] - learning_rate * g["W"],
                "b": p["b"] - learning_rate * g["b"] if update_biases else p["b"]}

    def step(params, x, t):
        outputs, residuals, _ = model.forward_trace(params, None, x)
        y = outputs[-1]
        dy = loss.grad(y, t)
        dparams, dxs = model.backward_trace(params, residuals, dy)
        dxs = [*dxs, dy]  # dxs[i + 1]: dL/d(layer i's output), the loss gradient for the last
        new = [update(p, g) if p else () for p, g in zip(params, dparams)]
        record = [
            {
                "z": outputs[at[dense]], "a": outputs[at[act]], "da": dxs[at[act] + 1],
                "delta": dxs[at[act]],
                "dadz": local_jacobian(act, residuals[at[act]], outputs[at[act]]),
                "dW": dparams[at[dense]]["W"], "db": dparams[at[dense]]["b"],
                "W_after": new[at[dense]]["W"], "b_after": new[at[dense]]["b"],
            }
            for dense, act in pairs
        ]
        return loss.value(y, t), record, new

    return jax.jit(step)


def local_jacobian(act, residuals, a):
    """``da/dz`` of the activation ``act`` from its own backward pass, ``(batch, out, out)``:
    entry ``[e, k, j]`` is ``da_k/dz_j`` of example ``e`` (the backward of each unit vector,
    all at once along a leading axis: an activation works on any leading axes)."""
    import jax.numpy as jnp

    out = a.shape[-1]
    units = jnp.broadcast_to(jnp.eye(out, dtype=a.dtype)[:, None, :], (out, *a.shape))
    return jnp.moveaxis(act.backward((), residuals, units)[1], 0, -2)


def local_derivative(jac: np.ndarray, coupled: bool) -> np.ndarray:
    """``dadz`` from the Jacobian ``jac`` (:func:`local_jacobian`): ``f'(z)`` per unit,
    ``(batch, out)``, or where the activation ``coupled`` its units (softmax) the whole
    ``da_k/dz_j``, ``(batch, out, out)``; ``delta = da * dadz`` (or ``da @ dadz``)."""
    return jac if coupled else np.diagonal(jac, axis1=-2, axis2=-1)


def couples_units(jac: np.ndarray) -> bool:
    """Whether some output depends on another unit's input: ``jac`` off its diagonal."""
    return bool(np.any(jac[..., ~np.eye(jac.shape[-1], dtype=bool)] != 0))


def _step_record(i: int, value, record: list[dict]) -> dict:
    """Step ``i``'s ``{"loss", "layers"}`` as Python floats; non-finite values are an error."""
    value = float(value)
    record = [{k: np.asarray(r[k], dtype=np.float64) for k in TRACE_KEYS} for r in record]
    _check_finite(i, value, record)
    return {"loss": value, "layers": [{k: v.tolist() for k, v in r.items()} for r in record]}


def _check_finite(i: int, value: float, record: list[dict]) -> None:
    bad = [
        f"layers[{k}].{name}" for k, r in enumerate(record) for name, v in r.items()
        if not np.all(np.isfinite(v))
    ]
    if not math.isfinite(value) or bad:
        raise ValueError(
            f"step {i + 1}: non-finite values (loss {value}"
            f"{'; ' + ', '.join(bad) if bad else ''}); "
            f"training diverged (learning_rate too large?)"
        )


# --------------------------------------------------------------------------------------------
# A model from its textual architecture (``jaxprop explain --model TEXT``)

# explain draws every unit: a model whose layers with parameters have more outputs per example
# than this is refused (train or check it instead)
MAX_UNITS = 30
MAX_BATCH = 16


class TableSpec(NamedTuple):
    """A model given as text whose layers are not all Dense + activation: drawn as tables.

    ``params``/``state``: the per-layer lists of the model's initial values (float64 NumPy);
    ``input: (batch, *in_shape)``; ``target``: the output's shape per example.
    """

    model: str
    in_shape: tuple[int, ...]
    params: list
    state: list
    input: np.ndarray
    target: np.ndarray
    loss: str
    learning_rate: float
    steps: int
    seed: int = 0
    description: str = ""


def from_model(text: str, in_shape, *, loss: str = "mse", learning_rate: float = 0.1,
               steps: int = 1, batch: int = 2, seed: int = 0) -> Spec | TableSpec:
    """A worked example of the architecture ``text`` (``"dense(3)-tanh-dense(2)-softmax"``) on
    ``batch`` random examples of shape ``in_shape`` with targets that suit ``loss``.

    Weights from the layers' own initializers and the data (``N(0, 1)``, targets as
    :func:`jaxprop.tools.presets.make_data`) come from ``seed``, rounded to 2 decimals so that
    the sums can be followed by hand. Dense layers on flat inputs, each followed by at most one
    activation, give a :class:`Spec` (the network picture); any other model a
    :class:`TableSpec` (tables of values per step). ``ValueError`` for a model with more than
    :data:`MAX_UNITS` outputs per example in its layers with parameters, an output the loss
    cannot take (:func:`~jaxprop.core.checks.check_output_fits_loss`), or bad settings.

    Args:
      text: the architecture (:func:`jaxprop.core.spec.parse_model`).
      in_shape: one example's input shape.
      loss: a loss name (not one on integer labels).
      learning_rate: plain gradient descent's step size.
      steps: steps of gradient descent (at most :data:`MAX_STEPS`).
      batch: examples (at most :data:`MAX_BATCH`).
      seed: the seed of the weights and the data.

    Returns:
      the :class:`Spec` or :class:`TableSpec`.
    """
    import jax
    import jax.numpy as jnp

    from jaxprop.core.checks import check_output_fits_loss
    from jaxprop.core.spec import parse_model
    from jaxprop.core.validate import check_int
    from jaxprop.tools.presets import make_data

    in_shape = _shape(in_shape)
    _loss(loss, "loss")
    learning_rate = _learning_rate(learning_rate, "learning_rate")
    steps = _check_steps(steps, "steps")
    batch = check_int("batch", batch, minimum=1, maximum=MAX_BATCH)
    seed = check_int("seed", seed, minimum=0)
    model = parse_model(text, in_shape)
    check_output_fits_loss(model, loss)  # no bce on any value, no softmax before logits
    with jax.enable_x64(True):  # the sizes checked from shapes alone, before any work
        key_p, key_d = jax.random.split(jax.random.key(seed))
        params, state = jax.eval_shape(model.init_with_state, key_p)
        outputs = jax.eval_shape(lambda p, s: model.forward_trace(p, s, jnp.zeros(
            (1, *in_shape), jnp.float32), train=False)[0], params, state)  # the layers' dtype
        _check_units(text, model, params, outputs)

        params, state = model.init_with_state(key_p)
        params, state = _rounded(params), _float64(state)
        x, t = make_data(key_d, loss, in_shape, outputs[-1].shape[1:], batch, jnp.float64)
        x, t = np.round(np.asarray(x), 2), np.round(np.asarray(t), 2)
    words = f"{text} on {batch} random example(s), seed {seed}"
    layers = _dense_chain(model, params, len(in_shape))
    if layers is None:
        return TableSpec(text, in_shape, params, state, x, t, loss, learning_rate, steps, seed,
                         words)
    return Spec(tuple(layers), x, t, loss, learning_rate, steps, True, words)


def _shape(in_shape) -> tuple[int, ...]:
    shape = (in_shape,) if is_int(in_shape) else in_shape
    if (not isinstance(shape, (tuple, list)) or not shape
            or not all(is_int(d) and d > 0 for d in shape)):
        raise ValueError(f"in_shape must be positive integers (one example's shape, e.g. 2 or "
                         f"3,3,1), got {_short(in_shape)}")
    return tuple(int(d) for d in shape)


def _float64(tree):
    import jax

    return jax.tree.map(lambda v: np.asarray(v, np.float64), tree)


def _rounded(params):
    import jax

    return jax.tree.map(lambda v: np.round(np.asarray(v, np.float64), 2), params)


def _has_params(p) -> bool:
    import jax

    return bool(jax.tree.leaves(p))


def _check_units(text: str, model, params, outputs) -> None:
    """At most :data:`MAX_UNITS` outputs per example in the layers with parameters."""
    sizes = [(layer.name, int(np.prod(y.shape[1:])))
             for layer, p, y in zip(model.layers, params, outputs) if _has_params(p)]
    total = sum(n for _, n in sizes)
    if total > MAX_UNITS:
        parts = ", ".join(f"{name} {n}" for name, n in sizes)
        raise ValueError(f"model {text!r} has {total} units (outputs per example of its layers "
                         f"with parameters: {parts}); explain draws at most {MAX_UNITS}: make "
                         "it smaller, or use jaxprop check / jaxprop train for larger models")


def _dense_chain(model, params, in_ndim: int) -> list[LayerSpec] | None:
    """The :class:`LayerSpec` of each Dense layer (the activation after it, else
    ``identity``) when the model is such a chain on flat inputs, else ``None``."""
    if in_ndim != 1:
        return None
    layers, i, n = [], 0, len(model.layers)
    while i < n:
        p = params[i]
        dense = (isinstance(p, dict) and set(p) == {"W", "b"} and np.ndim(p["W"]) == 2
                 and not model.layers[i].is_activation)
        if not dense:
            return None
        act = model.layers[i + 1] if i + 1 < n and model.layers[i + 1].is_activation else None
        layers.append(LayerSpec(p["W"], p["b"], act.spec if act else "identity"))
        i += 2 if act else 1
    return layers


def _descend_tables(spec: TableSpec, n_steps: int) -> tuple[list[dict], float]:
    """``(steps, final_loss)`` of a :class:`TableSpec`: per step and layer its output, the
    gradient w.r.t. it, and its parameters before, their gradients and after (run it inside
    ``jax.enable_x64``)."""
    import jax
    import jax.numpy as jnp

    step, model = _compiled_table_step(spec.model, spec.in_shape, spec.loss, spec.learning_rate)
    x, t = jnp.asarray(spec.input), jnp.asarray(spec.target)
    params, state = _float64(spec.params), _float64(spec.state)
    key, steps_out = jax.random.key(spec.seed), []
    for i in range(n_steps):
        value, record, params, state = step(params, state, x, t, jax.random.fold_in(key, i))
        steps_out.append(_table_record(i, value, record, model))
    final = step(params, state, x, t, jax.random.fold_in(key, n_steps))[0]
    return steps_out, float(final)


@remember(maxsize=32)
def _compiled_table_step(text: str, in_shape: tuple, loss_name: str, learning_rate: float):
    """``(step, model)``: one step of gradient descent on the model ``text``, compiled once and
    remembered, ``(params, state, x, t, key) -> (loss, record, new_params, new_state)`` with
    per layer its ``output``, ``doutput``, ``params``, ``grads`` and ``params_after``."""
    import jax

    from jaxprop.core.losses import get_loss
    from jaxprop.core.spec import parse_model

    model, loss = parse_model(text, in_shape), get_loss(loss_name)

    def step(params, state, x, t, key):
        outputs, residuals, state = model.forward_trace(params, state, x, key=key)
        dy = loss.grad(outputs[-1], t)
        dparams, dxs = model.backward_trace(params, residuals, dy)
        new = jax.tree.map(lambda p, g: p - learning_rate * g, params, dparams)
        record = [{"output": y, "doutput": d, "params": p, "grads": g, "params_after": q}
                  for y, d, p, g, q in zip(outputs, [*dxs[1:], dy], params, dparams, new)]
        return loss.value(outputs[-1], t), record, new, state

    return jax.jit(step), model


def _named(p) -> dict:
    """A layer's params as ``{name: nested list}`` (``{"W": ..., "b": ...}``)."""
    import jax

    leaves = jax.tree_util.tree_flatten_with_path(p)[0]
    return {".".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path):
            np.asarray(v, np.float64).tolist() for path, v in leaves}


def _table_record(i: int, value, record: list[dict], model) -> dict:
    """Step ``i`` of a :class:`TableSpec` as Python floats; non-finite values are an error."""
    import jax

    value = float(value)
    layers = [{"layer": layer.spec or layer.name,
               "output": np.asarray(r["output"], np.float64).tolist(),
               "doutput": np.asarray(r["doutput"], np.float64).tolist(),
               **{k: _named(r[k]) for k in ("params", "grads", "params_after")}}
              for layer, r in zip(model.layers, record)]
    bad = [f"layers[{k}]" for k, r in enumerate(record)
           if not all(np.all(np.isfinite(np.asarray(v))) for v in
                      [r["output"], r["doutput"], *jax.tree.leaves(r["grads"])])]
    if not math.isfinite(value) or bad:
        raise ValueError(f"step {i + 1}: non-finite values (loss {value}"
                         f"{'; ' + ', '.join(bad) if bad else ''}); training diverged "
                         "(learning_rate too large?)")
    return {"loss": value, "layers": layers}
