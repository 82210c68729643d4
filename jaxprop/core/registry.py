"""The one lookup of a registry: a table of names (activations, losses, initializers, datasets,
layers, presets, examples) and the one error for a name it does not hold.

A leaf module (no imports from jaxprop), so any module may use it.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping, TypeVar

T = TypeVar("T")


def unknown(what: str, name: Any, known: Iterable[str], *, show: Callable[[Any], str] = repr,
            where: str = "", known_as: str = "known") -> ValueError:
    """The error for ``name`` missing from a registry of ``what``:
    ``unknown {what} {show(name)}{where}; {known_as}: a, b, c``.

    Args:
      what: the kind of thing, as the message names it (``"loss"``).
      name: the name asked for.
      known: the names (or usages) to offer, in order.
      show: how to print ``name`` (``repr``; a shortening repr for untrusted input).
      where: text after the name (``" in the architecture"``).
      known_as: the word before the list (``"known"``, ``"known datasets"``).

    Returns:
      the ``ValueError`` (to raise).
    """
    return ValueError(f"unknown {what} {show(name)}{where}; {known_as}: {', '.join(known)}")


def lookup(table: Mapping[str, T], name: Any, what: str, **wording) -> T:
    """``table[name]``, or the :func:`unknown` error for a name the table does not hold (an
    unhashable ``name`` too).

    Args:
      table: the registry, names to things.
      name: the name asked for.
      what: the kind of thing, as the message names it (``"activation"``).
      **wording: :func:`unknown`'s keywords; ``known`` replaces the table's names in the list.

    Returns:
      the registered thing.
    """
    try:
        return table[name]
    except (KeyError, TypeError):
        known = wording.pop("known", table)
        raise unknown(what, name, known, **wording) from None
