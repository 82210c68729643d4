"""Argument parsing shared by the subcommands (``check``, ``bench``, ``train``, ``explain``)."""

from __future__ import annotations

import argparse


def parse_sizes(text: str, not_ints: str, too_few: str | None = None, *,
                min_len: int = 2) -> tuple[int, ...]:
    """Layer sizes ``"4,16,8,3"`` -> ``(4, 16, 8, 3)``: at least ``min_len`` positive ints.

    Raises ``ValueError(not_ints + repr(text))`` when a part is not an int, and
    ``ValueError(too_few + repr(text))`` (default: ``not_ints``'s) for fewer than ``min_len``
    sizes or one below 1: each command words its own message.
    """
    try:
        sizes = tuple(int(s) for s in text.split(","))
    except ValueError:
        raise ValueError(f"{not_ints}{text!r}") from None
    if len(sizes) < min_len or min(sizes) < 1:
        raise ValueError(f"{not_ints if too_few is None else too_few}{text!r}")
    return sizes


def positive_int(text: str) -> int:
    """An argparse ``type``: ``text`` as an int of at least 1, else the
    ``ArgumentTypeError`` argparse prints after the option's name."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value
