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

Your own layers join them with :func:`register_layer`: ``jp.register_layer("swish", Swish)``
makes ``"dense(8)-swish(2.0)-dense(1)"`` parse, the layers it builds carry their text in
``Layer.spec`` (so ``jp.save``/``jp.load`` rebuild them), and :data:`USER_LAYERS` remembers the
module that registered each name (``jp.load`` imports it; ``--import`` at the command line).
"""

from __future__ import annotations

import dataclasses
import inspect
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
# layers registered with register_layer: name -> the module that registered it
USER_LAYERS: dict[str, str] = {}
# register_layer's own argument readers: name -> (text inside the parentheses -> (args, kwargs))
ARGUMENT_PARSERS: dict[str, Callable[[str], tuple[tuple, dict]]] = {}

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
        values = [_number(n, where) for n in numbers]
        return _build(make, (*values, parse_model(inner)), {}, where, usage)
    if name in ARGUMENT_PARSERS:
        values, keywords = _user_arguments(name, args or "", where, usage)
        return _build(make, values, keywords, where, usage)
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
    return _build(make, values, keywords, where, usage)


def _build(make, values, keywords, where: str, usage: str) -> Layer:
    try:
        return make(*values, **keywords)
    except (TypeError, ValueError) as e:
        message = re.sub(r"^\w+\(\) ", "", str(e))  # "_conv() missing ..." -> "missing ..."
        raise ValueError(f"{where}: {message} (usage: {usage})") from None


def _user_arguments(name: str, text: str, where: str, usage: str) -> tuple[tuple, dict]:
    """``(args, kwargs)`` from a registered layer's own ``parse``; one ``ValueError``."""
    try:
        values, keywords = ARGUMENT_PARSERS[name](text)
        return tuple(values), dict(keywords)
    except Exception as e:  # noqa: BLE001 - the user's parser: one line
        raise ValueError(f"{where}: {type(e).__name__}: {e} (usage: {usage})") from None


def parse_model(text: str, in_shape: Sequence[int] | None = None) -> Model:
    """The model that ``text`` describes, e.g. ``parse_model("dense(64)-relu-dense(10)",
    (64,))``; ``in_shape`` is one example's shape."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"an architecture is a non-empty text like 'dense(64)-relu-dense(10)'; "
                         f"got {text!r}")
    check_parentheses(text)
    layers = [parse_layer(part) for part in split_spec(text)]
    return serial(*layers, in_shape=in_shape)


def layer_names(text: str) -> list[str]:
    """Every layer name an architecture text uses, inside ``residual(...)`` too, in order."""
    names = []
    for part in split_spec(text):
        m = _TOKEN.match(part)
        if m is None:
            continue
        names.append(m.group(1))
        if m.group(1) in BLOCK_LAYERS and m.group(2):
            names += layer_names(m.group(2))
    return names


def _format_argument(value) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise TypeError(f"argument {value!r} cannot be written in an architecture text")
    if isinstance(value, str):
        if not _WORD.match(value.lower()):
            raise TypeError(f"argument {value!r} is not a word (letters, digits, _)")
        return value.lower()
    if not math.isfinite(value):
        raise TypeError(f"argument {value!r} is not finite")
    return repr(value)


def format_layer(name: str, args: Sequence = (), kwargs: dict | None = None) -> str:
    """``"swish(2.0)"``: the text :func:`parse_layer` reads back into ``name(*args,
    **kwargs)`` (numbers, and words as keyword values); ``TypeError`` for anything else."""
    parts = [_format_argument(a) for a in args]
    parts += [f"{key}={_format_argument(value)}" for key, value in (kwargs or {}).items()]
    return f"{name}({','.join(parts)})" if parts else name


def _signature_usage(name: str, factory: Callable) -> str:
    """``"swish[(beta)]"`` from the factory's signature (``name(...)`` when it has none)."""
    try:
        params = list(inspect.signature(factory).parameters.values())
    except (TypeError, ValueError):
        return f"{name}(...)"
    required = [p.name for p in params if p.default is p.empty
                and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    optional = [p.name for p in params if p.default is not p.empty]
    if not required:
        return f"{name}[({','.join(optional)})]" if optional else name
    return f"{name}({','.join(required)}{''.join(f'[,{o}]' for o in optional)})"


def register_layer(name: str, factory: Callable[..., Layer], *,
                   parse: Callable[[str], tuple[tuple, dict]] | None = None,
                   spec: Callable[..., str] | None = None, usage: str | None = None,
                   module: str | None = None) -> Callable[..., Layer]:
    """Make your own layer first-class: ``name(args)`` in architecture texts (``--model``,
    :func:`parse_model`), saved and loaded by its text, checked like a built-in one.

    ``factory(*args, **kwargs)`` builds the :class:`~jaxprop.Layer`; numbers in the text are
    its arguments (``swish(2.0)`` -> ``factory(2.0)``). The layers built carry their text in
    ``Layer.spec``: ``spec(*args, **kwargs)`` when given, else ``name(arg,...,key=value)``.
    Registering a name again from the same module replaces it (a re-run notebook cell).

    Args:
      name: the layer's name in texts: lower case letters, digits and ``_``; not a built-in.
      factory: builds the layer from the parsed arguments.
      parse: reads the text inside the parentheses (``""`` without) into ``(args, kwargs)``,
        for an argument syntax of your own; default: numbers and ``key=value``.
      spec: the text that rebuilds ``factory(*args, **kwargs)`` (parsed back by ``parse``).
      usage: how to write the layer, shown in errors (default: from the factory's signature).
      module: the module :func:`jaxprop.load` imports to rebuild the layer (default: the
        factory's ``__module__``).

    Returns:
      ``factory`` wrapped so that its layers carry their text: use it in Python
      (``Swish = jp.register_layer("swish", make_swish)``; ``Swish(2.0).spec == "swish(2.0)"``).
    """
    if not isinstance(name, str) or not _WORD.match(name) or name != name.lower():
        raise ValueError(f"register_layer: the name must be lower case letters, digits and _ "
                         f"starting with a letter, got {name!r}")
    if not callable(factory):
        raise ValueError(f"register_layer({name!r}): factory must be callable, got "
                         f"{type(factory).__name__}")
    module = module or getattr(factory, "__module__", None) or "__main__"
    if name in LAYER_SPECS and name not in USER_LAYERS:
        raise ValueError(f"register_layer: {name!r} is a built-in layer; choose another name")
    if USER_LAYERS.get(name, module) != module:
        raise ValueError(f"register_layer: {name!r} is already registered by module "
                         f"{USER_LAYERS[name]!r}; choose another name")
    usage = usage or _signature_usage(name, factory)

    def build(*args, **kwargs) -> Layer:
        layer = factory(*args, **kwargs)
        if not isinstance(layer, Layer):
            raise ValueError(f"{name}: the registered factory returned a "
                             f"{type(layer).__name__}, not a jaxprop Layer")
        try:
            text = spec(*args, **kwargs) if spec is not None else format_layer(name, args,
                                                                              kwargs)
        except TypeError as e:
            raise ValueError(f"{name}: {e}; give register_layer(..., spec=...) to write it "
                             "as text") from None
        return dataclasses.replace(layer, spec=text)

    build.__name__ = getattr(factory, "__name__", name)
    build.__doc__ = getattr(factory, "__doc__", None)
    register(name, build, usage)
    if parse is None:
        ARGUMENT_PARSERS.pop(name, None)
    else:
        ARGUMENT_PARSERS[name] = parse
    USER_LAYERS[name] = module
    return build
