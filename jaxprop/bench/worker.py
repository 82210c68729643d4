"""The benchmark's worker process: builds NumPy and PyTorch jobs and times them on request.

``python -m jaxprop.bench.worker`` reads pickled ``(command, args, kwargs)`` from stdin and
answers each with a pickled ``(ok, value)`` on stdout (anything the libraries print goes to
stderr). Commands: ``pid``; ``setup(name, factory, **kwargs)`` builds job ``name`` from
``FACTORIES[factory]`` (:mod:`jaxprop.bench.jobs`); ``warm(name, n)``; ``time(name, calls)``
-> ``(seconds per call, settle)`` (a timed block of calls, then
:func:`~jaxprop.bench.timing.quiet`); ``info(what)`` (``jobs.INFO``); ``drop(name)``; ``close``.
Nothing here starts JAX: the worker's only threads are those of the library it times.
"""

from __future__ import annotations

import os
import pickle
import sys

import numpy as np

from jaxprop.bench.jobs import FACTORIES, INFO
from jaxprop.bench.timing import block_time, quiet, time_calls


COMMANDS = ("pid", "setup", "warm", "time", "drop", "info")  # and "close"


def main() -> None:
    out = os.fdopen(os.dup(1), "wb")  # the protocol's channel; stray prints go to stderr
    os.dup2(2, 1)
    inp = sys.stdin.buffer
    jobs = {}

    def reply(value, ok=True):
        pickle.dump((ok, value), out)
        out.flush()

    while True:
        try:
            command, args, kwargs = pickle.load(inp)
        except EOFError:
            return
        if command == "close":
            reply(None)
            return
        if command not in COMMANDS:
            reply(f"unknown command {command!r}", ok=False)
            continue
        try:
            reply(_answer(jobs, command, args, kwargs))
        except Exception as e:  # noqa: BLE001 - report it to the parent, keep serving
            reply(f"{type(e).__name__}: {e}", ok=False)


def _answer(jobs: dict, command: str, args, kwargs):
    """What the worker answers to ``command`` (one of ``COMMANDS``), acting on ``jobs``."""
    if command == "pid":
        return os.getpid()
    if command == "setup":
        name, factory = args
        jobs[name] = FACTORIES[factory](**kwargs)
    elif command == "warm":
        name, n = args
        call, sync = jobs[name]
        time_calls(call, repeats=0, warmup=n, sync=sync)
        quiet()
    elif command == "time":
        name, calls = args
        seconds = block_time(*jobs[name], calls)
        return seconds, quiet()
    elif command == "drop":
        jobs.pop(args[0], None)
    elif command == "info":
        return INFO[args[0]]()
    return None


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
