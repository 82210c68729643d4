"""The training progress bar (rich) that ``fit(progress=...)`` and ``jaxprop train`` share:
one layout, updated from each chunk's record (the metrics the host already has: no extra
synchronisation)."""

from __future__ import annotations

import sys


def progress_bar(console, title: str, total: int, completed: int = 0):
    """``(progress, task)``: a rich ``Progress`` drawing on ``console`` (title, bar, epochs
    done of ``total``, time, the last record's loss and accuracies) and its task; enter
    ``progress`` to draw it."""
    from rich.progress import (  # loaded only when a bar is drawn (0.1 s)
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    progress = Progress(
        TextColumn(f"[bold]{title}[/]"), BarColumn(), MofNCompleteColumn(),
        TextColumn("epochs"), TimeElapsedColumn(), TextColumn("{task.fields[stats]}"),
        console=console, transient=False,
    )
    task = progress.add_task("train", total=total, completed=completed, stats="compiling")
    return progress, task


def describe(record: dict) -> str:
    """A record's figures for the bar: ``loss 0.1234  acc 0.950  val acc 0.900``."""
    text = f"loss {record['train_loss']:.4g}"
    for key, name in (("train_accuracy", "acc"), ("val_accuracy", "val acc"),
                      ("test_accuracy", "test acc")):
        if key in record:
            text += f"  {name} {record[key]:.3f}"
    return text


def show_record(progress, task, record: dict) -> None:
    """Move the bar to ``record``'s epoch and show its figures."""
    progress.update(task, completed=record["epoch"], stats=describe(record))


def console_for(progress):
    """The rich ``Console`` ``fit(progress=...)`` draws on, or ``None`` for no bar:
    ``progress`` ``None`` means a bar on stderr only when it is a terminal; ``True`` a bar on
    stderr; ``False`` none; a rich ``Console`` is drawn on as it is."""
    if progress is None:
        progress = _isatty(sys.stderr)
    if progress is False:
        return None
    if progress is True:
        from rich.console import Console

        return Console(stderr=True)
    if hasattr(progress, "is_terminal") and hasattr(progress, "print"):
        return progress  # a rich Console
    raise ValueError(f"progress must be True, False, None or a rich Console, got {progress!r}")


def _isatty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # replaced or closed stream
        return False
