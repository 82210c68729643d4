"""Save a trained model and load it back: the architecture as text, the params as arrays.

>>> jp.save("model.npz", model, params, classes=["cat", "dog"], mean=mean)
>>> model, params, extra = jp.load("model.npz")      # extra == {"classes": [...], "mean": ...}

The file is an ``.npz`` archive read with ``allow_pickle=False`` (nothing in it can run code):
every leaf of the params (and of the model state) as an array, plus a JSON header::

    {"format": "jaxprop-model", "version": 1, "spec": "dense(4)-tanh-dense(1)-identity",
     "in_shape": [2], "dtype": "float32", "trees": {"params": {...}, "state": {...}},
     "extra": {...}, "extra_arrays": {"mean": "extra/mean"}}

``spec`` is ``model.spec``, the text :func:`jaxprop.parse_model` rebuilds the model from, so
any model made of registered layers comes back by itself -- your own too, registered with
:func:`jaxprop.register_layer`: the header's ``"layer_modules"`` (``{"swish": "my_layers"}``)
names the module that registers each, and :func:`load` imports it when the name is unknown
(a module on the path, as ``pickle`` finds classes; nothing in the file itself runs). A model
with unregistered layers of your own has no spec (``None``): pass it to :func:`load`
(``jp.load(path, model=model)``). ``extra``
keyword arguments are arrays (stored as arrays) or JSON values (numbers, strings, lists,
dicts; tuples come back as lists). A model with state (BatchNorm statistics) saves it with
``state=...`` and gets it back as ``extra["state"]``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import jax
import numpy as np

from jaxprop.checkpoint import flatten_tree, read_npz, restore_tree, write_npz
from jaxprop.core.validate import is_int

FORMAT = "jaxprop-model"
VERSION = 1


def save(path: str | os.PathLike, model, params, *, state=None, **extra) -> Path:
    """Write ``model``'s architecture, ``params`` (and ``state``) and ``extra`` to ``path``.

    Args:
      path: the file to write (``.npz``; atomic, like checkpoints).
      model: a :class:`~jaxprop.Model` with an input shape (``jp.mlp``, ``jp.serial(...,
        in_shape=...)``, ``jp.parse_model(text, in_shape)``).
      params: its params; state: its state, for a model with state.
      **extra: anything else to keep with the model: arrays, or JSON values.

    Returns:
      the file's path.
    """
    path = Path(path)
    in_shape = getattr(model, "in_shape", None)
    if in_shape is None:
        raise ValueError("jp.save: the model has no input shape; build it with in_shape=... "
                         "(jp.serial(..., in_shape=(4,)) or jp.parse_model(text, (4,)))")
    trees, arrays = {}, {}
    trees["params"], a = flatten_tree("params", params)
    arrays.update(a)
    if state is not None:
        trees["state"], a = flatten_tree("state", state)
        arrays.update(a)
    leaves = list(arrays.values())
    dtype = str(np.result_type(*leaves)) if leaves else None
    header_extra, extra_arrays = {}, {}
    for name, value in extra.items():
        if isinstance(value, (np.ndarray, jax.Array)):
            a = np.asarray(value)
            if a.dtype == object:
                raise ValueError(f"jp.save: extra {name!r} is an array of Python objects; "
                                 "store numbers or strings")
            arrays[f"extra/{name}"] = a
            extra_arrays[name] = f"extra/{name}"
        else:
            try:
                json.dumps(value)
            except (TypeError, ValueError) as e:
                raise ValueError(f"jp.save: extra {name!r} is neither an array nor a JSON value "
                                 f"({e})") from None
            header_extra[name] = value
    spec = getattr(model, "spec", None)
    header = {"format": FORMAT, "version": VERSION, "spec": spec,
              "in_shape": list(in_shape), "dtype": dtype, "trees": trees,
              "extra": header_extra, "extra_arrays": extra_arrays}
    modules = {} if spec is None else user_layer_modules(spec)
    if modules:
        header["layer_modules"] = modules
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_npz(path, arrays, header)


def load(path: str | os.PathLike, model=None):
    """``(model, params, extra)`` from a file :func:`save` wrote.

    ``model``: the model to load into (required when it was saved without a spec, i.e. has
    layers of your own); by default the architecture is rebuilt from the file. The params are
    checked against the model's (every leaf's path and shape). Raises ``FileNotFoundError``
    for a missing file and ``ValueError`` naming the file for anything it cannot read.
    """
    from jaxprop.core.spec import parse_model

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no saved model at {path}")
    header, arrays = read_npz(path, FORMAT, "model file")
    if header.get("version") != VERSION:
        raise ValueError(f"{path}: model file version {header.get('version')!r} is not "
                         f"supported (this jaxprop reads version {VERSION})")
    try:
        in_shape = tuple(header["in_shape"])
        if not all(is_int(d) and d > 0 for d in in_shape):
            raise ValueError(f"in_shape {header['in_shape']!r} is not a list of sizes")
        trees, spec = header["trees"], header.get("spec")
        extra = dict(header.get("extra") or {})
        extra_arrays = dict(header.get("extra_arrays") or {})
        if not all(isinstance(v, str) for v in extra_arrays.values()):
            raise ValueError("extra_arrays does not name arrays")
        params_entry = trees["params"]
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path}: corrupt model header ({e})") from None
    if model is None:
        if spec is None:
            raise ValueError(f"{path}: saved from a model with layers of its own (no textual "
                             "spec); pass it: jp.load(path, model=model)")
        import_layers(path, spec, header.get("layer_modules"))
        try:
            model = parse_model(spec, in_shape)
        except ValueError as e:
            raise ValueError(f"{path}: cannot rebuild the architecture {spec!r} ({e}); if it "
                             "has layers of your own, import the module that registers them "
                             "(jp.register_layer) or pass the model: jp.load(path, "
                             "model=model)") from None
    params_t, state_t, _ = jax.eval_shape(lambda k: model.init(k, in_shape), jax.random.key(0))
    where = str(path)
    params = restore_tree(where, "params", params_entry, arrays, params_t)
    if "state" in trees:
        extra["state"] = restore_tree(where, "state", trees["state"], arrays, state_t)
    elif jax.tree.leaves(state_t):
        raise ValueError(f"{path}: the model has state (e.g. BatchNorm statistics) but the file "
                         "holds none; save it with jp.save(..., state=state)")
    for name, key in extra_arrays.items():
        if key not in arrays:
            raise ValueError(f"{path}: corrupt model file (no array for extra {name!r})")
        extra[name] = arrays[key]
    return model, params, extra


def user_layer_modules(spec: str) -> dict[str, str]:
    """``{name: module}`` for the layers of ``spec`` registered with
    :func:`jaxprop.register_layer`."""
    from jaxprop.core.spec import USER_LAYERS, layer_names

    return {name: USER_LAYERS[name] for name in layer_names(spec) if name in USER_LAYERS}


def import_layers(path, spec: str, modules,
                  otherwise: str = "pass the model: jp.load(path, model=model)") -> None:
    """Import the modules that register the layers of ``spec`` this process does not know
    (``modules``: ``{name: module}`` as :func:`user_layer_modules` gave when it was saved;
    ``otherwise``: the way out an error offers besides making the module importable)."""
    from jaxprop.core.spec import LAYER_SPECS, layer_names
    from jaxprop.imports import import_source

    if not isinstance(modules, dict):
        return  # saved before layer_modules, or without layers of one's own
    for name in dict.fromkeys(layer_names(spec)):
        module = modules.get(name)
        if name in LAYER_SPECS or not isinstance(module, str):
            continue
        if module == "__main__":
            raise ValueError(f"{path}: layer {name!r} was registered by a script (__main__); "
                             f"run its jp.register_layer({name!r}, ...) before jp.load, or "
                             "move it into a module")
        try:
            import_source(module, "import")
        except ValueError as e:
            raise ValueError(f"{path}: layer {name!r} comes from module {module!r}, which did "
                             f"not import ({str(e).removeprefix('import: ')}); make it "
                             f"importable or {otherwise}") from None
        if name not in LAYER_SPECS:
            raise ValueError(f"{path}: module {module!r} was imported but registers no layer "
                             f"{name!r} (jp.register_layer)")
