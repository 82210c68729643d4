"""The package's layout: imports point one way (core <- train <- scale/tools <- runs <- cli; the
benchmarks are an application of the library), and no module reaches for another module's
private names. Read from the source with ``ast`` (nested and relative imports too); nothing is
imported."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "jaxprop"

# What each layer must never import (the layers above it, and the benchmarks: an application).
FORBIDDEN = {
    "jaxprop.core": ("jaxprop.train", "jaxprop.scale", "jaxprop.tools", "jaxprop.runs",
                     "jaxprop.cli", "jaxprop.bench"),
    "jaxprop.train": ("jaxprop.scale", "jaxprop.tools", "jaxprop.runs", "jaxprop.cli",
                      "jaxprop.bench"),
    "jaxprop.scale": ("jaxprop.runs", "jaxprop.cli", "jaxprop.bench"),
    "jaxprop.tools": ("jaxprop.runs", "jaxprop.cli", "jaxprop.bench"),
    "jaxprop.runs": ("jaxprop.cli", "jaxprop.bench"),
}

def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


MODULES = _modules()


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _absolute(module: str, node: ast.ImportFrom) -> str:
    """The absolute module name of ``from <node.module> import ...`` inside ``module``."""
    if not node.level:
        return node.module or ""
    package = module.split(".")
    if not MODULES[module].name == "__init__.py":
        package = package[:-1]
    base = package[: len(package) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(module: str, tree: ast.AST):
    """``(imported module, name or None, node)`` for every import in ``tree`` (nested ones too)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None, node
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(module, node)
            for alias in node.names:
                yield source, alias.name, node


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _layer_violations() -> list[str]:
    found = []
    for module, path in MODULES.items():
        layer = next((layer for layer in FORBIDDEN if _within(module, layer)), None)
        if layer is None:
            continue
        for source, name, node in _imports(module, ast.parse(path.read_text())):
            targets = [source] + ([f"{source}.{name}"] if name else [])
            for target in targets:
                if any(_within(target, banned) for banned in FORBIDDEN[layer]):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {module} imports "
                                 f"{target}")
                    break
    return found


def _module_aliases(module: str, tree: ast.AST) -> dict[str, str]:
    """Local names bound to jaxprop modules by imports: ``{"fit": "jaxprop.train.fit"}``."""
    aliases = {}
    for source, name, node in _imports(module, tree):
        if name is None:
            for alias in node.names:
                if alias.name == source and _within(source, "jaxprop"):
                    if alias.asname:
                        aliases[alias.asname] = source
                    else:
                        top = source.split(".")[0]
                        aliases[top] = top
        elif f"{source}.{name}" in MODULES:
            alias = next(a for a in node.names if a.name == name)
            aliases[alias.asname or name] = f"{source}.{name}"
    return aliases


def _dotted(node: ast.AST) -> list[str] | None:
    """``["a", "b", "c"]`` for the expression ``a.b.c``; ``None`` for anything else."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return [node.id, *reversed(parts)]


def _private_uses(module: str, tree: ast.AST) -> list[str]:
    """``"jaxprop.x._y"`` for each private name of another jaxprop module that ``module``
    imports (``from jaxprop.x import _y``) or reaches through a module (``x._y``)."""
    found = []
    for source, name, _ in _imports(module, tree):
        if name is not None and _within(source, "jaxprop") and source != module and _private(name):
            found.append(f"{source}.{name}")
    aliases = _module_aliases(module, tree)
    for node in ast.walk(tree):
        parts = _dotted(node) if isinstance(node, ast.Attribute) else None
        if not parts or parts[0] not in aliases:
            continue
        owner = aliases[parts[0]]
        for attr in parts[1:]:
            if f"{owner}.{attr}" not in MODULES:
                if _private(attr) and owner != module:
                    found.append(f"{owner}.{attr}")
                break
            owner = f"{owner}.{attr}"
    return found


def _all_private_uses() -> list[str]:
    return sorted({f"{path.relative_to(ROOT)}: {use}" for module, path in MODULES.items()
                   for use in _private_uses(module, ast.parse(path.read_text()))})


def test_the_private_name_check_sees_imports_and_attributes():
    tree = ast.parse("from jaxprop.train.fit import _COMPILED, fit_state\n"
                     "import jaxprop.train.step as step\n"
                     "from jaxprop.train import fit\n"
                     "import jaxprop\n"
                     "step._init_fn, fit.host_array, jaxprop.train.fit._stoppable\n"
                     "fit_state._private_attribute_of_a_function, step.__name__\n")
    assert sorted(_private_uses("jaxprop.runs", tree)) == [
        "jaxprop.train.fit._COMPILED", "jaxprop.train.fit._stoppable",
        "jaxprop.train.step._init_fn"]
    assert _private_uses("jaxprop.train.fit", tree) == ["jaxprop.train.step._init_fn"]


def test_the_layer_check_sees_nested_and_relative_imports():
    tree = ast.parse("def f():\n    from ..scale import parallel\n    import jaxprop.cli\n")
    found = [f"{source}.{name}" if name else source
             for source, name, _ in _imports("jaxprop.train.fit", tree)]
    assert found == ["jaxprop.scale.parallel", "jaxprop.cli"]


def test_no_module_imports_a_layer_above_its_own():
    assert _layer_violations() == []


def test_no_module_uses_another_modules_private_names():
    assert _all_private_uses() == []
