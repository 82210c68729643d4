"""Checkpoints: a :class:`~jaxprop.train.TrainState` and its config in one ``.npz`` file.

Format (version 2): every leaf of ``params``, ``opt_state`` and ``model_state`` (the model's
per-layer state, e.g. BatchNorm statistics) is an array named ``params/0``, ``opt_state/3``,
``model_state/1``, ...; the PRNG key is stored as its raw ``key_data`` (``key``); ``__header__``
is a uint8 array holding UTF-8 JSON::

    {"format": "jaxprop-checkpoint", "version": 2, "epoch": int, "config": {...},
     "key_impl": "threefry2x32",
     "trees": {"params": {"treedef": str, "leaves": [{"path", "name", "shape", "dtype"}]},
               "opt_state": {...}, "model_state": {...}},
     "history": [{"epoch", "train_loss", ...}, ...]}

Optionally the run's history travels with the state, so a run folder can always be rebuilt
from its checkpoint: ``losses`` (an array, the training loss of every epoch ``1..epoch``) and
the header's ``history`` (the logged records). Files without them still load.

Version 1 (no ``model_state``) still loads for models without state; for a model with state
it is refused with an error naming the version.

``path`` is ``jax.tree_util.keystr`` of each leaf, so a file can be read and checked against a
template (fresh params and optimizer state built from the config) without pickling any code:
``np.load(allow_pickle=False)``. Saving is atomic: the file is written to a temporary file in
the same directory (``.checkpoint.npz.*.tmp``), flushed and fsync'ed, then ``os.replace``'d over
the old one, so a crash mid-save leaves the previous checkpoint intact;
:func:`remove_stale_temporaries` deletes what a killed save left behind.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import threading
import zipfile
from pathlib import Path
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxprop.core.validate import is_int
from jaxprop.train.step import TrainState

FORMAT = "jaxprop-checkpoint"
VERSION = 2
READABLE_VERSIONS = (1, 2)
TREES = ("params", "opt_state", "model_state")
FILENAME = "checkpoint.npz"
TMP_SUFFIX = ".tmp"
_UMASK_LOCK = threading.Lock()
_SET_UMASK: list[int] = []  # the umask, read once by setting it, where /proc cannot tell


# --------------------------------------------------------------------------------------------
# Pytrees as named arrays (shared with jaxprop.saving)


def flatten_tree(prefix: str, tree) -> tuple[dict, dict[str, np.ndarray]]:
    """``(entry, arrays)``: the leaves of ``tree`` as arrays ``prefix/0``, ``prefix/1``, ...
    and the header entry ``{"treedef", "leaves": [{"path", "name", "shape", "dtype"}]}``."""
    path_leaves, treedef = jax.tree_util.tree_flatten_with_path(tree)
    entries, arrays = [], {}
    for i, (path, leaf) in enumerate(path_leaves):
        a = np.asarray(jax.device_get(leaf))
        name = f"{prefix}/{i}"
        arrays[name] = a
        entries.append({"path": jax.tree_util.keystr(path), "name": name,
                        "shape": list(a.shape), "dtype": str(a.dtype)})
    return {"treedef": str(treedef), "leaves": entries}, arrays


def restore_tree(where: str, what: str, entry: dict, arrays: dict, template) -> Any:
    """The tree ``what`` saved as ``entry`` (:func:`flatten_tree`), structured like ``template``.

    A ``ValueError`` naming ``where`` when the leaves' paths or shapes differ, or a float64 leaf
    cannot be held without x64.

    Args:
      where: the file, named in error messages.
      what: the tree's name (``"params"``, ``"opt_state"``, ...), named in error messages.
      entry: the tree's header entry ``{"treedef", "leaves": [{"path", "name", ...}]}``.
      arrays: the file's arrays by name.
      template: a tree of arrays or ``jax.ShapeDtypeStruct`` with the expected structure,
        leaf paths and shapes.

    Returns:
      ``template``'s structure with the saved arrays as its leaves (``jnp`` arrays).
    """
    path_leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
    paths = [jax.tree_util.keystr(p) for p, _ in path_leaves]
    try:
        saved = [leaf["path"] for leaf in entry["leaves"]]
        names = [leaf["name"] for leaf in entry["leaves"]]
    except (KeyError, TypeError) as e:
        raise ValueError(f"{where}: corrupt header (the {what} entry lacks {e})") from None
    if paths != saved:
        raise ValueError(
            f"{where}: the saved {what} do not match this model/optimizer "
            f"(saved leaves {saved[:4]}..., expected {paths[:4]}...)"
        )
    leaves = []
    for (_, tmpl), path, name in zip(path_leaves, saved, names):
        shape = tuple(tmpl.shape) if hasattr(tmpl, "shape") else np.shape(tmpl)
        a = _member(where, what + path, arrays, name, shape)
        if tuple(a.shape) != tuple(shape):
            raise ValueError(f"{where}: {what}{path} has shape {tuple(a.shape)}, expected "
                             f"{tuple(shape)}")
        _check_dtype(where, what + path, a.dtype, np.dtype(tmpl.dtype))
        if a.dtype == np.float64 and not jax.config.jax_enable_x64:
            raise ValueError(f"{where}: {what}{path} is float64; enable float64 first "
                             "(jax.config.update('jax_enable_x64', True))")
        leaves.append(jnp.asarray(a))
    return jax.tree_util.tree_unflatten(treedef, leaves)


def file_mode() -> int:
    """The mode ``open()`` gives a new file now: ``0o666`` less the process's umask
    (``mkstemp``'s temporaries are ``0o600``)."""
    return 0o666 & ~_umask()


def _umask() -> int:
    """The process's umask, read when a file is written (not at import: importing jaxprop
    changes nothing process-wide). Linux says it in ``/proc/self/status``; elsewhere
    ``os.umask`` is the only reader, and it sets the umask to read it: done once, at the first
    write, under a lock, and put back at once (another thread creating a file in that instant
    would get 0o022)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        if not _SET_UMASK:
            mask = os.umask(0o022)
            os.umask(mask)
            _SET_UMASK.append(mask)
    return _SET_UMASK[0]


def write_atomic(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically: a temporary file ``.NAME.*.tmp`` in the same
    folder, fsync'ed, then renamed over ``path`` (the rename made durable too): a reader sees
    the old file or the new one, never half of one, even after a kill or a power cut."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, file_mode())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
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


def _member(where: str, leaf: str, arrays, name, shape) -> np.ndarray:
    """The array ``name`` that holds ``leaf`` (of ``shape``), read only when its size fits."""
    if not isinstance(name, str) or name not in arrays:
        raise ValueError(f"{where}: corrupt file (no array {name!r} for {leaf})")
    if isinstance(arrays, NpzMembers):  # refuse to inflate what cannot be the leaf
        most = int(np.prod(shape, dtype=np.int64)) * 16 + NPY_HEADER_SLACK
        if arrays.member_size(name) > most:
            raise ValueError(f"{where}: corrupt file ({leaf}'s array {name!r} holds "
                             f"{arrays.member_size(name):,} bytes; a {shape} leaf takes at "
                             f"most {most:,})")
    return arrays[name]


def _check_dtype(where: str, leaf: str, saved: np.dtype, expected: np.dtype) -> None:
    """``ValueError`` unless a leaf saved as ``saved`` can be the ``expected`` leaf: the same
    dtype, or float32 and float64 for one another (a model trained in float64 loads into
    float32 params under x64, and the other way)."""
    floats = (np.dtype(np.float32), np.dtype(np.float64))
    if saved == expected or (saved in floats and expected in floats):
        return
    raise ValueError(f"{where}: {leaf} is {saved}, expected {expected}")


def write_npz(path: Path, arrays: dict[str, np.ndarray], header: dict) -> Path:
    """Write ``arrays`` and the JSON ``header`` (as ``__header__``) to ``path`` with
    :func:`write_atomic`."""
    arrays = {**arrays, "__header__": np.frombuffer(json.dumps(header).encode(), np.uint8)}
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return write_atomic(path, buf.getvalue())


# The largest JSON header a file may have (a history of 100,000 records is some 20 MB).
MAX_HEADER_BYTES = 64 << 20
# What a member may hold beyond its declared shape and dtype: the .npy header.
NPY_HEADER_SLACK = 4096


class NpzMembers(Mapping):
    """The arrays of an ``.npz`` archive by name, each read (and decompressed) only when it is
    asked for, so a member no header names is never inflated (a zip bomb stays on disk).

    ``member_size(name)`` is a member's uncompressed size in bytes, from the archive's
    directory (reading nothing). A member that cannot be read raises ``ValueError`` naming the
    file.
    """

    def __init__(self, path: Path, what: str):
        self.path, self.what = path, what
        with zipfile.ZipFile(path) as zf:
            self._sizes = {i.filename[:-4]: i.file_size for i in zf.infolist()
                           if i.filename.endswith(".npy")}
        self._read: dict[str, np.ndarray] = {}

    def member_size(self, name: str) -> int:
        return self._sizes[name]

    def __contains__(self, name) -> bool:  # (Mapping's own would read the member)
        return name in self._sizes

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._read:
            if name not in self._sizes:
                raise KeyError(name)
            self._read[name] = self._load(name)
        return self._read[name]

    def _load(self, name: str) -> np.ndarray:
        try:
            with zipfile.ZipFile(self.path) as zf, zf.open(name + ".npy") as f:
                return np.lib.format.read_array(f, allow_pickle=False)
        except (zipfile.BadZipFile, EOFError, ValueError, OSError, KeyError) as e:
            if "pickle" in str(e):  # an object array; np.load's advice is not ours to give
                e = "it holds Python objects, and jaxprop never loads pickles"
            raise ValueError(f"{self.path}: not a readable {self.what} (truncated or corrupt "
                             f"file: member {name!r}: {e})") from None

    def __iter__(self):
        return iter(self._sizes)

    def __len__(self) -> int:
        return len(self._sizes)


def read_npz(path: Path, fmt: str, what: str) -> tuple[dict, NpzMembers]:
    """``(header, arrays)`` of a file :func:`write_npz` wrote with ``header["format"] == fmt``;
    ``arrays`` (:class:`NpzMembers`) reads each array when it is first asked for.

    Raises ``ValueError`` naming ``path`` for anything else: not an ``.npz`` archive (a pickle,
    a text file), truncated, no or corrupt header, another format. Never unpickles.
    """
    try:
        with open(path, "rb") as f:
            magic = f.read(6)
    except OSError as e:
        raise ValueError(f"{path}: cannot read the {what} ({e.strerror or e})") from None
    if not magic.startswith(b"PK"):  # every .npz is a zip archive
        kind = ("a single .npy array" if magic.startswith(b"\x93NUMPY") else
                "a Python pickle" if magic.startswith(b"\x80") else
                "empty" if not magic else "not a zip archive")
        raise ValueError(f"{path}: not a jaxprop {what} ({kind}; expected an .npz archive "
                         "written by jaxprop; truncated or corrupt file?)")
    try:
        arrays = NpzMembers(path, what)
    except (zipfile.BadZipFile, EOFError, ValueError, OSError) as e:
        raise ValueError(f"{path}: not a readable {what} (truncated or corrupt file: "
                         f"{e})") from None
    if "__header__" not in arrays:
        raise ValueError(f"{path}: not a jaxprop {what} (no __header__ entry)")
    if arrays.member_size("__header__") > MAX_HEADER_BYTES:
        raise ValueError(f"{path}: not a jaxprop {what} (a header of "
                         f"{arrays.member_size('__header__'):,} bytes)")
    try:
        header = json.loads(arrays["__header__"].tobytes().decode())
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise ValueError(f"{path}: corrupt {what} header ({e})") from None
    if not isinstance(header, dict) or header.get("format") != fmt:
        found = header.get("format") if isinstance(header, dict) else None
        raise ValueError(f"{path}: not a jaxprop {what} (format {found!r})")
    return header, arrays


def remove_stale_temporaries(folder: str | os.PathLike, names) -> list[Path]:
    """Delete the temporary files a save of one of ``names`` killed mid-way (SIGKILL, power
    cut) left in ``folder`` (``.NAME.*.tmp``); returns them. Other files, a user's own
    ``.*.tmp`` among them, stay. Only call it while no other process saves there."""
    removed = []
    for name in names:
        for tmp in Path(folder).glob(f".{name}.*{TMP_SUFFIX}"):
            try:
                tmp.unlink()
                removed.append(tmp)
            except FileNotFoundError:
                pass
    return removed


# --------------------------------------------------------------------------------------------
# Checkpoints


def save(path: str | os.PathLike, state: TrainState, config: dict | None = None, *,
         losses=None, history: list | None = None) -> Path:
    """Write ``state`` (params, optimizer and model state, key, epoch) and ``config`` to ``path``.

    Atomic; returns the file.

    Args:
      path: a file, or a directory (then ``path/checkpoint.npz``; a path without a suffix counts
        as a directory); missing folders are created.
      state: the :class:`TrainState` to save.
      config: the run's config (a JSON dict; ``None`` saves ``{}``).
      losses: the training loss of every epoch so far, shape ``(state.epoch,)`` (another shape
        raises ``ValueError``); ``None`` for none.
      history: the logged records (JSON dicts); ``None`` for none.

    Returns:
      the file written.
    """
    path = Path(path)
    if path.is_dir() or not path.suffix:
        path = path / FILENAME
    path.parent.mkdir(parents=True, exist_ok=True)
    trees, arrays = {}, {}
    for name in TREES:
        trees[name], a = flatten_tree(name, getattr(state, name))
        arrays.update(a)
    key = state.key
    key_impl = None
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key_impl = str(jax.random.key_impl(key))
        key = jax.random.key_data(key)
    arrays["key"] = np.asarray(key)
    epoch = int(np.asarray(state.epoch))
    header = {"format": FORMAT, "version": VERSION, "epoch": epoch,
              "config": config or {}, "key_impl": key_impl, "trees": trees}
    if losses is not None:
        losses = np.asarray(losses)
        if losses.shape != (epoch,):
            raise ValueError(f"checkpoint.save: losses has shape {losses.shape} but the state "
                             f"is at epoch {epoch}; give one loss per epoch")
        arrays["losses"] = losses
    if history is not None:
        header["history"] = list(history)
    return write_npz(path, arrays, header)


class Checkpoint:
    """A loaded checkpoint: ``header``, ``epoch``, ``config``, ``losses`` and ``history`` (or
    ``None`` when the file has none) and the raw arrays.

    ``restore(template)`` rebuilds a :class:`TrainState` with ``template``'s tree structure.
    """

    def __init__(self, path: Path, header: dict, arrays: dict[str, np.ndarray]):
        self.path, self.header, self.arrays = path, header, arrays
        self.epoch: int = int(header["epoch"])
        self.config: dict = header.get("config") or {}
        self.losses: np.ndarray | None = arrays.get("losses")
        self.history: list | None = header.get("history")

    def _tree(self, name: str, template) -> Any:
        return restore_tree(str(self.path), name, self.header["trees"][name], self.arrays,
                            template)

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
            try:
                key = jax.random.wrap_key_data(key, impl=self.header["key_impl"])
            except (ValueError, TypeError, KeyError) as e:
                raise ValueError(f"{self.path}: corrupt checkpoint header (key_impl "
                                 f"{self.header['key_impl']!r}: {e})") from None
        return TrainState(params, opt_state, key, jnp.asarray(self.epoch, jnp.int32),
                          model_state)


def load(path: str | os.PathLike) -> Checkpoint:
    """Read a checkpoint file (or ``DIR/checkpoint.npz``).

    Raises ``FileNotFoundError`` if it is missing and ``ValueError`` naming the file when it is
    truncated, corrupt, edited into something inconsistent, or not a jaxprop checkpoint.
    """
    path = Path(path)
    if path.is_dir():
        path = path / FILENAME
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    header, arrays = read_npz(path, FORMAT, "checkpoint")
    if header.get("version") not in READABLE_VERSIONS:
        raise ValueError(
            f"{path}: checkpoint format version {header.get('version')!r} is not supported "
            f"(this jaxprop reads versions {', '.join(map(str, READABLE_VERSIONS))})"
        )
    _check_header(path, header, arrays)
    return Checkpoint(path, header, arrays)


def _check_header(path: Path, header: dict, arrays: dict) -> None:
    """Raise ``ValueError`` unless the header's fields have the types and sizes we wrote."""
    def corrupt(why):
        return ValueError(f"{path}: corrupt checkpoint header ({why})")

    epoch = header.get("epoch")
    if not is_int(epoch) or not 0 <= epoch < 2**31:
        raise corrupt(f"epoch {epoch!r} is not a count of epochs")
    if not isinstance(header.get("config", {}), dict):
        raise corrupt("config is not an object")
    trees = header.get("trees")
    if not isinstance(trees, dict) or not all(isinstance(trees.get(n), dict) for n in TREES[:2]):
        raise corrupt("missing trees")
    try:
        names = [leaf["name"] for tree in trees.values() for leaf in tree["leaves"]]
    except (KeyError, TypeError) as e:
        raise corrupt(f"missing {e}") from None
    missing = [n for n in names + ["key"] if n not in arrays]
    if missing:
        raise ValueError(f"{path}: checkpoint is missing arrays {missing[:5]}")
    losses = arrays.get("losses")
    if losses is not None and losses.shape != (epoch,):
        raise corrupt(f"{losses.shape[0] if losses.ndim else 'no'} epoch losses for epoch "
                      f"{epoch}")
    history = header.get("history")
    if history is not None and not (isinstance(history, list)
                                    and all(isinstance(r, dict) for r in history)):
        raise corrupt("history is not a list of records")
