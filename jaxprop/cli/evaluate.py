"""``jaxprop evaluate``: a run folder's model measured on its test split or on new labelled rows.

    jaxprop evaluate --run runs/csv [--csv new.csv | --npy x.npy --labels y.npy]
                     [--plot OUT.png] [--json] [--batch-size N]

Without ``--csv``/``--npy`` the run's own test split is rebuilt from its checkpoint's config
(split and standardised as in training). A classification prints the loss, the accuracy and
the confusion matrix (rows the true classes, columns the predicted ones, by class name); a
regression prints the loss and R², RMSE and MAE in the data's units (per output, and overall
when there are several). ``--plot`` writes the confusion matrix or the predicted-vs-actual
scatter; ``--json`` prints the figures as JSON instead of tables.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from jaxprop.cli.args import positive_int


def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", required=True, metavar="DIR", help="a jaxprop train run folder")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--csv", default=None, metavar="PATH",
                        help="labelled rows to evaluate on (the training columns and the label "
                             "column); default: the run's own test split")
    source.add_argument("--npy", default=None, metavar="PATH",
                        help="a .npy file of inputs to evaluate on (with --labels)")
    p.add_argument("--labels", default=None, metavar="PATH",
                   help="with --npy: a .npy file of their targets (class indices or names, or "
                        "values)")
    p.add_argument("--plot", default=None, metavar="PNG",
                   help="write the confusion matrix (or predicted vs actual) here")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.add_argument("--batch-size", type=positive_int, default=None,
                   help="rows per batch of the evaluation (default 1024)")


def run(args) -> int:
    from jaxprop.evaluation import evaluate_run

    plot = _plot_path(args)
    result = evaluate_run(args.run, csv=args.csv, npy=args.npy, labels=args.labels,
                          batch_size=args.batch_size)
    if args.json:
        print(json.dumps(result.to_dict(), indent=1))
    else:
        _print(result)
    if plot is not None:
        plot.parent.mkdir(parents=True, exist_ok=True)
        result.plot(plot)
        if not args.json:
            print(f"plot written to {plot}")
    return 0


def _plot_path(args) -> Path | None:
    """``--plot`` checked before any work: a name, never one of the input files."""
    if args.plot is None:
        return None
    if not args.plot.strip():
        raise ValueError("--plot is empty; give a file name such as confusion.png")
    plot = Path(args.plot)
    for flag, given in (("--csv", args.csv), ("--npy", args.npy), ("--labels", args.labels)):
        if given is not None and plot.exists() and Path(given).exists() \
                and os.path.samefile(plot, given):
            raise ValueError(f"--plot {plot} is the input file {flag} {given}; give another "
                             "name")
    if plot.is_dir():
        raise ValueError(f"--plot {plot} is a folder; give a file name such as confusion.png")
    return plot


def _print(result) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    title = f"{result.name or 'data'}: {result.n} examples"
    summary = Table(title=title)
    summary.add_column("metric")
    summary.add_column("value", justify="right")
    if result.loss is not None:
        summary.add_row(f"loss ({result.loss_name})", f"{result.loss:.5g}")
    if result.task == "classification":
        summary.add_row("accuracy", f"{100 * result.accuracy:.2f}%")
        console.print(summary)
        console.print(_confusion_table(result))
        return
    console.print(summary)
    table = Table(title="regression (in the data's units)")
    for column in ("output", "R²", "RMSE", "MAE"):
        table.add_column(column, justify="left" if column == "output" else "right")
    rows = list(zip(result.output_names, result.r2_outputs, result.rmse_outputs,
                    result.mae_outputs))
    if len(rows) > 1:
        rows.append(("overall (mean)", result.r2, result.rmse, result.mae))
    for name, r2, rmse, mae in rows:
        table.add_row(name, f"{r2:.4f}", f"{rmse:.5g}", f"{mae:.5g}")
    console.print(table)


def _confusion_table(result):
    from rich.table import Table

    table = Table(title="confusion matrix (rows: true class, columns: predicted class)")
    table.add_column("true \\ predicted")
    for name in result.class_names:
        table.add_column(str(name), justify="right")
    for name, row in zip(result.class_names, result.confusion):
        table.add_row(str(name), *(str(int(v)) for v in row))
    return table
