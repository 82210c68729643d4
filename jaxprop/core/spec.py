"""Textual architectures: ``"dense(64)-relu-dense(10)"`` <-> a model.

Layers are joined by ``-``; each is ``name`` or ``name(arg, ...)`` with numeric arguments.
Every layer built from a registered name carries its own text in ``Layer.spec``, and ``serial``
joins its layers' texts, so ``parse_model(model.spec, in_shape)`` rebuilds the architecture of
any model made of registered layers (checkpoints and ``jaxprop train --model`` rely on it).

Registered names (:data:`LAYER_SPECS`): ``dense(n)`` and every activation name
(``ACTIVATIONS``). Other modules add their layers with :func:`register`.
"""

from __future__ import annotations

import re
from typing import Callable, Sequence

from jaxprop.core.layers import ACTIVATIONS, Dense, Layer
from jaxprop.core.network import Model, serial

# name -> (constructor taking the parsed arguments, usage shown in errors)
LAYER_SPECS: dict[str, tuple[Callable[..., Layer], str]] = {
    "dense": (lambda n: Dense(n), "dense(n)"),
}
for _name, _make in ACTIVATIONS.items():
    LAYER_SPECS[_name] = (_make, "leaky_relu[(slope)]" if _name == "leaky_relu" else _name)

_TOKEN = re.compile(r"^\s*([a-z][a-z0-9_]*)\s*(?:\((.*)\))?\s*$")


def register(name: str, constructor: Callable[..., Layer], usage: str) -> None:
    """Make ``name(args...)`` build ``constructor(*args)`` in :func:`parse_model`."""
    LAYER_SPECS[name] = (constructor, usage)


def known() -> str:
    """The registered layers' usages, for error messages."""
    return ", ".join(usage for _, usage in LAYER_SPECS.values())


def _number(text: str, where: str):
    text = text.strip()
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{where}: {text!r} is not a number") from None


def split_spec(text: str) -> list[str]:
    """``"conv(16,3)-relu"`` -> ``["conv(16,3)", "relu"]`` (a ``-`` inside parentheses stays)."""
    parts, depth, current = [], 0, ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "-" and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    return parts


def parse_layer(text: str) -> Layer:
    """One layer from ``name`` or ``name(args)``; a clear ``ValueError`` listing what exists."""
    m = _TOKEN.match(text)
    if not m:
        raise ValueError(f"cannot read layer {text!r}: write name or name(arguments); "
                         f"known layers: {known()}")
    name, args = m.group(1), m.group(2)
    if name not in LAYER_SPECS:
        raise ValueError(f"unknown layer {name!r} in the architecture; known layers: {known()}")
    make, usage = LAYER_SPECS[name]
    values = [] if args is None or not args.strip() else [
        _number(a, f"layer {text.strip()!r}") for a in args.split(",")]
    try:
        return make(*values)
    except (TypeError, ValueError) as e:
        raise ValueError(f"layer {text.strip()!r}: {e} (usage: {usage})") from None


def parse_model(text: str, in_shape: Sequence[int] | None = None) -> Model:
    """The model that ``text`` describes, e.g. ``parse_model("dense(64)-relu-dense(10)",
    (64,))``; ``in_shape`` is one example's shape."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"an architecture is a non-empty text like 'dense(64)-relu-dense(10)'; "
                         f"got {text!r}")
    layers = [parse_layer(part) for part in split_spec(text)]
    return serial(*layers, in_shape=in_shape)
