"""``jaxprop summary``: a model's layers, output shapes, parameters, FLOPs and state, as a table.

    jaxprop summary --run runs/digits                      # a trained run's model
    jaxprop summary --model 'conv(8,3)-relu-flatten-dense(10)' --in-shape 8,8,1
    jaxprop summary --dataset digits [--model TEXT]        # what jaxprop train would train

``--dataset`` builds the network exactly as ``jaxprop train --dataset NAME [--model TEXT]``
does (the input shape from the data, the output the task needs; without ``--model``, the
dataset's default MLP). Nothing is trained or run: :mod:`jaxprop.core.summary` does the work.
"""

from __future__ import annotations

import argparse


def add_parser(p: argparse.ArgumentParser) -> None:
    from jaxprop.data import DATASETS

    p.add_argument("--run", default=None, metavar="DIR", help="a jaxprop train run folder")
    p.add_argument("--model", default=None, metavar="TEXT",
                   help="an architecture as text, e.g. 'conv(8,3)-relu-flatten-dense(10)'; "
                        "with --in-shape or --dataset")
    p.add_argument("--in-shape", default=None, metavar="SHAPE",
                   help="one example's shape for --model, e.g. 64 or 8,8,1")
    p.add_argument("--dataset", choices=DATASETS, default=None,
                   help="the network jaxprop train --dataset NAME [--model TEXT] trains")
    p.add_argument("--data-dir", default=None, help="for --dataset mnist/fashion-mnist")
    p.add_argument("--csv", default=None, metavar="PATH", help="for --dataset csv")


def run(args) -> int:
    from rich.console import Console

    Console().print(_model(args).summary())
    return 0


def _model(args):
    """The model the arguments name (with its input shape)."""
    if args.run is not None:
        if any(v is not None for v in (args.model, args.in_shape, args.dataset)):
            raise ValueError("--run takes its model from the run folder: leave out --model, "
                             "--in-shape and --dataset")
        from jaxprop.predict import load_predictor

        return load_predictor(args.run).model
    if args.dataset is not None:
        if args.in_shape is not None:
            raise ValueError("--dataset gives the input shape: leave out --in-shape")
        return _trained_model(args)
    if args.model is None:
        raise ValueError("give --run DIR, --model TEXT with --in-shape, or --dataset NAME")
    if args.in_shape is None:
        raise ValueError("--model needs --in-shape (one example's shape, e.g. 64 or 8,8,1) "
                         "or --dataset")
    from jaxprop.cli.check import parse_in_shape
    from jaxprop.core.spec import parse_model

    return parse_model(args.model, parse_in_shape(args.in_shape))


def _trained_model(args):
    """The network ``jaxprop train`` builds for ``--dataset`` (and ``--model``): its own
    parser, config and model builder, so the two never differ."""
    from jaxprop import runs
    from jaxprop.cli import train

    argv = ["--dataset", args.dataset]
    for flag, value in (("--model", args.model), ("--data-dir", args.data_dir),
                        ("--csv", args.csv)):
        argv += [] if value is None else [flag, value]
    parser = argparse.ArgumentParser(prog="jaxprop summary")
    train.add_parser(parser)
    cfg = train.build_config(parser.parse_args(argv))
    model, _, _ = runs.build_model(cfg, runs.load_dataset(cfg))
    return model
