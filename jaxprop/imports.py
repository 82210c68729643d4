"""Importing the user's own code: a module by name or a ``.py`` file by path.

``jaxprop train/check --import my_layers`` (or ``--import path/to/my_layers.py``) runs it
before the architecture is parsed, so the layers it registers (:func:`jaxprop.register_layer`)
can be named in ``--model``; :func:`jaxprop.load` imports the module a saved model's own
layers came from. Either way a failure is one ``ValueError`` naming the module.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import sys
from pathlib import Path
from types import ModuleType

_MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def import_source(source: str, what: str = "--import") -> ModuleType:
    """The module ``source`` names, imported: a dotted module name (found from the current
    folder too) or the path of a ``.py`` file (imported under its stem, e.g. ``my_layers``).

    ``what`` starts the error message (``"--import"``, ``"jp.load"``)."""
    if source.endswith(".py") or "/" in source or os.sep in source:
        return _import_file(Path(source), what)
    if not _MODULE.match(source):
        raise ValueError(f"{what}: {source!r} is neither a module name nor a .py file")
    added = os.getcwd() not in sys.path  # `--import my_layers` in the folder that holds it
    if added:
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(source)
    except ModuleNotFoundError as e:
        if e.name and (source == e.name or source.startswith(e.name + ".")):
            raise ValueError(f"{what}: no module named {source!r} (run from the folder that "
                             "holds it, add it to PYTHONPATH, or give its .py file)") from None
        raise ValueError(f"{what}: importing {source} failed: {e}") from e
    except (Exception, SystemExit) as e:  # noqa: BLE001 - the user's code: one line
        raise ValueError(f"{what}: importing {source} failed: {why(e)}") from e
    finally:
        if added:
            sys.path.remove(os.getcwd())


def _import_file(path: Path, what: str) -> ModuleType:
    if not path.is_file():
        raise ValueError(f"{what}: no such file: {path}")
    name = path.stem
    loaded = sys.modules.get(name)
    if loaded is not None and getattr(loaded, "__file__", None) and \
            Path(loaded.__file__).resolve() == path.resolve():
        return loaded  # imported already (by name or by path)
    if loaded is not None or not name.isidentifier():
        name = f"_jaxprop_user_{re.sub(r'[^A-Za-z0-9_]', '_', path.stem)}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ValueError(f"{what}: cannot import {path} (not a Python file?)")
    module = importlib.util.module_from_spec(spec)
    folder = str(path.resolve().parent)
    sys.path.insert(0, folder)  # its own imports of neighbouring modules
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as e:  # noqa: BLE001 - the user's code: one line
        sys.modules.pop(name, None)
        raise ValueError(f"{what}: importing {path} failed: {why(e)}") from e
    finally:
        sys.path.remove(folder)
    return module


def why(error: BaseException) -> str:
    """Why importing the user's code failed, in a few words (``sys.exit`` is no pass)."""
    if isinstance(error, SystemExit):
        return f"it called sys.exit({error.code!r})"
    return f"{type(error).__name__}: {error}"
