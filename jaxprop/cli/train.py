"""``jaxprop train``: parse the arguments, run :mod:`jaxprop.runs`, print progress and results.

With no arguments it trains the classic XOR network (2-4-1 sigmoid, standard-normal weights,
``sse_half``, plain gradient descent with learning rate 0.1, 10,000 full-batch epochs) into
``runs/xor`` (``runs/xor-2``, ``-3``, ... when that already holds a run; an explicit ``--out``
holding a run is refused unless ``--force``). Every option left out takes the dataset's
default (``DEFAULTS``); the loss and output activation follow the task (binary: identity +
``bce_with_logits``; multiclass: identity + ``softmax_cross_entropy``; ``--task regression``:
identity + ``mse``) unless given. ``--model TEXT`` trains any architecture written as text
(``conv(16,3)-relu-maxpool(2)-flatten-dense(10)``; see :mod:`jaxprop.core.spec`) instead of
the ``--hidden``/``--activation`` MLP; the output activation still follows the task.
``--precision f32|bf16|highest`` picks the precision policy (:mod:`jaxprop.train.precision`).
``--lr-schedule constant|cosine|warmup-cosine|exponential`` (with ``--warmup-epochs``,
``--lr-decay``) shapes the learning rate over the run's epochs, ``--weight-decay`` adds weight
decay (AdamW for adam; added to the gradient for sgd/momentum), ``--validation-fraction F``
holds out F of the training set as the validation split and ``--early-stopping PATIENCE``
stops when its loss (else the test loss) has not improved for PATIENCE epochs, keeping the
best epoch's params (see :func:`jaxprop.train.optimizers.make_optimizer`,
:mod:`jaxprop.train.early_stopping`).
What the run folder holds: :mod:`jaxprop.runs`.
``--dataset text|reverse|sort`` trains a GPT (:func:`jaxprop.core.sequence.gpt`, sizes from
``--blocks/--features/--heads``; ``--model`` replaces it) on windows of ``--context`` tokens
with ``sparse_softmax_cross_entropy``; ``--text FILE`` gives the text (default: Python's help
topics); the table adds the perplexities and the unigram baseline (see
:mod:`jaxprop.data.text`); ``jaxprop generate`` samples from the run.
``--resume DIR`` continues a run from its checkpoint with the saved config, up to ``--epochs``
in total. Ctrl-C or SIGTERM stop within about a second: the last finished epoch is saved and
the command says how to resume.

Exit codes: 0 done, 1 the loss diverged (NaN/Inf; the last good checkpoint is kept) or every
member of a population did, 2 bad arguments or unreadable data/checkpoint, 130/143 stopped by
SIGINT/SIGTERM (the checkpoint is saved).
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import sys

from jaxprop.cli.args import add_import_option, import_modules, parse_sizes, positive_int
from jaxprop.core.validate import is_int, is_number
from jaxprop.data import DATASETS, SEQUENCE_DATASETS
from jaxprop.data.preprocessing import MAX_SEED
from jaxprop.runs import MODEL_KEYS, TRAINING_DEFAULTS
from jaxprop.train.fit import MAX_EPOCHS
from jaxprop.train.optimizers import OPTIMIZERS, SCHEDULES, get_schedule, optimizer_alias
from jaxprop.train.progress import progress_bar, show_record
from jaxprop.scale.distributed import JOIN_TIMEOUT_S, PEER_TIMEOUT_S

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
    # sequences: a GPT (runs.GPT_SIZES), adam, minibatches of windows
    "text": dict(lr=1e-3, epochs=10, batch_size=32, log_every=1),
    "reverse": dict(lr=3e-3, epochs=3, batch_size=64, log_every=1),
    "sort": dict(lr=3e-3, epochs=4, batch_size=64, log_every=1),
}
SEQUENCE_OPTIONS = ("context", "blocks", "features", "heads")

def add_parser(p: argparse.ArgumentParser) -> None:
    """The options of ``jaxprop train``, group by group (in the order ``--help`` lists them)."""
    for add in (_add_data_options, _add_model_options, _add_training_options,
                _add_schedule_options, _add_stopping_options, _add_folder_options,
                _add_log_options, _add_population_options, _add_device_options):
        add(p)


def _add_data_options(p: argparse.ArgumentParser) -> None:
    """The dataset and where its files are."""
    p.add_argument("--dataset", choices=DATASETS, default=None, help="default: xor")
    p.add_argument("--data-dir", default=None, help="folder with the MNIST/Fashion IDX files")
    p.add_argument("--csv", default=None, metavar="PATH", help="CSV file for --dataset csv")
    p.add_argument("--label-column", default=None,
                   help="label column of the CSV: index (default -1) or header name")
    p.add_argument("--text", default=None, metavar="FILE",
                   help="UTF-8 text file for --dataset text (default: Python's help topics, "
                        "pydoc_data.topics)")
    p.add_argument("--context", type=int, default=None, metavar="T",
                   help="tokens per example for --dataset text/reverse/sort (default 64 for "
                        "text, 16 for reverse and sort: 8 digits, '=', the answer)")


def _add_model_options(p: argparse.ArgumentParser) -> None:
    """The network, the task and the loss."""
    p.add_argument("--model", default=None, metavar="TEXT",
                   help="the architecture as text, e.g. 'conv(16,3)-relu-maxpool(2)-flatten-"
                        "dense(10)' (instead of --hidden/--activation; the output activation "
                        "follows the task)")
    p.add_argument("--task", choices=("classification", "regression"), default=None,
                   help="for --dataset csv: classification (default) or regression (the label "
                        "column is a number to predict: identity output, mse, RMSE and R²)")
    p.add_argument("--hidden", default=None, help="hidden layer widths, e.g. 64,64 ('' for none)")
    p.add_argument("--activation", default=None, help="hidden activation (relu, tanh, ...)")
    p.add_argument("--output-activation", default=None,
                   help="output activation (default: from the loss)")
    p.add_argument("--loss", default=None, help="loss name (default: from the task)")
    p.add_argument("--init", default=None, help="weight initialiser (normal, glorot, he, ...)")
    p.add_argument("--blocks", type=int, default=None,
                   help="the GPT of a sequence dataset: transformer blocks (default 4 for text, "
                        "2 for reverse/sort)")
    p.add_argument("--features", type=int, default=None,
                   help="the GPT's width (default 128 for text, 64 for reverse/sort)")
    p.add_argument("--heads", type=int, default=None,
                   help="the GPT's attention heads (default 4)")
    add_import_option(p)


def _add_training_options(p: argparse.ArgumentParser) -> None:
    """The optimizer, the epochs and minibatches, the seed and the logging."""
    p.add_argument("--optimizer", choices=tuple(OPTIMIZERS), default=None)
    p.add_argument("--lr", type=float, default=None, help="learning rate")
    p.add_argument("--epochs", type=int, default=None, help="total number of epochs")
    p.add_argument("--batch-size", type=int, default=None,
                   help="minibatch size (0 or omitted for datasets that default to full batch)")
    p.add_argument("--drop-last", action="store_true", help="drop the ragged last minibatch")
    p.add_argument("--seed", type=int, default=None, help="seed for data, init and shuffling")
    p.add_argument("--log-every", type=int, default=None,
                   help="epochs per compiled chunk: logging, divergence check and checkpoint")


def _add_schedule_options(p: argparse.ArgumentParser) -> None:
    """The learning-rate schedule and weight decay (saved with the run)."""
    p.add_argument("--lr-schedule", default=None, metavar="|".join(SCHEDULES),
                   help="the learning rate over the run's epochs, peaking at --lr (default "
                        "constant); a resumed run keeps it (a decaying one, its --epochs too)")
    p.add_argument("--warmup-epochs", type=int, default=None, metavar="N",
                   help="with warmup-cosine: rise linearly from 0 to --lr over the first N "
                        "epochs (default 0)")
    p.add_argument("--lr-decay", type=float, default=None, metavar="F",
                   help="the final learning rate as a fraction of --lr (default: 0 for the "
                        "cosines, 0.1 for exponential)")
    p.add_argument("--weight-decay", type=float, default=None, metavar="W",
                   help="weight decay: decoupled (AdamW) with adam/adamw, added to the "
                        "gradient (L2) with sgd/momentum; default none (adamw: optax's 1e-4)")


def _add_stopping_options(p: argparse.ArgumentParser) -> None:
    """The validation split and early stopping (saved with the run)."""
    p.add_argument("--validation-fraction", type=float, default=None, metavar="F",
                   help="hold out F of the training set (random, by --seed) as the validation "
                        "split: logged as val_loss and watched by --early-stopping; the test "
                        "set is left for the final figures")
    p.add_argument("--early-stopping", type=int, default=None, metavar="PATIENCE",
                   help="stop when the validation (else test) loss has not improved for "
                        "PATIENCE epochs; the run's model is the best epoch's (checked every "
                        "--log-every epochs: by default the dataset's, at most PATIENCE/10)")


def _add_folder_options(p: argparse.ArgumentParser) -> None:
    """The run folder: where, resuming or replacing, plots or not."""
    p.add_argument("--out", default=None,
                   help="output folder (default runs/DATASET, or runs/DATASET-2, ... when that "
                        "holds a run)")
    p.add_argument("--resume", default=None, metavar="DIR",
                   help="continue the run saved in DIR (its config; --epochs is the new total)")
    p.add_argument("--force", "--overwrite", dest="force", action="store_true",
                   help="replace the run already in --out (refused otherwise)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")


def _add_log_options(p: argparse.ArgumentParser) -> None:
    """Logs for other tools (history.csv is always written)."""
    p.add_argument("--tensorboard", action="store_true",
                   help="also write TensorBoard event files to OUT/tensorboard/: losses, "
                        "accuracies, parameter and gradient norms per logged epoch (needs "
                        "pip install 'jaxprop[tensorboard]'; view with tensorboard --logdir "
                        "runs)")


def _add_population_options(p: argparse.ArgumentParser) -> None:
    """Many networks in one compiled call."""
    p.add_argument("--population", type=int, default=None, metavar="N",
                   help="train N networks (seeds SEED..SEED+N-1) at once in one compiled call; "
                        "metrics.json lists each one (see docs/scale.md)")
    p.add_argument("--lr-sweep", default=None, metavar="A,B,C",
                   help="one population per learning rate, e.g. 0.01,0.1,1 (N networks each "
                        "with --population N, else one)")


def _add_device_options(p: argparse.ArgumentParser) -> None:
    """The precision policy and data parallel training, on one or many processes."""
    p.add_argument("--precision", choices=TRAIN_PRECISIONS, default=None,
                   help="f32 (default; on GPUs float32 matmuls run in TF32), bf16 (float32 "
                        "params and optimizer, bfloat16 forward and backward, float32 loss) or "
                        "highest (float32 with full-precision matmuls)")
    p.add_argument("--data-parallel", action="store_true",
                   help="split the training set over every device (jax.sharding; padded to a "
                        "multiple of the device count, the padding never counts)")
    p.add_argument("--coordinator", default=None, metavar="HOST:PORT",
                   help="with --data-parallel: join a multi-process run (jax.distributed) whose "
                        "process 0 listens at HOST:PORT (env JAX_COORDINATOR_ADDRESS)")
    p.add_argument("--num-processes", default=None, metavar="N",
                   help="processes in the multi-process run (env JAX_NUM_PROCESSES)")
    p.add_argument("--process-id", default=None, metavar="I",
                   help="this process's index, 0..N-1; process 0 writes the run folder (env "
                        "JAX_PROCESS_ID)")
    p.add_argument("--join-timeout", type=positive_int, default=None, metavar="SECONDS",
                   help=f"how long every process may take to join the run (default "
                        f"{JOIN_TIMEOUT_S}); then each stops with one line, exit 2")
    p.add_argument("--peer-timeout", type=positive_int, default=None, metavar="SECONDS",
                   help="a process that stops answering for this long is lost: the others "
                        f"stop, keep the last finished epoch and exit 1 (default "
                        f"{PEER_TIMEOUT_S})")


# --------------------------------------------------------------------------------------------
# Config


def parse_hidden(text) -> list[int]:
    """``"64,64"`` -> ``[64, 64]``; ``""``/``"none"`` -> ``[]``."""
    if isinstance(text, (list, tuple)):
        return [int(h) for h in text]
    s = str(text).strip()
    if s.lower() in ("", "none"):
        return []
    return list(parse_sizes(s, "--hidden must be comma-separated positive integers like 64,64; "
                                "got ", min_len=1))


def build_config(args) -> dict:
    """Resolve the command line against the dataset's defaults; validate every number."""
    dataset = args.dataset or "xor"
    d = {**COMMON, "output_activation": None, "loss": None, **DEFAULTS[dataset]}
    cfg = {"dataset": dataset, "data_dir": args.data_dir, "csv": args.csv,
           "label_column": args.label_column, "task": args.task, "text": args.text,
           **{key: getattr(args, key) for key in SEQUENCE_OPTIONS},
           "seed": 0 if args.seed is None else args.seed, "drop_last": bool(args.drop_last)}
    for key in ("hidden", "activation", "output_activation", "loss", "init", "optimizer", "lr",
                "epochs", "batch_size", "log_every", "precision"):
        given = getattr(args, key)
        cfg[key] = d[key] if given is None else given
    for key, default in TRAINING_DEFAULTS.items():
        given = getattr(args, key)
        cfg[key] = default if given is None else given
    if is_int(args.early_stopping) and args.log_every is None:
        # early stopping checks after each chunk: at least ten checks per patience (a chunk
        # saves the checkpoint, so not every epoch of a long run)
        cfg["log_every"] = min(cfg["log_every"], max(1, args.early_stopping // 10))
    cfg["hidden"] = parse_hidden(cfg["hidden"])
    cfg["model"] = args.model
    if dataset in SEQUENCE_DATASETS:
        _check_sequence_flags(args)
        cfg["hidden"] = cfg["activation"] = None
    if args.model is not None:
        for flag in ("hidden", "activation", "init"):
            if getattr(args, flag) is not None:
                raise ValueError(f"--{flag} describes the MLP that --model replaces; "
                                 "give one or the other")
        from jaxprop.core.spec import parse_model

        parse_model(args.model)  # unknown names and bad arguments: before any data is read
        cfg["hidden"] = cfg["activation"] = None
        from jaxprop.saving import user_layer_modules

        modules = user_layer_modules(args.model)  # --import's layers: --resume imports them
        if modules:
            cfg["layer_modules"] = modules
    if cfg["batch_size"] == 0:
        cfg["batch_size"] = None
    cfg["out"] = default_out(dataset) if args.out is None else args.out
    validate_config(cfg)
    return cfg


def _check_sequence_flags(args) -> None:
    """Refuse the MLP's flags for a sequence dataset (it trains a GPT), and the GPT's sizes
    together with ``--model``."""
    for flag in ("hidden", "activation", "init"):
        if getattr(args, flag) is not None:
            raise ValueError(f"--{flag} describes an MLP; --dataset {args.dataset} trains a GPT "
                             "(--blocks/--features/--heads) or the --model you give")
    if args.model is not None:
        given = [f"--{key}" for key in ("blocks", "features", "heads")
                 if getattr(args, key) is not None]
        if given:
            raise ValueError(f"{'/'.join(given)} size the default GPT that --model replaces; "
                             "give one or the other")


def default_out(dataset: str) -> str:
    """``runs/DATASET``, or the first of ``runs/DATASET-2``, ``-3``, ... that holds no run."""
    from pathlib import Path

    from jaxprop.runs import holds_run

    out, n = Path("runs") / dataset, 1
    while out.exists() and holds_run(out):
        n += 1
        out = Path("runs") / f"{dataset}-{n}"
    return str(out)


def validate_config(cfg: dict) -> None:
    if not is_int(cfg["epochs"]) or cfg["epochs"] < 1:
        raise ValueError(f"--epochs must be a positive integer; got {cfg['epochs']}")
    if cfg["epochs"] > MAX_EPOCHS:
        raise ValueError(f"--epochs must be at most {MAX_EPOCHS:,} (the epoch counter is an "
                         f"int32); got {cfg['epochs']:,}")
    if not str(cfg["out"]).strip():
        raise ValueError("--out is empty; give a folder name")
    lr = cfg["lr"]
    if not (is_number(lr) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"--lr must be a positive number; got {lr}")
    if cfg["batch_size"] is not None and cfg["batch_size"] < 1:
        raise ValueError(f"--batch-size must be a positive integer; got {cfg['batch_size']}")
    if cfg["log_every"] < 1:
        raise ValueError(f"--log-every must be a positive integer; got {cfg['log_every']}")
    if not 0 <= cfg["seed"] <= MAX_SEED:
        raise ValueError(f"--seed must be an integer from 0 to {MAX_SEED} (2**32 - 1); got "
                         f"{cfg['seed']}")
    optimizer_alias(cfg["optimizer"])  # an unknown name: the registry's error
    validate_training_options(cfg)
    if cfg["dataset"] in ("mnist", "fashion-mnist") and not cfg["data_dir"]:
        raise ValueError(f"--dataset {cfg['dataset']} needs --data-dir (a folder with the IDX "
                         "files; jaxprop never downloads)")
    if cfg["dataset"] == "csv" and not cfg["csv"]:
        raise ValueError("--dataset csv needs --csv PATH")
    # cfg.get: configs saved before --text lack "text"
    for flag, key, allowed in (("--data-dir", "data_dir", ("mnist", "fashion-mnist")),
                               ("--csv", "csv", ("csv",)), ("--label-column", "label_column",
                                                            ("csv",)),
                               ("--text", "text", ("text",))):
        if cfg.get(key) is not None and cfg["dataset"] not in allowed:
            raise ValueError(f"{flag} applies only to --dataset {'/'.join(allowed)}")
    if cfg.get("task") == "regression" and cfg["dataset"] != "csv":
        raise ValueError("--task regression applies only to --dataset csv")
    for key in SEQUENCE_OPTIONS:
        value = cfg.get(key)
        if value is None:
            continue
        if cfg["dataset"] not in SEQUENCE_DATASETS:
            raise ValueError(f"--{key} applies only to --dataset {'/'.join(SEQUENCE_DATASETS)}")
        if not is_int(value) or value < 1:
            raise ValueError(f"--{key} must be a positive integer; got {value}")


def validate_training_options(cfg: dict) -> None:
    """The schedule, weight decay, validation and early-stopping options, each checked with
    one line naming its flag."""
    schedule = get_schedule(cfg["lr_schedule"])  # an unknown name: the registry's error
    warmup, epochs, decay = cfg["warmup_epochs"], cfg["epochs"], cfg["lr_decay"]
    if not is_int(warmup) or warmup < 0:
        raise ValueError(f"--warmup-epochs must be a non-negative integer; got {warmup}")
    if warmup and not schedule.warmup:
        takes = ", ".join(name for name, s in SCHEDULES.items() if s.warmup)
        raise ValueError(f"--warmup-epochs applies to --lr-schedule {takes}, not "
                         f"{cfg['lr_schedule']}")
    if warmup >= epochs and warmup:
        raise ValueError(f"--warmup-epochs {warmup} must be fewer than --epochs {epochs}")
    if decay is not None:
        if schedule.final is None:
            decays = ", ".join(name for name, s in SCHEDULES.items() if s.final is not None)
            raise ValueError(f"--lr-decay applies to a decaying --lr-schedule ({decays})")
        if not (is_number(decay) and 0 <= decay <= 1):
            raise ValueError(f"--lr-decay must be a fraction from 0 to 1; got {decay}")
        if decay == 0 and schedule.final > 0:  # exponential: a rate of 0 means no decay
            raise ValueError(f"--lr-decay must be positive for --lr-schedule "
                             f"{cfg['lr_schedule']}; got {decay}")
    wd = cfg["weight_decay"]
    if wd is not None and not (is_number(wd) and math.isfinite(wd) and wd >= 0):
        raise ValueError(f"--weight-decay must be a non-negative number; got {wd}")
    patience = cfg["early_stopping"]
    if patience is not None and not (is_int(patience) and patience >= 1):
        raise ValueError(f"--early-stopping must be a positive number of epochs (the "
                         f"patience); got {patience}")
    fraction = cfg["validation_fraction"]
    if fraction is not None and not (is_number(fraction) and 0 < fraction < 1):
        raise ValueError(f"--validation-fraction must be strictly between 0 and 1; got "
                         f"{fraction}")


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
    from jaxprop import runs

    saved = ckpt.load(args.resume)
    cfg = dict(saved.config)
    runs.check_saved_config(cfg, saved.path)
    if cfg.get("model") and "layer_modules" in cfg:  # layers of one's own (--import): import
        from jaxprop.saving import import_layers

        import_layers(saved.path, cfg["model"], cfg["layer_modules"],
                      otherwise="give it with --import")
    cfg.setdefault("precision", "f32")  # saved before precision was an option
    cfg.setdefault("model", None)  # saved before --model
    for key, default in TRAINING_DEFAULTS.items():  # saved before the training options
        cfg.setdefault(key, default)
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
    cfg["out"] = args.resume if args.out is None else args.out
    cfg.setdefault("task", None)  # checkpoints from before --task
    validate_config(cfg)
    if cfg["epochs"] < saved.epoch:
        raise ValueError(f"--epochs {cfg['epochs']} is below the checkpoint's epoch "
                         f"{saved.epoch} in {args.resume}")
    return cfg, saved


class _StopSignals:
    """SIGINT and SIGTERM: until the run first asks whether to stop (before it writes
    anything), they raise ``KeyboardInterrupt`` at once; from then on they only set the flag
    that training polls, so a save is never cut in half."""

    def __init__(self):
        self.signum = None
        self.armed = False
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: no handlers, Ctrl-C raises as usual
                pass
        return self

    def _handle(self, signum, frame):
        first, self.signum = self.signum is None, signum
        if not self.armed:
            if not first:  # a second signal while the first unwinds: nothing to save yet
                os.write(2, b"jaxprop: interrupted\n")
                os._exit(128 + signum)
            raise KeyboardInterrupt

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def __call__(self) -> bool:
        self.armed = True
        return self.signum is not None


def run(args) -> int:
    """``jaxprop train``: a population or a single run, then its report; the exit code."""
    from jaxprop.train.compile import enable_compilation_cache

    enable_compilation_cache()  # a second run of the same network loads its compiled code
    import_modules(args)  # --import: layers of one's own, before --model is parsed
    population = _check_combinations(args)
    distributed = _join_processes(args)
    if population:
        return _run_population(args)
    return _run_single(args, distributed)


def _check_combinations(args) -> bool:
    """Whether ``args`` ask for a population, after refusing options that do not combine."""
    population = args.population is not None or args.lr_sweep is not None
    if population and (args.resume or args.data_parallel):
        raise ValueError("--population/--lr-sweep cannot be combined with --resume or "
                         "--data-parallel")
    if population and args.tensorboard:
        raise ValueError("--tensorboard logs a single run; it cannot be combined with "
                         "--population/--lr-sweep")
    if args.resume and args.force:
        raise ValueError("--force replaces a run; --resume continues one: give one of them")
    if population:
        given = [f"--{key.replace('_', '-')}" for key in TRAINING_DEFAULTS
                 if getattr(args, key) is not None]
        if given:
            raise ValueError(f"{', '.join(given)} cannot be combined with --population/"
                             "--lr-sweep")
    return population


def _run_population(args) -> int:
    """Train the population (or one per learning rate of ``--lr-sweep``) and summarise it."""
    from jaxprop import runs

    cfg = build_config(args)
    lrs = parse_lr_sweep(args.lr_sweep) if args.lr_sweep is not None else [cfg["lr"]]
    m = runs.population_run(cfg, population=1 if args.population is None
                            else args.population, lrs=lrs, plots_on=not args.no_plots,
                            force=args.force)
    return _population_summary(m, cfg)


def _run_single(args, distributed: bool) -> int:
    """Train one network (new or resumed) with a progress bar, stoppable by SIGINT/SIGTERM,
    and report it (on process 0 of a multi-process run)."""
    from rich.console import Console

    from jaxprop import runs

    cfg, saved = resume_config(args) if args.resume else (build_config(args), None)
    if (note := compile_note(cfg)) is not None:
        print(note, file=sys.stderr)
    progress, task = _progress(Console(stderr=True), cfg,
                               saved.epoch if saved is not None else 0)
    try:
        with _StopSignals() as stop, progress:
            try:
                result = runs.train_run(cfg, saved, plots_on=not args.no_plots,
                                        data_parallel=args.data_parallel,
                                        on_record=_show_record(progress, task),
                                        should_stop=stop, force=args.force,
                                        tensorboard=args.tensorboard)
            except KeyboardInterrupt:
                if stop.armed:
                    raise
                return _stopped_before_training(stop.signum)
    except runs.PeerLost as e:
        _leave_without_peers(e)
    if distributed and not _is_writer():
        if result.interrupted:  # stopped alone: leave now, so the others stop too
            print(f"jaxprop: process {_process_index()} stopped by "
                  f"{signal.Signals(stop.signum or signal.SIGINT).name}", file=sys.stderr)
            _exit_now(128 + int(stop.signum or signal.SIGINT))
        return 1 if result.diverged is not None else 0  # process 0 reports
    return _report(cfg, result, stop.signum)


# Layers from which XLA's compilation of the training program takes minutes on a CPU
# (measured on 2 cores: 200 dense layers 9 s, 500 28 s, 2,000 178 s).
DEEP_MODEL_LAYERS = 300


def compile_note(cfg: dict) -> str | None:
    """The line to say before a model deep enough that compiling it takes minutes (the
    progress bar then counts the seconds while it says ``compiling``), else ``None``."""
    from jaxprop.core.spec import split_spec

    text = cfg.get("model")
    layers = len(split_spec(text)) if text else 2 * len(cfg.get("hidden") or ()) + 2
    if layers < DEEP_MODEL_LAYERS:
        return None
    return (f"jaxprop: {layers:,} layers: XLA compiles the training program for about "
            f"{max(1, round(layers * 0.09 / 60))} min or more before the first epoch")


def _leave_without_peers(error) -> None:
    """One line and exit 1, at once: JAX's exit handlers would wait for the lost process at a
    shutdown barrier and then abort the process (SIGABRT, a C++ stack trace)."""
    print(f"jaxprop: error: {error}", file=sys.stderr)
    _exit_now(1)


def _process_index() -> int:
    import jax

    return jax.process_index()


def _show_record(progress, task):
    """The ``on_record`` callback: a logged record's loss and accuracies on the progress bar."""
    return lambda record: show_record(progress, task, record)


def _stopped_before_training(signum) -> int:
    """Say that a signal stopped the run before it wrote anything; 128 + the signal."""
    name = signal.Signals(signum or signal.SIGINT).name
    print(f"jaxprop: stopped by {name} before training started; nothing was written",
          file=sys.stderr)
    return 128 + int(signum or signal.SIGINT)


def _report(cfg: dict, result, signum) -> int:
    """How a single run ended: stopped (exits at once), diverged (1) or finished (the table;
    0), with any plot that could not be written."""
    if result.interrupted:
        return _interrupted(signum, result)
    if result.diverged is not None:
        print(f"jaxprop: {result.diverged}; the last good checkpoint (epoch "
              f"{result.metrics['epoch']}) is in {result.out}", file=sys.stderr)
        return 1
    _table(cfg, result.metrics, result.out)
    if result.plot_error:
        print(f"jaxprop: training finished and {result.out} holds its checkpoint, metrics.json, "
              f"losses.npy, history.jsonl and model.npz, but {result.plot_error}",
              file=sys.stderr)
    return 0


def _join_processes(args) -> bool:
    """Join a multi-process run when the flags (or the environment) ask for one."""
    from jaxprop.scale import distributed

    flags = (args.coordinator, args.num_processes, args.process_id)
    timeouts = (args.join_timeout, args.peer_timeout)
    if any(f is not None for f in (*flags, *timeouts)) and not args.data_parallel:
        raise ValueError("--coordinator/--num-processes/--process-id/--join-timeout/"
                         "--peer-timeout need --data-parallel")
    if not args.data_parallel:
        return False
    return distributed.initialize(*flags, timeout_s=args.join_timeout or JOIN_TIMEOUT_S,
                                  peer_timeout_s=args.peer_timeout or PEER_TIMEOUT_S) is not None


def _is_writer() -> bool:
    import jax

    return jax.process_index() == 0


def _interrupted(signum, result) -> int:
    """Say where the checkpoint is and how to resume; exit at once (130 SIGINT, 143 SIGTERM)
    without waiting for the compiled chunk still running."""
    name = signal.Signals(signum).name if signum else "a signal"
    m = result.metrics
    print(f"jaxprop: stopped by {name} after epoch {m['epoch']} of {m['config']['epochs']}; "
          f"the checkpoint is {result.out / 'checkpoint.npz'}; continue with: jaxprop train "
          f"--resume {result.out}", file=sys.stderr)
    rc = 128 + int(signum or signal.SIGINT)
    if _processes() > 1:  # the others then stop at their next collective (a lost peer)
        _exit_now(rc)
    from jaxprop.cli import leave

    leave(rc)


def _processes() -> int:
    import jax

    return jax.process_count()


def _exit_now(rc: int) -> None:
    """Exit with ``rc`` without JAX's exit handlers: in a multi-process run that is not ending
    together, they wait for the other processes at a shutdown barrier and then abort."""
    sys.stderr.flush()
    sys.stdout.flush()
    os._exit(rc)


def _population_summary(m: dict, cfg: dict) -> int:
    from rich.console import Console

    solved = f", {m['solved']} solved" if "solved" in m else ""
    median = m["median_final_loss"]
    Console().print(f"{m['members']} networks x {m['epoch']} epochs in {m['wall_time']:.2f} s"
                    f"{solved}; median final loss "
                    f"{'n/a' if median is None else f'{median:.4g}'}, {m['finished']} finished, "
                    f"{m['diverged']} diverged; saved to {cfg['out']}/")
    if m.get("plot_error"):
        print(f"jaxprop: training finished and {cfg['out']}/metrics.json is saved, but "
              f"{m['plot_error']}", file=sys.stderr)
    if m["status"] != "finished":
        print(f"jaxprop: every member diverged (NaN/Inf loss); see the per-member status in "
              f"{cfg['out']}/metrics.json", file=sys.stderr)
        return 1
    return 0


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
    return progress_bar(err, cfg["dataset"], cfg["epochs"], start_epoch)


def _table(cfg, metrics, out) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{cfg['dataset']}: {metrics['epoch']} epochs",
                  caption=f"{metrics['wall_time']:.2f} s, compile {metrics['compile_time']:.2f} s")
    regression = "train_rmse" in metrics
    sequence = "unigram_loss" in metrics
    table.add_column("split")
    table.add_column("loss", justify="right")
    for name in (("RMSE", "R²") if regression else ("token accuracy", "perplexity")
                 if sequence else ("accuracy",)):
        table.add_column(name, justify="right")
    for split in ("train", "val", "test"):
        if f"{split}_loss" not in metrics:
            continue  # no validation split
        if regression:
            rmse, r2 = metrics.get(f"{split}_rmse"), metrics.get(f"{split}_r2")
            cells = ["n/a" if rmse is None else f"{rmse:.5g}",
                     "n/a" if r2 is None else f"{r2:.4f}"]
        else:
            acc = metrics.get(f"{split}_accuracy")
            cells = ["n/a" if acc is None else f"{100 * acc:.2f}%"]
            if sequence:
                ppl = metrics.get(f"{split}_perplexity")
                cells.append("n/a" if ppl is None else f"{ppl:.4g}")
        table.add_row(split, f"{metrics[f'{split}_loss']:.5g}", *cells)
    console = Console()
    console.print(table)
    if sequence:
        # the unigram baseline: the entropy of the training tokens' frequencies
        console.print(f"test loss {metrics['test_loss']:.4f} nats per token; unigram "
                      f"baseline {metrics['unigram_loss']:.4f} (no context)")
    if metrics.get("stopped_early"):
        console.print(f"stopped early after epoch {metrics['last_epoch']}: no better held-out "
                      f"loss for {cfg['early_stopping']} epochs; the model is epoch "
                      f"{metrics['best_epoch']}'s")
    console.print(f"device {metrics['device']}; precision {cfg.get('precision', 'f32')}; "
                  f"saved to {out}/")
