"""Checkpoints: a :class:`~jaxprop.train.TrainState` and its config in one ``.npz`` file.

Format (version 2): every leaf of ``params``, ``opt_state`` and ``model_state`` (the model's
per-layer state, e.g. BatchNorm statistics) is an array named ``params/0``, ``opt_state/3``,
``model_state/1``, ...; the PRNG key is stored as its raw ``key_data`` (``key``); ``__header__``
is a uint8 array holding UTF-8 JSON::

    {"format": "jaxprop-checkpoint", "version": 2, "epoch": int, "config": {...},
     "key_impl": "threefry2x32",
     "trees": {"params": {"treedef": str, "leaves": [{"path", "name", "shape", "dtype"}]},
               "opt_state": {...}, "model_state": {...}}}

Version 1 (no ``model_state``) still loads for models without state; for a model with state
it is refused with an error naming the version.

``path`` is ``jax.tree_util.keystr`` of each leaf, so a file can be read and checked against a
template (fresh params and optimizer state built from the config) without pickling any code:
``np.load(allow_pickle=False)``. Saving is atomic: the file is written to a temporary file in
the same directory, flushed and fsync'ed, then ``os.replace``'d over the old one, so a crash
mid-save leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxprop.train.step import TrainState

FORMAT = "jaxprop-checkpoint"
VERSION = 2
READABLE_VERSIONS = (1, 2)
TREES = ("params", "opt_state", "model_state")
FILENAME = "checkpoint.npz"


def _flatten(prefix: str, tree) -> tuple[dict, dict[str, np.ndarray]]:
    path_leaves, treedef = jax.tree_util.tree_flatten_with_path(tree)
    entries, arrays = [], {}
    for i, (path, leaf) in enumerate(path_leaves):
        a = np.asarray(jax.device_get(leaf))
        name = f"{prefix}/{i}"
        arrays[name] = a
        entries.append({"path": jax.tree_util.keystr(path), "name": name,
                        "shape": list(a.shape), "dtype": str(a.dtype)})
    return {"treedef": str(treedef), "leaves": entries}, arrays


def save(path: str | os.PathLike, state: TrainState, config: dict | None = None) -> Path:
    """Write ``state`` (params, optimizer and model state, key, epoch) and ``config`` to ``path``.

    ``path`` is a file, or a directory (then ``path/checkpoint.npz``). Atomic; returns the file.
    """
    path = Path(path)
    if path.is_dir() or not path.suffix:
        path = path / FILENAME
    path.parent.mkdir(parents=True, exist_ok=True)
    trees, arrays = {}, {}
    for name in TREES:
        trees[name], a = _flatten(name, getattr(state, name))
        arrays.update(a)
    key = state.key
    key_impl = None
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key_impl = str(jax.random.key_impl(key))
        key = jax.random.key_data(key)
    arrays["key"] = np.asarray(key)
    header = {"format": FORMAT, "version": VERSION, "epoch": int(state.epoch),
              "config": config or {}, "key_impl": key_impl, "trees": trees}
    arrays["__header__"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)

    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass
    return path


class Checkpoint:
    """A loaded checkpoint: ``header``, ``epoch``, ``config`` and the raw arrays.

    ``restore(template)`` rebuilds a :class:`TrainState` with ``template``'s tree structure.
    """

    def __init__(self, path: Path, header: dict, arrays: dict[str, np.ndarray]):
        self.path, self.header, self.arrays = path, header, arrays
        self.epoch: int = int(header["epoch"])
        self.config: dict = header.get("config") or {}

    def _tree(self, name: str, template) -> Any:
        entry = self.header["trees"][name]
        path_leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
        paths = [jax.tree_util.keystr(p) for p, _ in path_leaves]
        saved = [leaf["path"] for leaf in entry["leaves"]]
        if paths != saved:
            raise ValueError(
                f"{self.path}: the saved {name} do not match this model/optimizer "
                f"(saved leaves {saved[:4]}..., expected {paths[:4]}...)"
            )
        leaves = []
        for (p, tmpl), leaf in zip(path_leaves, entry["leaves"]):
            a = self.arrays[leaf["name"]]
            if tuple(a.shape) != tuple(np.shape(tmpl)):
                raise ValueError(
                    f"{self.path}: {name}{leaf['path']} has shape {tuple(a.shape)}, "
                    f"expected {tuple(np.shape(tmpl))}"
                )
            leaves.append(jnp.asarray(a))
        return jax.tree_util.tree_unflatten(treedef, leaves)

    def restore(self, template: TrainState) -> TrainState:
        """A :class:`TrainState` from the file, structured like ``template``."""
        params = self._tree("params", template.params)
        opt_state = self._tree("opt_state", template.opt_state)
        if "model_state" in self.header["trees"]:
            model_state = self._tree("model_state", template.model_state)
        elif jax.tree.leaves(template.model_state):
            raise ValueError(
                f"{self.path}: checkpoint format version {self.header.get('version')} holds no "
                "model state, but this model has state (e.g. BatchNorm statistics)"
            )
        else:
            model_state = template.model_state
        key = jnp.asarray(self.arrays["key"])
        if self.header.get("key_impl"):
            key = jax.random.wrap_key_data(key, impl=self.header["key_impl"])
        return TrainState(params, opt_state, key, jnp.asarray(self.epoch, jnp.int32),
                          model_state)


def load(path: str | os.PathLike) -> Checkpoint:
    """Read a checkpoint file (or ``DIR/checkpoint.npz``).

    Raises ``FileNotFoundError`` if it is missing and ``ValueError`` naming the file when it is
    truncated, corrupt, or not a jaxprop checkpoint.
    """
    path = Path(path)
    if path.is_dir():
        path = path / FILENAME
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {name: z[name] for name in z.files}
    except (zipfile.BadZipFile, EOFError, ValueError, OSError, KeyError) as e:
        raise ValueError(
            f"{path}: not a readable checkpoint (truncated or corrupt file: {e})"
        ) from None
    if "__header__" not in arrays:
        raise ValueError(f"{path}: not a jaxprop checkpoint (no __header__ entry)")
    try:
        header = json.loads(arrays.pop("__header__").tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: corrupt checkpoint header ({e})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ValueError(f"{path}: not a jaxprop checkpoint (format {header.get('format')!r})"
                         if isinstance(header, dict) else f"{path}: not a jaxprop checkpoint")
    if header.get("version") not in READABLE_VERSIONS:
        raise ValueError(
            f"{path}: checkpoint format version {header.get('version')!r} is not supported "
            f"(this jaxprop reads versions {', '.join(map(str, READABLE_VERSIONS))})"
        )
    try:
        names = [leaf["name"] for tree in header["trees"].values() for leaf in tree["leaves"]]
        int(header["epoch"])
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path}: corrupt checkpoint header (missing {e})") from None
    missing = [n for n in names + ["key"] if n not in arrays]
    if missing:
        raise ValueError(f"{path}: checkpoint is missing arrays {missing[:5]}")
    return Checkpoint(path, header, arrays)
