"""``jaxprop train``: train an MLP on a dataset with the JIT-compiled loop; save the run.

With no arguments it trains the classic XOR network (2-4-1 sigmoid, standard-normal weights,
``sse_half``, plain gradient descent with learning rate 0.1, 10,000 full-batch epochs) into
``runs/xor``. Every option left out takes the dataset's default (``DEFAULTS``); the loss and
output activation follow the task (binary: identity + ``bce_with_logits``; multiclass:
identity + ``softmax_cross_entropy``) unless given.

Writes to ``--out``: ``metrics.json`` (config, final train/test loss and accuracy, wall time,
compile time, device), ``history.jsonl`` (one line per logged epoch), ``checkpoint.npz``
(saved atomically after every logged epoch), ``losses.npy`` (every epoch's training loss),
``loss_curve.png`` and, for 2-D inputs, ``decision_boundary.png``. ``--resume DIR`` continues a
run from its checkpoint with the saved config, up to ``--epochs`` in total.

Exit codes: 0 done, 1 the loss diverged (NaN/Inf; the last good checkpoint is kept), 2 bad
arguments or unreadable data/checkpoint.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

DATASETS = ("xor", "spirals", "moons", "digits", "mnist", "fashion-mnist", "csv")
OPTIMIZERS = ("sgd", "momentum", "adam", "adamw")

# Per-dataset defaults; anything not listed falls back to COMMON.
COMMON = dict(hidden=[64], activation="relu", optimizer="adam", lr=1e-3, epochs=100,
              batch_size=32, init=None, log_every=5)
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
# Options that define the run; on --resume they come from the checkpoint.
MODEL_KEYS = ("dataset", "data_dir", "csv", "label_column", "seed", "hidden", "activation",
              "output_activation", "loss", "optimizer", "lr", "batch_size", "init")


def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", choices=DATASETS, default=None, help="default: xor")
    p.add_argument("--data-dir", default=None, help="folder with the MNIST/Fashion IDX files")
    p.add_argument("--csv", default=None, metavar="PATH", help="CSV file for --dataset csv")
    p.add_argument("--label-column", default=None,
                   help="label column of the CSV: index (default -1) or header name")
    p.add_argument("--hidden", default=None, help="hidden layer widths, e.g. 64,64 ('' for none)")
    p.add_argument("--activation", default=None, help="hidden activation (relu, tanh, ...)")
    p.add_argument("--output-activation", default=None,
                   help="output activation (default: from the loss)")
    p.add_argument("--loss", default=None, help="loss name (default: from the task)")
    p.add_argument("--init", default=None, help="weight initialiser (normal, glorot, he, ...)")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default=None)
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


def task_defaults(loss: str | None, output_activation: str | None, num_classes: int):
    """Loss and output activation for a task: binary (1 output) or multiclass (one-hot)."""
    binary = num_classes == 2
    if loss is None:
        loss = "bce_with_logits" if binary else "softmax_cross_entropy"
    if loss == "softmax_cross_entropy" and binary:
        raise ValueError("softmax_cross_entropy needs one-hot targets but this dataset is binary "
                         "(one 0/1 output): use --loss bce_with_logits")
    if output_activation is None:
        if loss in ("bce_with_logits", "softmax_cross_entropy"):
            output_activation = "identity"
        elif loss == "bce" or binary:
            output_activation = "sigmoid"
        else:
            output_activation = "identity"
    return loss, output_activation


def build_config(args) -> dict:
    """Resolve the command line against the dataset's defaults; validate every number."""
    dataset = args.dataset or "xor"
    d = {**COMMON, "output_activation": None, "loss": None, **DEFAULTS[dataset]}
    cfg = {"dataset": dataset, "data_dir": args.data_dir, "csv": args.csv,
           "label_column": args.label_column, "seed": 0 if args.seed is None else args.seed,
           "drop_last": bool(args.drop_last)}
    for key in ("hidden", "activation", "output_activation", "loss", "init", "optimizer", "lr",
                "epochs", "batch_size", "log_every"):
        given = getattr(args, key)
        cfg[key] = d[key] if given is None else given
    cfg["hidden"] = parse_hidden(cfg["hidden"])
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


def make_optimizer(name: str, lr: float):
    """The optax optimizer for a CLI name."""
    import optax

    return {"sgd": lambda: optax.sgd(lr), "momentum": lambda: optax.sgd(lr, momentum=0.9),
            "adam": lambda: optax.adam(lr), "adamw": lambda: optax.adamw(lr)}[name]()


def load_dataset(cfg: dict):
    from jaxprop import data

    kwargs = {"seed": cfg["seed"]}
    if cfg["dataset"] in ("mnist", "fashion-mnist"):
        if not Path(cfg["data_dir"]).is_dir():
            raise FileNotFoundError(f"--data-dir {cfg['data_dir']}: no such directory")
        kwargs["data_dir"] = cfg["data_dir"]
    if cfg["dataset"] == "csv":
        kwargs["path"] = cfg["csv"]
        lc = cfg["label_column"]
        if lc is not None:
            kwargs["label_column"] = int(lc) if str(lc).lstrip("-").isdigit() else lc
    return data.load(cfg["dataset"], **kwargs)


def build_model(cfg: dict, ds):
    """``(model, loss_name)`` for the config and the dataset's shapes; fills in cfg's defaults."""
    from jaxprop.network import mlp

    cfg["loss"], cfg["output_activation"] = task_defaults(
        cfg["loss"], cfg["output_activation"], ds.num_classes)
    out = ds.y_train.shape[-1]
    model = mlp([ds.x_train.shape[-1], *cfg["hidden"], out], cfg["activation"],
                cfg["output_activation"], init=cfg["init"])
    from jaxprop.losses import get_loss

    get_loss(cfg["loss"])  # unknown names fail here, before any training
    return model, cfg["loss"]


# --------------------------------------------------------------------------------------------
# Run


def run(args) -> int:
    from rich.console import Console

    err = Console(stderr=True)
    population = (getattr(args, "population", None) is not None
                  or getattr(args, "lr_sweep", None) is not None)
    if population and (args.resume or args.data_parallel):
        raise ValueError("--population/--lr-sweep cannot be combined with --resume or "
                         "--data-parallel")
    if population:
        return population_run(build_config(args), args.population, args.lr_sweep,
                              plots=not args.no_plots)
    if args.resume:
        from jaxprop import checkpoint as ckpt

        saved = ckpt.load(args.resume)
        cfg = dict(saved.config)
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
    else:
        saved = None
        cfg = build_config(args)
    return train_run(cfg, saved, err, plots=not args.no_plots,
                     data_parallel=getattr(args, "data_parallel", False))


def population_run(cfg: dict, population: int | None, lr_sweep: str | None, *,
                   plots: bool = True) -> int:
    """``--population N`` / ``--lr-sweep A,B,C``: every member in one compiled call."""
    from rich.console import Console

    from jaxprop.population import parse_lr_sweep, write_population_run

    if population is not None and population < 1:
        raise ValueError(f"--population must be a positive integer; got {population}")
    lrs = parse_lr_sweep(lr_sweep) if lr_sweep is not None else [cfg["lr"]]
    ds = load_dataset(cfg)
    model, loss = build_model(cfg, ds)
    m = write_population_run(model, loss, cfg["optimizer"], ds, cfg["out"],
                             population=population or 1, lrs=lrs, seed=cfg["seed"],
                             epochs=cfg["epochs"], batch_size=cfg["batch_size"],
                             drop_last=cfg["drop_last"], config=dict(cfg), plots=plots)
    solved = f", {m['solved']} solved" if "solved" in m else ""
    median = m["median_final_loss"]
    Console().print(f"{m['members']} networks x {m['epoch']} epochs in {m['wall_time']:.2f} s"
                    f"{solved}; median final loss "
                    f"{'n/a' if median is None else f'{median:.4g}'}, {m['diverged']} diverged; "
                    f"saved to {cfg['out']}/")
    return 0


def train_run(cfg: dict, saved, err, *, plots: bool = True, data_parallel: bool = False) -> int:
    import jax
    import numpy as np

    from jaxprop import checkpoint as ckpt
    from jaxprop.train import TrainingDiverged, fit_state, init_state

    ds = load_dataset(cfg)
    model, loss = build_model(cfg, ds)
    if data_parallel:  # before anything on disk changes: the batch must split evenly
        from jaxprop.parallel import check_data_parallel, data_parallel_inputs

        check_data_parallel(len(ds.x_train))
    optimizer = make_optimizer(cfg["optimizer"], cfg["lr"])
    out = Path(cfg["out"])
    out.mkdir(parents=True, exist_ok=True)
    key = jax.random.key(cfg["seed"])
    state = init_state(model, optimizer, key)
    prev_losses = np.zeros(0)
    if saved is not None:
        state = saved.restore(state)
        if (Path(cfg["out"]) / "losses.npy").exists():
            prev_losses = np.load(Path(cfg["out"]) / "losses.npy", allow_pickle=False)
        prev_losses = prev_losses[: saved.epoch]
    elif (out / "history.jsonl").exists():
        (out / "history.jsonl").unlink()  # a fresh run replaces an old one in the same folder
    if data_parallel:
        state, ds = data_parallel_inputs(state, ds)
    config = {k: v for k, v in cfg.items()}
    start_epoch = int(state.epoch)

    progress, task = _progress(err, cfg, start_epoch)
    history_file = open(out / "history.jsonl", "a")

    def on_chunk(st, record):
        ckpt.save(out, st, config)
        history_file.write(json.dumps(record) + "\n")
        history_file.flush()
        desc = f"loss {record['train_loss']:.4g}  acc {record['train_accuracy']:.3f}"
        if "test_accuracy" in record:
            desc += f"  test acc {record['test_accuracy']:.3f}"
        progress.update(task, completed=record["epoch"], stats=desc)

    t0 = time.perf_counter()
    status, diverged = "finished", None
    try:
        with progress:
            state, history = fit_state(
                model, loss, optimizer, ds, epochs=cfg["epochs"], batch_size=cfg["batch_size"],
                state=state, log_every=cfg["log_every"], callback=on_chunk,
                drop_last=cfg["drop_last"])
    except TrainingDiverged as e:
        status, diverged, history = "diverged", e, e.history
        ckpt.save(out, e.state, config)  # the last good state (already on disk, or the start)
        state = e.state
    finally:
        history_file.close()
    wall = time.perf_counter() - t0
    if saved is None and status == "finished" and not history.records:
        ckpt.save(out, state, config)

    losses = np.concatenate([prev_losses, history.losses])
    np.save(out / "losses.npy", losses)
    last = history.records[-1] if history.records else None
    if status == "finished" and last is not None and "test_loss" in last:
        final = {k: last[k] for k in ("train_loss", "train_accuracy", "test_loss",
                                      "test_accuracy")}
    else:
        final = _final_metrics(model, loss, state.params, ds)
    metrics = {
        "status": status, "config": config, "epoch": int(state.epoch), **final,
        "wall_time": wall, "compile_time": history.compile_time,
        "device": _device(), "resumed_from": saved.epoch if saved is not None else None,
    }
    if diverged is not None:
        metrics["diverged_at_epoch"] = diverged.epoch
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    if plots:
        _plots(out, model, loss, state.params, ds, losses, history.records)
    if diverged is not None:
        print(f"jaxprop: {diverged}; the last good checkpoint (epoch {int(state.epoch)}) is in "
              f"{out}", file=sys.stderr)
        return 1
    _table(cfg, metrics, out)
    return 0


def _progress(err, cfg, start_epoch):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(
        TextColumn(f"[bold]{cfg['dataset']}[/]"), BarColumn(), MofNCompleteColumn(),
        TextColumn("epochs"), TimeElapsedColumn(), TextColumn("{task.fields[stats]}"),
        console=err, transient=False, disable=not err.is_terminal,
    )
    task = progress.add_task("train", total=cfg["epochs"], completed=start_epoch, stats="compiling")
    return progress, task


def _final_metrics(model, loss, params, ds) -> dict:
    import jax

    from jaxprop.train import make_eval_fn

    evaluate = jax.jit(make_eval_fn(model, loss))
    out = {}
    for split, x, t in (("train", ds.x_train, ds.y_train), ("test", ds.x_test, ds.y_test)):
        value, acc = evaluate(params, x, t)
        out[f"{split}_loss"], out[f"{split}_accuracy"] = float(value), float(acc)
    return out


def _device() -> str:
    import jax

    d = jax.devices()[0]
    return f"{d.platform}: {d.device_kind} (x{jax.device_count()})"


def _plots(out, model, loss, params, ds, losses, records) -> None:
    import jax
    import numpy as np

    from jaxprop import plots

    plots.loss_curve(losses, out / "loss_curve.png", records=records,
                     title=f"{ds.name}: training loss ({loss})")
    if ds.x_train.shape[-1] == 2:
        apply = jax.jit(model.apply)
        threshold = 0.0 if loss == "bce_with_logits" else 0.5

        def classes(y):
            y = np.asarray(y)
            return (y[:, 0] > threshold).astype(int) if y.shape[-1] == 1 else y.argmax(-1)

        plots.decision_boundary(
            lambda g: classes(apply(params, g)), ds.x_train, classes_of(ds.y_train),
            out / "decision_boundary.png", x_test=ds.x_test, labels_test=classes_of(ds.y_test),
            title=f"{ds.name}: decision boundary")


def classes_of(t):
    import numpy as np

    t = np.asarray(t)
    return (t[:, 0] > 0.5).astype(int) if t.shape[-1] == 1 else t.argmax(-1)


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
    console.print(f"device {metrics['device']}; saved to {out}/")
