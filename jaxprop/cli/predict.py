"""``jaxprop predict``: a run folder's model applied to the rows of a CSV file or a .npy array.

    jaxprop predict --run runs/csv (--csv new.csv | --npy new.npy) [--out preds.csv [--force]]

The rows are raw features in the training data's units (the run's standardisation is applied
once, by :func:`jaxprop.predict.predict_rows`); images are flattened to ``H*W*C`` columns in
NHWC order (a ``.npy`` array may also keep their shape). One output row per input row:
``prediction`` (the class name as in the training data, or the value for a regression) and,
for a classification, ``prob_<class>`` per class. A label column in the new CSV is ignored.
Without ``--out`` the table is printed as CSV. ``--out`` never loses data: the input file
itself is refused, an existing file is replaced only with ``--force``, anything but a regular
file (a link, a FIFO, a device, a folder) never, and the file is written atomically (a
temporary file renamed over it).
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path

from jaxprop.cli.args import check_out


def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", required=True, metavar="DIR", help="a jaxprop train run folder")
    rows = p.add_mutually_exclusive_group(required=True)
    rows.add_argument("--csv", metavar="PATH",
                      help="the rows to predict: raw features as in training (images: H*W*C "
                           "columns in NHWC order); a label column is ignored")
    rows.add_argument("--npy", metavar="PATH",
                      help="the rows to predict as a .npy array (np.save) of numbers: (n, d), "
                           "or images (n, H, W, C) or (n, H*W*C)")
    p.add_argument("--out", default=None, metavar="PATH",
                   help="write the predictions here (default: print them); never the input "
                        "file, and an existing file only with --force")
    p.add_argument("--force", action="store_true",
                   help="replace --out when it already exists (a regular file only)")


def run(args) -> int:
    from jaxprop.checkpoint import write_atomic
    from jaxprop.predict import predict_csv, predict_npy

    flag, rows_path, predict = (("--csv", args.csv, predict_csv) if args.csv is not None
                                else ("--npy", args.npy, predict_npy))
    if args.csv is not None and Path(args.csv).suffix.lower() in (".npy", ".npz"):
        raise ValueError(f"--csv {args.csv} is a NumPy file, not a CSV file; give a .npy "
                         "array with --npy")
    if args.out is not None and not args.out.strip():
        raise ValueError("--out is empty; give a file name")
    out = None if args.out is None else Path(args.out)
    if out is not None:  # before the work, so a refusal comes at once
        check_out(out, flag, rows_path, args.force)
    columns, rows = predict(args.run, rows_path)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows([[cell if isinstance(cell, str) else f"{cell:.6g}" for cell in row]
                      for row in rows])
    if out is None:
        sys.stdout.write(buf.getvalue())
        return 0
    check_out(out, flag, rows_path, args.force)  # again: something may have appeared meanwhile
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, buf.getvalue().encode())
    print(f"{len(rows)} predictions written to {out}", file=sys.stderr)
    return 0
