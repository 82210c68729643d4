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
pre-activations ``z``, activations ``a``, deltas ``dL/dz``, ``dL/dW``, ``dL/db`` and the updated
``W``/``b``. Note the sign: ``delta`` here is ``dL/dz``; textbooks that write
``delta = (t - y) f'(z)`` for ``sse_half`` use the opposite sign (and ``W += lr * delta * a``).
"""

from __future__ import annotations

import json
import math
import os
import reprlib
from importlib import resources
from typing import Any, Mapping, NamedTuple

import numpy as np

from jaxprop.core.registry import lookup

REQUIRED_KEYS = ("layers", "input", "target", "learning_rate")
OPTIONAL_KEYS = {"loss": "sse_half", "steps": 1, "update_biases": True, "description": ""}
LAYER_KEYS = ("W", "b", "activation")
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
    from jaxprop.core.layers import ACTIVATIONS
    from jaxprop.core.losses import LOSSES

    if not isinstance(d, Mapping):
        raise ValueError(f"{where}: the spec must be a JSON object, got {_kind(d)}")
    missing = [k for k in REQUIRED_KEYS if k not in d]
    if missing:
        raise ValueError(
            f"{where}: missing required key(s) {', '.join(map(repr, missing))} "
            f"(required: {', '.join(REQUIRED_KEYS)})"
        )
    unknown = sorted(set(d) - set(REQUIRED_KEYS) - set(OPTIONAL_KEYS))
    if unknown:
        raise ValueError(
            f"{where}: unknown key(s) {', '.join(map(repr, unknown))} "
            f"(allowed: {', '.join(REQUIRED_KEYS + tuple(OPTIONAL_KEYS))})"
        )

    x = _matrix(d["input"], "input", allow_vector=True)
    t = _matrix(d["target"], "target", allow_vector=True)
    if x.shape[0] != t.shape[0]:
        raise ValueError(
            f"input has {x.shape[0]} row(s) (shape {x.shape}) but target has {t.shape[0]} "
            f"(shape {t.shape}); one target row per input row"
        )

    raw_layers = d["layers"]
    if not isinstance(raw_layers, list) or not raw_layers:
        raise ValueError(
            f"'layers' must be a non-empty list of layer objects, got {_kind(raw_layers)}"
        )
    layers, width, prev = [], x.shape[1], f"the input (shape {x.shape})"
    for i, raw in enumerate(raw_layers):
        name = f"layers[{i}]"
        if not isinstance(raw, Mapping):
            raise ValueError(
                f"{name} must be an object with 'W' (and optional 'b', 'activation'), "
                f"got {_kind(raw)}"
            )
        if "W" not in raw:
            raise ValueError(f"{name} is missing required key 'W' (shape (in, out))")
        bad = sorted(set(raw) - set(LAYER_KEYS))
        if bad:
            raise ValueError(
                f"{name}: unknown key(s) {', '.join(map(repr, bad))} "
                f"(allowed: {', '.join(LAYER_KEYS)})"
            )
        W = _matrix(raw["W"], f"{name}.W")
        if W.shape[0] != width:
            raise ValueError(
                f"{name}.W has shape {W.shape} but {prev} has width {width}; "
                f"W must have {width} row(s), one per input (W is (in, out))"
            )
        if raw.get("b") is None:
            b = np.zeros(W.shape[1])
        else:
            b = _vector(raw["b"], f"{name}.b")
            if b.shape != (W.shape[1],):
                raise ValueError(
                    f"{name}.b has length {b.shape[0]} but {name}.W has shape {W.shape}; "
                    f"b needs {W.shape[1]} entries, one per output unit"
                )
        act = raw.get("activation", DEFAULT_ACTIVATION)
        if not isinstance(act, str) or act not in ACTIVATIONS:
            raise ValueError(
                f"{name}: unknown activation {_short(act)}; known: {', '.join(ACTIVATIONS)}"
            )
        layers.append(LayerSpec(W, b, act))
        width, prev = W.shape[1], f"{name} (W shape {W.shape})"
    if t.shape[1] != width:
        raise ValueError(
            f"target has shape {t.shape} but the last layer, layers[{len(layers) - 1}], has "
            f"{width} output(s) (W shape {layers[-1].W.shape}); target needs {width} column(s)"
        )

    loss = d.get("loss", OPTIONAL_KEYS["loss"])
    if not isinstance(loss, str) or loss not in LOSSES:
        raise ValueError(f"unknown loss {_short(loss)}; known: {', '.join(LOSSES)}")
    if LOSSES[loss].integer_labels:
        raise ValueError(f"loss {loss} takes integer class labels, but explain's target is a "
                         "matrix: use softmax_cross_entropy with one-hot target rows")
    lr = d["learning_rate"]
    if not _is_number(lr) or not _finite(lr) or lr <= 0:
        raise ValueError(f"learning_rate must be a positive finite number, got {_short(lr)}")
    steps = _check_steps(d.get("steps", OPTIONAL_KEYS["steps"]), "steps")
    ub = d.get("update_biases", OPTIONAL_KEYS["update_biases"])
    if not isinstance(ub, bool):
        raise ValueError(f"update_biases must be true or false, got {_short(ub)}")
    desc = d.get("description", "")
    if not isinstance(desc, str):
        raise ValueError(f"description must be a string, got {_kind(desc)}")
    return Spec(tuple(layers), x, t, loss, float(lr), steps, ub, desc)


def _check_steps(steps: Any, name: str) -> int:
    if isinstance(steps, float) and steps.is_integer():
        steps = int(steps)
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"{name} must be a positive integer, got {_short(steps)}")
    if steps > MAX_STEPS:
        raise ValueError(f"{name} must be at most {MAX_STEPS:,} (explain keeps every quantity "
                         f"of every step; train longer runs with jaxprop train), got "
                         f"{_short(steps)}")
    return steps


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


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
        if not _is_number(v):
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

    Returns ``{"steps": [{"loss": L, "layers": [{"z", "a", "delta", "dW", "db", "W_after",
    "b_after"}, ...]}, ...], "final_loss": L}``: nested lists of Python floats, one entry per
    Dense layer; ``z``, ``a``, ``delta`` are ``(batch, out)``, ``dW``/``W_after`` ``(in, out)``,
    ``db``/``b_after`` ``(out,)``. Each step's ``loss`` is the loss before its update;
    ``final_loss`` is the loss after the last update. ``delta = dL/dz``.
    Computed in float64 inside ``jax.enable_x64(True)``, leaving the global setting untouched.
    """
    import jax
    import jax.numpy as jnp

    from jaxprop.core.losses import get_loss

    spec = load_spec(spec)
    n_steps = spec.steps if steps is None else _check_steps(steps, "steps")
    model, params, pairs = build_model(spec)
    loss = get_loss(spec.loss)
    lr = spec.learning_rate

    with jax.enable_x64(True):
        x = jnp.asarray(spec.input, dtype=jnp.float64)
        t = jnp.asarray(spec.target, dtype=jnp.float64)
        params = [jax.tree.map(lambda v: jnp.asarray(v, jnp.float64), p) for p in params]

        def step(params):
            outputs, residuals, _ = model.forward_trace(params, None, x)
            y = outputs[-1]
            dparams, dxs = model.backward_trace(params, residuals, loss.grad(y, t))
            new = [
                {"W": p["W"] - lr * g["W"],
                 "b": p["b"] - lr * g["b"] if spec.update_biases else p["b"]} if p else ()
                for p, g in zip(params, dparams)
            ]
            # every quantity keyed by the layer it belongs to: z is the Dense output, a the
            # activation's output, delta = dL/dz the gradient w.r.t. the activation's input
            at = {layer: i for i, layer in enumerate(model.layers)}
            record = [
                {
                    "z": outputs[at[dense]], "a": outputs[at[act]], "delta": dxs[at[act]],
                    "dW": dparams[at[dense]]["W"], "db": dparams[at[dense]]["b"],
                    "W_after": new[at[dense]]["W"], "b_after": new[at[dense]]["b"],
                }
                for dense, act in pairs
            ]
            return loss.value(y, t), record, new

        # Eager dispatch costs ~1 ms a step here; compiling costs ~0.2 s, so only long runs jit.
        step = jax.jit(step) if n_steps > 200 else step
        steps_out = []
        for i in range(n_steps):
            value, record, params = step(params)
            value = float(value)
            record = [{k: np.asarray(v, dtype=np.float64) for k, v in r.items()} for r in record]
            _check_finite(i, value, record)
            layers = [{k: v.tolist() for k, v in r.items()} for r in record]
            steps_out.append({"loss": value, "layers": layers})
        final = float(loss.value(model.apply(params, x), t))
    if not math.isfinite(final):
        raise ValueError(
            f"step {n_steps}: the loss after the last update is {final}; "
            f"training diverged (learning_rate {lr} too large?)"
        )
    return {"steps": steps_out, "final_loss": final}


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
