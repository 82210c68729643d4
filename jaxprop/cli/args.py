"""Argument parsing shared by the subcommands (``check``, ``bench``, ``train``, ``explain``)
and the refusal of an output file that would lose data (``predict --out``, ``explain --html``)."""

from __future__ import annotations

import argparse
import os
import stat
from pathlib import Path

# what an output path that is not a regular file is, in words
_KINDS = ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISDIR, "a folder"),
          (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


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


def check_out(out: Path, flag: str, rows_path, force: bool,
              option: str = "--out") -> None:
    """Refuse an output file ``out`` (given as ``option``) that would lose data: the input file
    ``rows_path`` (given as ``flag``; ``None``: none) itself, after links; anything that is not
    a regular file; or an existing file without ``force``."""
    try:
        mode = os.lstat(out).st_mode
    except FileNotFoundError:
        return
    if rows_path is not None and _same_file(out, rows_path):
        raise ValueError(f"{option} {out} is the input file {flag} {rows_path}; give another "
                         f"{option}")
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
        raise ValueError(f"{option} {out} is {kind}, not a regular file: it is never replaced; "
                         "give a file name")
    if not force:
        raise ValueError(f"{option} {out} already exists; replace it with --force (or give "
                         f"another {option})")


def _same_file(a, b) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them missing (a dangling link, an input that is not there)
        return False


def add_import_option(p: argparse.ArgumentParser) -> None:
    """``--import MODULE`` (repeatable): a module or ``.py`` file to import before anything is
    parsed, e.g. one that registers layers of its own (``jp.register_layer``)."""
    p.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                   help="import this module or .py file first (e.g. one that registers your "
                        "own layers with jp.register_layer); repeatable")


def import_modules(args) -> None:
    """Import what ``--import`` names, in order; a failure is one ``ValueError`` (exit 2)."""
    from jaxprop.imports import import_source

    for source in getattr(args, "imports", None) or ():
        import_source(source, "--import")
