"""``jaxprop train``: parse the arguments, run :mod:`jaxprop.runs`, print progress and results.

With no arguments it trains the classic XOR network (2-4-1 sigmoid, standard-normal weights,
``sse_half``, plain gradient descent with learning rate 0.1, 10,000 full-batch epochs) into
``runs/xor``. Every option left out takes the dataset's default (``DEFAULTS``); the loss and
output activation follow the task (binary: identity + ``bce_with_logits``; multiclass:
identity + ``softmax_cross_entropy``) unless given. ``--model TEXT`` trains any architecture
written as text (``conv(16,3)-relu-maxpool(2)-flatten-dense(10)``; see
:mod:`jaxprop.core.spec`) instead of the ``--hidden``/``--activation`` MLP; the output
activation still follows the task. What the run folder holds:
:mod:`jaxprop.runs`. ``--resume DIR`` continues a run from its checkpoint with the saved
config, up to ``--epochs`` in total.

Exit codes: 0 done, 1 the loss diverged (NaN/Inf; the last good checkpoint is kept), 2 bad
arguments or unreadable data/checkpoint.
"""

from __future__ import annotations

import argparse
import math
import sys

from jaxprop.data import DATASETS
from jaxprop.runs import MODEL_KEYS
from jaxprop.train.optimizers import OPTIMIZERS

# the precision policies (jaxprop.train.precision) the command line offers
TRAIN_PRECISIONS = ("f32", "bf16", "highest")

# Per-dataset defaults; anything not listed falls back to COMMON.
COMMON = dict(hidden=[64], activation="relu", optimizer="adam", lr=1e-3, epochs=100,
              batch_size=32, init=None, log_every=5, precision="f32")
DEFAULTS = {
    "xor": dict(hidden=[4], activation="sigmoid", output_activation="sigmoid", loss="sse_half",
                optimizer="sgd", lr=0.1, epochs=10_000, batch_size=None, init="normal",
                log_every=1000),
    "spirals": dict(hidden=[64, 64], activation="tanh", lr=1e-2, epochs=1000, batch_size=None,
                    log_every=50),
    "moons": dict(hidden=[16, 16], activation="tanh", lr=1e-2, epochs=500, batch_size=None,
                  log_every=25),
    "digits": dict(hidden=[64, 64], activation="relu", lr=3e-3, epochs=15, batch_size=64,
                   log_every=1),
    "mnist": dict(hidden=[128, 64], activation="relu", lr=1e-3, epochs=10, batch_size=128,
                  log_every=1),
    "fashion-mnist": dict(hidden=[128, 64], activation="relu", lr=1e-3, epochs=10,
                          batch_size=128, log_every=1),
    "csv": {},
}

def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", choices=DATASETS, default=None, help="default: xor")
    p.add_argument("--data-dir", default=None, help="folder with the MNIST/Fashion IDX files")
    p.add_argument("--csv", default=None, metavar="PATH", help="CSV file for --dataset csv")
    p.add_argument("--label-column", default=None,
                   help="label column of the CSV: index (default -1) or header name")
    p.add_argument("--model", default=None, metavar="TEXT",
                   help="the architecture as text, e.g. 'conv(16,3)-relu-maxpool(2)-flatten-"
                        "dense(10)' (instead of --hidden/--activation; the output activation "
                        "follows the task)")
    p.add_argument("--hidden", default=None, help="hidden layer widths, e.g. 64,64 ('' for none)")
    p.add_argument("--activation", default=None, help="hidden activation (relu, tanh, ...)")
    p.add_argument("--output-activation", default=None,
                   help="output activation (default: from the loss)")
    p.add_argument("--loss", default=None, help="loss name (default: from the task)")
    p.add_argument("--init", default=None, help="weight initialiser (normal, glorot, he, ...)")
    p.add_argument("--optimizer", choices=tuple(OPTIMIZERS), default=None)
    p.add_argument("--lr", type=float, default=None, help="learning rate")
    p.add_argument("--epochs", type=int, default=None, help="total number of epochs")
    p.add_argument("--batch-size", type=int, default=None,
                   help="minibatch size (0 or omitted for datasets that default to full batch)")
    p.add_argument("--drop-last", action="store_true", help="drop the ragged last minibatch")
    p.add_argument("--seed", type=int, default=None, help="seed for data, init and shuffling")
    p.add_argument("--log-every", type=int, default=None,
                   help="epochs per compiled chunk: logging, divergence check and checkpoint")
    p.add_argument("--out", default=None, help="output folder (default runs/DATASET)")
    p.add_argument("--resume", default=None, metavar="DIR",
                   help="continue the run saved in DIR (its config; --epochs is the new total)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--population", type=int, default=None, metavar="N",
                   help="train N networks (seeds SEED..SEED+N-1) at once in one compiled call; "
                        "metrics.json lists each one (see docs/scale.md)")
    p.add_argument("--lr-sweep", default=None, metavar="A,B,C",
                   help="one population per learning rate, e.g. 0.01,0.1,1 (N networks each "
                        "with --population N, else one)")
    p.add_argument("--precision", choices=TRAIN_PRECISIONS, default=None,
                   help="f32 (default; on GPUs float32 matmuls run in TF32), bf16 (float32 "
                        "params and optimizer, bfloat16 forward and backward, float32 loss) or "
                        "highest (float32 with full-precision matmuls)")
    p.add_argument("--data-parallel", action="store_true",
                   help="split the training set over all local devices (jax.sharding); its size "
                        "must divide evenly over them")


# --------------------------------------------------------------------------------------------
# Config


def parse_hidden(text) -> list[int]:
    """``"64,64"`` -> ``[64, 64]``; ``""``/``"none"`` -> ``[]``."""
    if isinstance(text, (list, tuple)):
        return [int(h) for h in text]
    s = str(text).strip()
    if s.lower() in ("", "none"):
        return []
    try:
        sizes = [int(part) for part in s.split(",")]
    except ValueError:
        sizes = []
    if not sizes or any(h < 1 for h in sizes):
        raise ValueError(
            f"--hidden must be comma-separated positive integers like 64,64; got {s!r}")
    return sizes


def build_config(args) -> dict:
    """Resolve the command line against the dataset's defaults; validate every number."""
    dataset = args.dataset or "xor"
    d = {**COMMON, "output_activation": None, "loss": None, **DEFAULTS[dataset]}
    cfg = {"dataset": dataset, "data_dir": args.data_dir, "csv": args.csv,
           "label_column": args.label_column, "seed": 0 if args.seed is None else args.seed,
           "drop_last": bool(args.drop_last)}
    for key in ("hidden", "activation", "output_activation", "loss", "init", "optimizer", "lr",
                "epochs", "batch_size", "log_every", "precision"):
        given = getattr(args, key)
        cfg[key] = d[key] if given is None else given
    cfg["hidden"] = parse_hidden(cfg["hidden"])
    cfg["model"] = args.model
    if args.model is not None:
        for flag in ("hidden", "activation", "init"):
            if getattr(args, flag) is not None:
                raise ValueError(f"--{flag} describes the MLP that --model replaces; "
                                 "give one or the other")
        from jaxprop.core.spec import parse_model

        parse_model(args.model)  # unknown names and bad arguments: before any data is read
        cfg["hidden"] = cfg["activation"] = None
    if cfg["batch_size"] == 0:
        cfg["batch_size"] = None
    cfg["out"] = args.out or f"runs/{dataset}"
    validate_config(cfg)
    return cfg


def validate_config(cfg: dict) -> None:
    if not isinstance(cfg["epochs"], int) or cfg["epochs"] < 1:
        raise ValueError(f"--epochs must be a positive integer; got {cfg['epochs']}")
    lr = cfg["lr"]
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"--lr must be a positive number; got {lr}")
    if cfg["batch_size"] is not None and cfg["batch_size"] < 1:
        raise ValueError(f"--batch-size must be a positive integer; got {cfg['batch_size']}")
    if cfg["log_every"] < 1:
        raise ValueError(f"--log-every must be a positive integer; got {cfg['log_every']}")
    if cfg["seed"] < 0:
        raise ValueError(f"--seed must be >= 0; got {cfg['seed']}")
    if cfg["optimizer"] not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {cfg['optimizer']!r}; known: {', '.join(OPTIMIZERS)}")
    if cfg["dataset"] in ("mnist", "fashion-mnist") and not cfg["data_dir"]:
        raise ValueError(f"--dataset {cfg['dataset']} needs --data-dir (a folder with the IDX "
                         "files; jaxprop never downloads)")
    if cfg["dataset"] == "csv" and not cfg["csv"]:
        raise ValueError("--dataset csv needs --csv PATH")
    for flag, key, allowed in (("--data-dir", "data_dir", ("mnist", "fashion-mnist")),
                               ("--csv", "csv", ("csv",)), ("--label-column", "label_column",
                                                            ("csv",))):
        if cfg[key] is not None and cfg["dataset"] not in allowed:
            raise ValueError(f"{flag} applies only to --dataset {'/'.join(allowed)}")


# --------------------------------------------------------------------------------------------
# Run


def parse_lr_sweep(text: str) -> list[float]:
    """``"0.01,0.1,1"`` -> ``[0.01, 0.1, 1.0]``; every rate finite and positive."""
    try:
        lrs = [float(part) for part in str(text).split(",")]
    except ValueError:
        lrs = []
    if not lrs or not all(math.isfinite(lr) and lr > 0 for lr in lrs):
        raise ValueError(f"--lr-sweep must be comma-separated positive numbers like "
                         f"0.01,0.1,1; got {text!r}")
    return lrs


def resume_config(args) -> tuple[dict, object]:
    """The saved run's config, with --epochs/--log-every/--out applied, and its checkpoint."""
    from jaxprop import checkpoint as ckpt

    saved = ckpt.load(args.resume)
    cfg = dict(saved.config)
    cfg.setdefault("precision", "f32")  # saved before precision was an option
    for key in MODEL_KEYS:
        given = getattr(args, key.replace("-", "_"), None)
        if key == "hidden" and given is not None:
            given = parse_hidden(given)
        if given is not None and key != "dataset" and given != cfg.get(key):
            raise ValueError(f"--{key.replace('_', '-')} differs from the run saved in "
                             f"{args.resume}; --resume uses the saved config")
    if args.dataset is not None and args.dataset != cfg["dataset"]:
        raise ValueError(f"--dataset differs from the run saved in {args.resume}")
    cfg["epochs"] = args.epochs if args.epochs is not None else cfg["epochs"]
    cfg["log_every"] = args.log_every or cfg["log_every"]
    cfg["out"] = args.out or args.resume
    validate_config(cfg)
    if cfg["epochs"] < saved.epoch:
        raise ValueError(f"--epochs {cfg['epochs']} is below the checkpoint's epoch "
                         f"{saved.epoch} in {args.resume}")
    return cfg, saved


def run(args) -> int:
    from rich.console import Console

    from jaxprop import runs
    from jaxprop.train.compile import enable_compilation_cache

    enable_compilation_cache()  # a second run of the same network loads its compiled code

    population = args.population is not None or args.lr_sweep is not None
    if population and (args.resume or args.data_parallel):
        raise ValueError("--population/--lr-sweep cannot be combined with --resume or "
                         "--data-parallel")
    if population:
        cfg = build_config(args)
        lrs = parse_lr_sweep(args.lr_sweep) if args.lr_sweep is not None else [cfg["lr"]]
        m = runs.population_run(cfg, population=1 if args.population is None
                                else args.population, lrs=lrs, plots_on=not args.no_plots)
        _population_summary(m, cfg)
        return 0
    cfg, saved = resume_config(args) if args.resume else (build_config(args), None)
    err = Console(stderr=True)
    progress, task = _progress(err, cfg, saved.epoch if saved is not None else 0)

    def on_record(record):
        desc = f"loss {record['train_loss']:.4g}  acc {record['train_accuracy']:.3f}"
        if "test_accuracy" in record:
            desc += f"  test acc {record['test_accuracy']:.3f}"
        progress.update(task, completed=record["epoch"], stats=desc)

    with progress:
        result = runs.train_run(cfg, saved, plots_on=not args.no_plots,
                                data_parallel=args.data_parallel, on_record=on_record)
    if result.diverged is not None:
        print(f"jaxprop: {result.diverged}; the last good checkpoint (epoch "
              f"{result.metrics['epoch']}) is in {result.out}", file=sys.stderr)
        return 1
    _table(cfg, result.metrics, result.out)
    return 0


def _population_summary(m: dict, cfg: dict) -> None:
    from rich.console import Console

    solved = f", {m['solved']} solved" if "solved" in m else ""
    median = m["median_final_loss"]
    Console().print(f"{m['members']} networks x {m['epoch']} epochs in {m['wall_time']:.2f} s"
                    f"{solved}; median final loss "
                    f"{'n/a' if median is None else f'{median:.4g}'}, {m['diverged']} diverged; "
                    f"saved to {cfg['out']}/")


class _NoProgress:
    """What ``_progress`` gives when stderr is not a terminal (nothing to draw)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def update(self, *args, **kwargs):
        pass


def _progress(err, cfg, start_epoch):
    if not err.is_terminal:  # no bar to draw: skip loading rich.progress (0.1 s)
        return _NoProgress(), None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(
        TextColumn(f"[bold]{cfg['dataset']}[/]"), BarColumn(), MofNCompleteColumn(),
        TextColumn("epochs"), TimeElapsedColumn(), TextColumn("{task.fields[stats]}"),
        console=err, transient=False, disable=not err.is_terminal,
    )
    task = progress.add_task("train", total=cfg["epochs"], completed=start_epoch, stats="compiling")
    return progress, task


def _table(cfg, metrics, out) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{cfg['dataset']}: {metrics['epoch']} epochs",
                  caption=f"{metrics['wall_time']:.2f} s, compile {metrics['compile_time']:.2f} s")
    table.add_column("split")
    table.add_column("loss", justify="right")
    table.add_column("accuracy", justify="right")
    for split in ("train", "test"):
        table.add_row(split, f"{metrics[f'{split}_loss']:.5g}",
                      f"{100 * metrics[f'{split}_accuracy']:.2f}%")
    console = Console()
    console.print(table)
    console.print(f"device {metrics['device']}; precision {cfg.get('precision', 'f32')}; "
                  f"saved to {out}/")
