"""Textual architectures: ``"dense(64)-relu-dense(10)"`` <-> a model.

Layers are joined by ``-``; each is ``name`` or ``name(arg, ..., key=value, ...)`` with numbers
as arguments (a keyword may also take a word: ``padding=valid``); ``residual(...)`` takes a whole
architecture: ``residual(conv(16,3)-relu-conv(16,3))``.
Every layer built from a registered name carries its own text in ``Layer.spec``, and ``serial``
joins its layers' texts, so ``parse_model(model.spec, in_shape)`` rebuilds the architecture of
any model made of registered layers (checkpoints and ``jaxprop train --model`` rely on it).

Registered names (:data:`LAYER_SPECS`): ``dense(n)``, every activation name (``ACTIVATIONS``),
``conv(features,kernel[,stride])`` (keywords ``padding=same|valid|n``, ``dilation=n``,
``bias=0|1``), ``maxpool(k[,stride])`` and ``avgpool(k[,stride])`` (keyword ``padding``),
``flatten[(ndim)]``, ``reshape(d1,...,dk)``, ``layernorm``, ``batchnorm``, ``dropout(rate)``,
``residual(architecture)``; for sequences ``embed(vocab,features)`` (the vocabulary is part of
the text, so a saved text rebuilds the model alone), ``posembed(max_len)``,
``attention(heads)`` (keywords ``head_dim=d``, ``dropout=rate``, ``bias=0|1``), and
``repeat(n,architecture)``: ``n`` copies, each with its own params. Other modules add their
layers with :func:`register`.
"""

from __future__ import annotations

import math
import re
from typing import Callable, Sequence

from jaxprop.core.conv import AvgPool2D, Conv2D, MaxPool2D
from jaxprop.core.layers import ACTIVATIONS, Dense, Dropout, Flatten, Layer, Reshape
from jaxprop.core.network import Model, Repeat, Residual, serial
from jaxprop.core.norm import BatchNorm, LayerNorm
from jaxprop.core.registry import lookup
from jaxprop.core.sequence import CausalSelfAttention, Embedding, PositionalEmbedding

# name -> (constructor taking the parsed arguments, usage shown in errors)
LAYER_SPECS: dict[str, tuple[Callable[..., Layer], str]] = {
    "dense": (lambda n: Dense(n), "dense(n)"),
}
for _name, _make in ACTIVATIONS.items():
    LAYER_SPECS[_name] = (_make, _name)
LAYER_SPECS["leaky_relu"] = (ACTIVATIONS["leaky_relu"], "leaky_relu[(slope)]")  # takes a slope

# layers whose argument is a whole architecture (parsed into a model), not numbers
BLOCK_LAYERS: set[str] = set()

_TOKEN = re.compile(r"^\s*([a-z][a-z0-9_]*)\s*(?:\((.*)\))?\s*$")
_KEYWORD = re.compile(r"^\s*([a-z_][a-z0-9_]*)\s*=\s*(.*?)\s*$")
_WORD = re.compile(r"^[a-z_][a-z0-9_]*$")
# The deepest nesting of parentheses an architecture may have (``residual(residual(...))``);
# deeper texts are refused before parsing (each level is a parse and a serial of its own).
MAX_NESTING = 16


def register(name: str, constructor: Callable[..., Layer], usage: str, *,
             block: bool = False) -> None:
    """Make ``name(args...)`` build ``constructor(*args, **keywords)`` in :func:`parse_model`.

    A name already registered is replaced.

    Args:
      name: the layer's name in architecture texts.
      constructor: builds the :class:`~jaxprop.Layer` from the parsed arguments.
      usage: how to write the layer (``"dropout(rate)"``), shown in error messages.
      block: with ``block=True``, ``name(architecture)`` builds ``constructor(model)``, the
        architecture parsed into a model; numbers before it are passed first
        (``repeat(4,architecture)`` builds ``constructor(4, model)``).

    Returns:
      ``None``; :func:`parse_model` knows ``name`` from then on (``LAYER_SPECS``).
    """
    LAYER_SPECS[name] = (constructor, usage)
    (BLOCK_LAYERS.add if block else BLOCK_LAYERS.discard)(name)


def _conv(features, kernel, stride=1, *, padding="same", dilation=1, bias=1):
    return Conv2D(features, kernel, strides=stride, padding=padding, dilation=dilation,
                  use_bias=_flag(bias, "bias"))


def _pool(layer):
    def make(window, stride=None, *, padding="valid"):
        return layer(window, stride, padding=padding)

    return make


def _reshape(*shape, in_ndim=1):
    return Reshape(shape, in_ndim=in_ndim)


def _residual(block: Model) -> Layer:
    return Residual(_one(block))


def _one(block: Model) -> Layer:
    """A parsed block: its only layer, or the model of several."""
    return block.layers[0] if len(block.layers) == 1 else block


def _repeat(n, block: Model) -> Layer:
    return Repeat(n, _one(block))


def _attention(heads, *, head_dim=None, dropout=0.0, bias=1):
    return CausalSelfAttention(heads, head_dim=head_dim, dropout=dropout,
                               use_bias=_flag(bias, "bias"))


def _flag(value, name):
    if value not in (0, 1):
        raise ValueError(f"{name} must be 0 or 1, got {value!r}")
    return bool(value)


for _name, _make, _usage in (
    ("conv", _conv, "conv(features,kernel[,stride][,padding=same|valid|n][,dilation=n]"
                    "[,bias=0|1])"),
    ("maxpool", _pool(MaxPool2D), "maxpool(k[,stride][,padding=valid|same|n])"),
    ("avgpool", _pool(AvgPool2D), "avgpool(k[,stride][,padding=valid|same|n])"),
    ("flatten", Flatten, "flatten[(ndim)]"),
    ("reshape", _reshape, "reshape(d1,...,dk[,in_ndim=n])"),
    ("layernorm", LayerNorm, "layernorm[(eps=e)]"),
    ("batchnorm", BatchNorm, "batchnorm[(momentum=m,eps=e)]"),
    ("dropout", Dropout, "dropout(rate)"),
    ("embed", Embedding, "embed(vocab,features)"),
    ("posembed", PositionalEmbedding, "posembed(max_len)"),
    ("attention", _attention, "attention(heads[,head_dim=d][,dropout=rate][,bias=0|1])"),
):
    register(_name, _make, _usage)
register("residual", _residual, "residual(layers)", block=True)
register("repeat", _repeat, "repeat(n,layers)", block=True)


def usages() -> list[str]:
    """How to write each registered layer (``"dense(n)"``, ...), for error messages."""
    return [usage for _, usage in LAYER_SPECS.values()]


def known() -> str:
    """The registered layers' usages, for error messages."""
    return ", ".join(usages())


def _number(text: str, where: str):
    text = text.strip()
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{where}: {text!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"{where}: {text!r} is not a finite number")
    return value


def check_parentheses(text: str) -> None:
    """``ValueError`` unless ``text``'s parentheses balance and nest at most ``MAX_NESTING``
    deep."""
    depth = deepest = 0
    for i, ch in enumerate(text):
        depth += (ch == "(") - (ch == ")")
        if depth < 0:
            raise ValueError(f"architecture {_excerpt(text)}: unbalanced ')' at character "
                             f"{i + 1}")
        deepest = max(deepest, depth)
    if depth:
        raise ValueError(f"architecture {_excerpt(text)}: {depth} '(' never closed")
    if deepest > MAX_NESTING:
        raise ValueError(f"architecture {_excerpt(text)}: parentheses nest {deepest} deep; "
                         f"at most {MAX_NESTING} (e.g. residual(...) inside residual(...))")


def _excerpt(text: str, width: int = 60) -> str:
    return repr(text if len(text) <= width else text[:width - 3] + "...")


def split_spec(text: str, sep: str = "-") -> list[str]:
    """``"conv(16,3)-relu"`` -> ``["conv(16,3)", "relu"]`` (a ``sep`` inside parentheses
    stays)."""
    parts, depth, current = [], 0, ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == sep and depth == 0:
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
    make, usage = lookup(LAYER_SPECS, name, "layer", known=usages(),
                         where=" in the architecture", known_as="known layers")
    where = f"layer {text.strip()!r}"
    if name in BLOCK_LAYERS:
        if args is None or not args.strip():
            raise ValueError(f"{where}: give the layers inside (usage: {usage})")
        *numbers, inner = split_spec(args, ",")  # repeat(4,...): numbers, then the layers
        values, block = [_number(n, where) for n in numbers], parse_model(inner)
        try:
            return make(*values, block)
        except (TypeError, ValueError) as e:
            message = re.sub(r"^\w+\(\) ", "", str(e))
            raise ValueError(f"{where}: {message} (usage: {usage})") from None
    values, keywords = [], {}
    for arg in ([] if args is None or not args.strip() else split_spec(args, ",")):
        kw = _KEYWORD.match(arg)
        if kw is None:
            values.append(_number(arg, where))
        else:
            if kw.group(1) in keywords:
                raise ValueError(f"{where}: keyword {kw.group(1)} is given twice "
                                 f"(usage: {usage})")
            word = kw.group(2).lower()
            keywords[kw.group(1)] = word if _WORD.match(word) else _number(word, where)
    try:
        return make(*values, **keywords)
    except (TypeError, ValueError) as e:
        message = re.sub(r"^\w+\(\) ", "", str(e))  # "_conv() missing ..." -> "missing ..."
        raise ValueError(f"{where}: {message} (usage: {usage})") from None


def parse_model(text: str, in_shape: Sequence[int] | None = None) -> Model:
    """The model that ``text`` describes, e.g. ``parse_model("dense(64)-relu-dense(10)",
    (64,))``; ``in_shape`` is one example's shape."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"an architecture is a non-empty text like 'dense(64)-relu-dense(10)'; "
                         f"got {text!r}")
    check_parentheses(text)
    layers = [parse_layer(part) for part in split_spec(text)]
    return serial(*layers, in_shape=in_shape)
