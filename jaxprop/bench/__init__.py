"""Benchmarks: hand-written backprop against NumPy, ``jax.grad`` and PyTorch, on every device.

``jaxprop bench`` and ``python benchmarks/run.py`` both call :func:`run`. See
``benchmarks/README.md`` for the workloads and what each column means.
"""

from __future__ import annotations

from jaxprop.bench.workloads import DTYPES, IMPLS, RECORD_KEYS, WORKLOADS, Bench, Config


def run(config: Config, *, json_path=None, markdown_path=None, plots_dir=None, console=None):
    """Run the benchmark, print the table, write the requested files; returns the JSON dict."""
    import sys

    from rich.console import Console

    from jaxprop.bench import gpu, report

    # a wide table is the point: don't squeeze it to 80 columns when writing to a file or pipe
    console = console or Console(width=None if sys.stdout.isatty() else 200)
    bench = Bench(config, log=lambda line: console.print(f"[dim]{line}[/]"))
    records = bench.run()
    head = report.header(config, bench.notes + _bf16_notes(records))
    summary = report.targets(records) + gpu.targets(records)
    report.print_table(console, records, summary)
    if json_path:
        report.write_json(json_path, head, records, summary)
    if markdown_path:
        with open(markdown_path, "w") as f:
            f.write(report.markdown(head, records, summary))
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


__all__ = ["DTYPES", "IMPLS", "RECORD_KEYS", "WORKLOADS", "Bench", "Config", "run"]
