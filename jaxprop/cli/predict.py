"""``jaxprop predict``: a run folder's model applied to the rows of a CSV file.

    jaxprop predict --run runs/csv --csv new.csv [--out preds.csv]

One output row per input row: ``prediction`` (the class name as in the training CSV, or the
value for a regression) and, for a classification, ``prob_<class>`` per class. A label column
in the new CSV is ignored. Without ``--out`` the table is printed as CSV.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path


def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", required=True, metavar="DIR", help="a jaxprop train run folder")
    p.add_argument("--csv", required=True, metavar="PATH", help="the rows to predict")
    p.add_argument("--out", default=None, metavar="PATH",
                   help="write the predictions here (default: print them)")


def run(args) -> int:
    from jaxprop.predict import predict_csv
    from jaxprop.checkpoint import write_atomic

    if args.out is not None and not args.out.strip():
        raise ValueError("--out is empty; give a file name")
    columns, rows = predict_csv(args.run, args.csv)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows([[cell if isinstance(cell, str) else f"{cell:.6g}" for cell in row]
                      for row in rows])
    if args.out is None:
        sys.stdout.write(buf.getvalue())
    else:
        out = Path(args.out)
        if out.is_dir():
            raise ValueError(f"--out {out} is a folder; give a file name")
        out.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(out, buf.getvalue().encode())
        print(f"{len(rows)} predictions written to {out}", file=sys.stderr)
    return 0
