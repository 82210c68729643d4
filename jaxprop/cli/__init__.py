"""The ``jaxprop`` command line: one module per subcommand.

Each subcommand module exposes ``add_parser(subparsers)`` and ``run(args) -> int``. Errors in
the user's input (``ValueError``, unreadable files) print one line and exit 2; a training run
that diverges exits 1.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import gc
import importlib
import os
import signal
import sys

# subcommand -> module under jaxprop.cli (imported lazily so `jaxprop --help` stays fast)
SUBCOMMANDS = {
    "check": "Check hand-written gradients against jax.grad and finite differences.",
    "explain": "Trace gradient descent step by step on your own small network (JSON spec).",
    "train": "Train a network on a dataset with a JIT-compiled loop.",
    "predict": "Predict the rows of a CSV file with a trained run's model.",
    "generate": "Sample text from a trained sequence run's model (--dataset text, reverse, "
                "sort).",
    "evaluate": "Measure a trained run's model: loss, accuracy and confusion matrix, or R², "
                "RMSE and MAE.",
    "summary": "Show a model's layers, output shapes, parameters, FLOPs and state.",
    "bench": "Benchmark hand-written backprop against NumPy and jax.grad.",
    "devices": "Show the devices JAX sees, their memory, matmul precision and versions.",
}


class UsageError(Exception):
    """Bad command-line arguments (exit code 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, no usage dump
        raise UsageError(f"{self.prog}: {message}")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The ``jaxprop`` parser; with ``only``, the options of that subcommand alone are built
    (its module is the only one imported: the others' names and help still show)."""
    parser = _Parser(
        prog="jaxprop",
        description="Hand-written backpropagation for feedforward networks, compiled with JAX.",
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name, help_text in SUBCOMMANDS.items():
        if only is not None and name != only:
            sub.add_parser(name, help=help_text, description=help_text)
            continue
        try:
            module = importlib.import_module(f"jaxprop.cli.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"jaxprop.cli.{name}":
                raise
            continue
        p = sub.add_parser(name, help=help_text, description=help_text)
        module.add_parser(p)
        p.set_defaults(_run=module.run)
    return parser


def _version() -> str:
    from jaxprop import __version__

    return f"jaxprop {__version__}"


def _subcommand(argv: list[str]) -> str | None:
    """The subcommand ``argv`` names (its first argument that is not an option), if known."""
    first = next((a for a in argv if not a.startswith("-")), None)
    return first if first in SUBCOMMANDS else None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # A command runs once and exits. The subcommand's imports (JAX, optax, jaxprop: some 200,000
    # objects that live as long as the process) load with the garbage collector paused: its full
    # passes would walk them again and again (half of jaxprop's import time, a fifth of JAX's).
    # Then the collector stops walking them at all (tracing and lowering a first program
    # otherwise pay for full collections over all of JAX's objects). Only the command does
    # this: importing jaxprop changes nothing process-wide.
    try:
        with _collector_paused():
            parser = build_parser(_subcommand(argv))
        gc.freeze()
        if signal.getsignal(signal.SIGINT) is _leave_at_once:  # the imports are done
            signal.signal(signal.SIGINT, _interrupt_once)
        args = parser.parse_args(argv)
        return int(args._run(args) or 0)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (ValueError, OSError) as e:
        print(f"jaxprop: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("jaxprop: interrupted", file=sys.stderr)
        return 130
    finally:
        gc.unfreeze()  # (for callers that go on: the tests call main in-process)


@contextlib.contextmanager
def _collector_paused():
    """The garbage collector off inside, as it was (on or off) after."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def command() -> None:
    """The ``jaxprop`` command (and ``python -m jaxprop``): :func:`main`, then :func:`leave`.

    Ctrl-C while the command imports JAX leaves at once (exit 130, one line: nothing has been
    written, and an import cut in half can crash in native code); afterwards it raises
    ``KeyboardInterrupt`` once (``jaxprop train`` keeps its own handler while it trains), and a
    second Ctrl-C while the first is handled, or while the process exits, leaves at once.
    """
    try:
        signal.signal(signal.SIGINT, _leave_at_once)
    except ValueError:  # not the main thread: Python's own handling
        pass
    rc = main()
    with contextlib.suppress(ValueError):
        signal.signal(signal.SIGINT, _leave_at_once)
    leave(rc)


def _leave_at_once(signum, frame) -> None:
    """SIGINT when there is nothing to save: one line, exit 130 (no traceback)."""
    os.write(2, b"jaxprop: interrupted\n")
    os._exit(130)


def _interrupt_once(signum, frame) -> None:
    """SIGINT: ``KeyboardInterrupt`` the first time; a second one leaves at once."""
    signal.signal(signal.SIGINT, _leave_at_once)
    raise KeyboardInterrupt


def leave(rc: int) -> None:
    """Exit with ``rc`` as soon as what must happen at exit has happened: output flushed, the
    ``atexit`` handlers run (JAX's among them: effects awaited, backends released, a
    multi-process run's shutdown). What is skipped is the interpreter freeing, one by one, the
    ~10^6 objects of JAX and XLA that the process ends with (0.2 s of a 0.75 s ``jaxprop
    train`` on XOR), and waiting for threads: a training chunk abandoned after Ctrl-C keeps
    computing in its daemon thread, and ends with the process."""
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):  # a closed pipe (``jaxprop ... | head``): nothing to flush
        pass
    atexit._run_exitfuncs()
    os._exit(rc)


if __name__ == "__main__":
    command()
