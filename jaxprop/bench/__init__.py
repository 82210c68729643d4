"""Benchmarks: hand-written backprop against NumPy, ``jax.grad`` and PyTorch, on every device.

``jaxprop bench`` and ``python benchmarks/run.py`` both call :func:`run`; your own model:
:func:`compare`. The workloads are the table ``WORKLOADS`` (:mod:`jaxprop.bench.workloads`),
the timing method is :mod:`jaxprop.bench.timing`; ``benchmarks/README.md`` explains both.

Each module imports only those before it (tests/test_bench.py checks that there is no cycle)::

    numpy_baseline <- numpy_cnn <- torch_impl <- jobs <- timing <- {worker, harness, steps, flops}
    <- {cnn, gpu} <- {workloads, report} <- __init__

``jobs`` builds the NumPy/torch calls, ``worker`` is their process, ``harness`` times cells,
``steps`` compiles the JAX steps, ``flops`` counts FLOPs, ``workloads`` holds the table and
:class:`Bench`.
"""

from __future__ import annotations

import os
from pathlib import Path

from jaxprop.bench.harness import DTYPES, IMPLS, ISOLATION, RECORD_KEYS, Config
from jaxprop.bench.workloads import DEFAULT_WORKLOADS, WORKLOADS, Bench, compare, workload_names


def check_output_paths(json_path=None, markdown_path=None, plots_dir=None) -> None:
    """Raise ``ValueError`` now, not after a long run, if an output cannot be written."""
    for flag, path in (("--json", json_path), ("--markdown", markdown_path)):
        if not path:
            continue
        p = Path(path)
        if p.is_dir():
            raise ValueError(f"{flag} {path}: is a directory, not a file")
        if not p.parent.is_dir():
            raise ValueError(f"{flag} {path}: the folder {p.parent} does not exist")
        if not os.access(p.parent, os.W_OK) or (p.exists() and not os.access(p, os.W_OK)):
            raise ValueError(f"{flag} {path}: not writable")
    if plots_dir:
        p = Path(plots_dir)
        if p.exists() and not p.is_dir():
            raise ValueError(f"--plots {plots_dir}: exists and is not a folder")
        parent = p if p.exists() else next(a for a in p.absolute().parents if a.exists())
        if not parent.is_dir() or not os.access(parent, os.W_OK):
            raise ValueError(f"--plots {plots_dir}: cannot create files under {parent}")


def run(config: Config, *, json_path=None, markdown_path=None, plots_dir=None, console=None):
    """Run the benchmark, print the table, write the requested files; returns the JSON dict.

    Every output path is checked (:func:`check_output_paths`) before anything runs.

    Args:
      config: the benchmark's :class:`Config` (workloads, implementations, dtypes, isolation).
      json_path: the file to write the JSON dict to, or ``None`` for none.
      markdown_path: the file to write the Markdown table to, or ``None`` for none.
      plots_dir: the folder to write the plots into, or ``None`` for none.
      console: the ``rich`` console to print to; ``None`` makes one (as wide as the terminal,
        80 columns when writing to a file or pipe: the tables fit).

    Returns:
      the JSON dict: ``{"header": ..., "records": [...], "targets": [...]}`` (no targets for a
      quick run).
    """
    from rich.console import Console

    from jaxprop.bench import report

    check_output_paths(json_path, markdown_path, plots_dir)
    names = workload_names(config)
    # the tables fit 80 columns (report.print_table): the terminal's width, or 80 in a pipe
    console = console or Console()
    if config.quick_run:
        console.print(f"[yellow]{report.QUICK_NOTICE}[/]")
    with Bench(config, log=lambda line: console.print(f"[dim]{line}[/]")) as bench:
        bench.run(names)
        settle = bench.settle()
    records = bench.records
    notes = bench.notes + _bf16_notes(records)
    if config.isolation == "process":
        notes.append(f"NumPy and torch ran in worker processes; after each timed call, the "
                     f"process waited until its threads were idle (longest wait "
                     f"{settle * 1e3:.0f} ms)")
    head = report.header(config, notes)
    summary = [] if config.quick_run else report.targets(records)
    report.print_table(console, records, summary, quick=config.quick_run)
    if json_path:
        report.write_json(json_path, head, records, summary)
    if markdown_path:
        Path(markdown_path).write_text(report.markdown(head, records, summary))
    if plots_dir:
        for path in report.write_plots(plots_dir, records):
            console.print(f"wrote {path}")
    return {"header": head, "records": records, "targets": summary}


def _bf16_notes(records) -> list[str]:
    """Say where a bfloat16 matmul ran slower than float32 (emulated or without bf16 units)."""
    rates = {}
    for r in records:
        if r["impl"] == "matmul":
            rates.setdefault((r["device"], r["dtype"]), []).append(r["gflops"])
    notes = []
    for (device, dtype), bf16 in rates.items():
        f32 = rates.get((device, "float32"))
        if dtype == "bfloat16" and f32 and max(bf16) < max(f32):
            notes.append(
                f"bfloat16 matmuls on {device} peak at {max(bf16):.0f} GFLOP/s, below float32's "
                f"{max(f32):.0f}: bf16 is emulated or slow on this device"
            )
    return notes


__all__ = ["DEFAULT_WORKLOADS", "DTYPES", "IMPLS", "ISOLATION", "RECORD_KEYS", "WORKLOADS",
           "Bench", "Config", "check_output_paths", "compare", "run"]
