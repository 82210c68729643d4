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

from jaxprop.core.registry import lookup
from jaxprop.core.validate import is_int, is_number

DEFAULT_ACTIVATION = "sigmoid"
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
        Field("learning_rate", _expect(_positive_finite, "must be a positive finite number, "
                                       "got {short}", float)),
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
    from jaxprop.core.layers import Dense, activation
    from jaxprop.core.network import serial

    pairs = [(Dense(ls.W.shape[1]), activation(ls.activation)) for ls in spec.layers]
    model = serial(*[layer for pair in pairs for layer in pair], in_shape=(spec.input.shape[1],))
    params = [{"W": ls.W, "b": ls.b} if layer is dense else ()
              for ls, (dense, act) in zip(spec.layers, pairs) for layer in (dense, act)]
    return model, params, pairs


def explain(spec: Spec | str | os.PathLike | Mapping, steps: int | None = None) -> dict:
    """Run ``steps`` (default: the spec's) gradient-descent steps and record every quantity.

    Returns ``{"steps": [{"loss": L, "layers": [{"z", "a", "da", "delta", "dW", "db",
    "W_after", "b_after"}, ...]}, ...], "final_loss": L}``: nested lists of Python floats, one
    entry per Dense layer; ``z``, ``a``, ``da``, ``delta`` are ``(batch, out)``, ``dW``/``W_after`` ``(in, out)``,
    ``db``/``b_after`` ``(out,)``. Each step's ``loss`` is the loss before its update;
    ``final_loss`` is the loss after the last update. ``da = dL/da`` (the next layer's
    ``W @ delta``, or the loss gradient for the last layer) and ``delta = dL/dz``.
    Computed in float64 inside ``jax.enable_x64(True)``, leaving the global setting untouched.
    """
    import jax

    spec = load_spec(spec)
    n_steps = spec.steps if steps is None else _check_steps(steps, "steps")
    with jax.enable_x64(True):
        steps_out, final = _descend(spec, n_steps)
    if not math.isfinite(final):
        raise ValueError(
            f"step {n_steps}: the loss after the last update is {final}; "
            f"training diverged (learning_rate {spec.learning_rate} too large?)"
        )
    return {"steps": steps_out, "final_loss": final}


def _descend(spec: Spec, n_steps: int) -> tuple[list[dict], float]:
    """``(steps, final_loss)``: ``n_steps`` steps of gradient descent in float64 (run it inside
    ``jax.enable_x64``), each step recorded as :func:`explain` returns it."""
    import jax
    import jax.numpy as jnp

    from jaxprop.core.losses import get_loss

    model, params, pairs = build_model(spec)
    loss = get_loss(spec.loss)
    x = jnp.asarray(spec.input, dtype=jnp.float64)
    t = jnp.asarray(spec.target, dtype=jnp.float64)
    params = [jax.tree.map(lambda v: jnp.asarray(v, jnp.float64), p) for p in params]
    step = _step_fn(spec, model, pairs, loss, (x, t))
    # Eager dispatch costs ~1 ms a step here; compiling costs ~0.2 s, so only long runs jit.
    step = jax.jit(step) if n_steps > 200 else step
    steps_out = []
    for i in range(n_steps):
        value, record, params = step(params)
        steps_out.append(_step_record(i, value, record))
    return steps_out, float(loss.value(model.apply(params, x), t))


def _step_fn(spec: Spec, model, pairs, loss, data):
    """One step of gradient descent as a function ``params -> (loss, record, new_params)``.

    Args:
      spec: the spec (its learning rate and whether biases are updated).
      model: the model from :func:`build_model`.
      pairs: its ``(dense, activation)`` layer pairs, one per spec layer.
      loss: the :class:`~jaxprop.Loss`.
      data: ``(x, t)``, float64.

    Returns:
      the step: ``loss`` is the loss before the update, ``record`` one dict per pair with
      ``z``, ``a``, ``da = dL/da``, ``delta = dL/dz``, ``dW``, ``db``, ``W_after``, ``b_after``.
    """
    x, t = data
    # every quantity keyed by the layer it belongs to: z is the Dense output, a the
    # activation's output, delta = dL/dz the gradient w.r.t. the activation's input
    at = {layer: i for i, layer in enumerate(model.layers)}

    def step(params):
        outputs, residuals, _ = model.forward_trace(params, None, x)
        y = outputs[-1]
        dy = loss.grad(y, t)
        dparams, dxs = model.backward_trace(params, residuals, dy)
        dxs = [*dxs, dy]  # dxs[i + 1]: dL/d(layer i's output), the loss gradient for the last
        new = [_update(p, g, spec) if p else () for p, g in zip(params, dparams)]
        record = [
            {
                "z": outputs[at[dense]], "a": outputs[at[act]], "da": dxs[at[act] + 1],
                "delta": dxs[at[act]],
                "dW": dparams[at[dense]]["W"], "db": dparams[at[dense]]["b"],
                "W_after": new[at[dense]]["W"], "b_after": new[at[dense]]["b"],
            }
            for dense, act in pairs
        ]
        return loss.value(y, t), record, new

    return step


def _update(p: dict, g: dict, spec: Spec) -> dict:
    """Dense params ``p`` after one step down the gradient ``g`` (biases kept when fixed)."""
    lr = spec.learning_rate
    return {"W": p["W"] - lr * g["W"], "b": p["b"] - lr * g["b"] if spec.update_biases else p["b"]}


def _step_record(i: int, value, record: list[dict]) -> dict:
    """Step ``i``'s ``{"loss", "layers"}`` as Python floats; non-finite values are an error."""
    value = float(value)
    record = [{k: np.asarray(v, dtype=np.float64) for k, v in r.items()} for r in record]
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
