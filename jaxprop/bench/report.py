"""Reporting: the run's header, the targets, and the rich / JSON / markdown / PNG outputs."""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import platform
import shlex
import sys
from pathlib import Path

import jax
import numpy as np

from jaxprop.bench import cnn
from jaxprop.bench.workloads import RECORD_KEYS

# -- header ------------------------------------------------------------------------------------


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``, else ``platform``), with its core count."""
    name, info = platform.processor() or platform.machine(), {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
        name = info.get("model name", name)
        if "cpu family" in info and "model" in info:
            name += f" (family {info['cpu family']} model {info['model']})"
        bf16 = [f for f in ("avx512_bf16", "amx_bf16") if f in info.get("flags", "").split()]
        if bf16:
            name += f", {'/'.join(bf16)}"
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} cores"


def gpu_model() -> str | None:
    names = []
    for backend in ("gpu", "tpu"):
        try:
            names += [d.device_kind for d in jax.devices(backend)]
        except RuntimeError:
            pass
    return ", ".join(names) or None


def _blas() -> str | None:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    return "; ".join(
        f"{i.get('internal_api')} {i.get('version')} ({i.get('architecture')}, "
        f"{i.get('num_threads')} threads)"
        for i in threadpool_info() if i.get("user_api") == "blas"
    ) or None


def header(config, notes=()) -> dict:
    """What ran where: devices, versions, CPU/GPU model, date, command, machine load."""
    devices = [f"{d.platform}:{d.id} {d.device_kind}" for d in jax.devices()]
    for backend in ("gpu", "tpu"):
        try:
            devices += [f"{d.platform}:{d.id} {d.device_kind}" for d in jax.devices(backend)]
        except RuntimeError:
            pass
    try:
        torch_version = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        torch_version = None
    return {
        "device": ", ".join(dict.fromkeys(devices)),
        "jax_version": jax.__version__,
        "numpy_version": np.__version__,
        "torch_version": torch_version,
        "cpu_model": cpu_model(),
        "gpu_model": gpu_model(),
        "numpy_blas": _blas(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join(sys.argv),
        "python": platform.python_version(),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "matmul_precision": config.matmul_precision,
        "repeats": config.repeats,
        "warmup": config.warmup,
        "notes": list(notes) + ([f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}"]
                                if "OMP_WAIT_POLICY" in os.environ else []),
    }


# -- targets -----------------------------------------------------------------------------------


def _find(records, **kw):
    for r in records:
        if all(r[k] == v for k, v in kw.items()):
            return r
    return None


def targets(records) -> list[dict]:
    """The issue's targets, as ratios measured in this run (only those whose cells ran)."""
    out = []

    def add(name, value, goal, higher=True):
        if value is not None:
            met = value >= goal if higher else value <= goal
            out.append({"target": name, "value": round(value, 3), "goal": goal, "met": met})

    def ratio(a, b):
        return a["median_s"] / b["median_s"] if a and b else None

    numpy_xor = _find(records, workload="xor", impl="numpy")
    for dev in sorted({r["device"] for r in records if r["impl"] == "jaxprop"}):
        add(f"xor: numpy time / jaxprop time ({dev}) >= 15x",
            ratio(numpy_xor, _find(records, workload="xor", impl="jaxprop", device=dev)), 15)
        pop = _find(records, workload="xor-population", impl="jaxprop", device=dev)
        one = _find(records, workload="xor-population", impl="numpy")
        if pop:
            add(f"xor-population: {pop['batch'] // 4} jaxprop networks / one numpy network "
                f"({dev}) <= 5x", ratio(pop, one), 5, higher=False)
        for dtype in ("float32", "bfloat16"):
            for workload in ("mlp-grad", "mlp-adam"):
                hand = _find(records, workload=workload, impl="jaxprop", device=dev, dtype=dtype)
                if not hand:
                    continue
                tag = f"{workload} {dtype} ({dev}, batch {hand['batch']})"
                add(f"{tag}: jax.grad time / jaxprop time >= 1.0x", ratio(
                    _find(records, workload=workload, impl="jax.grad", device=dev, dtype=dtype),
                    hand), 1.0)
                if workload == "mlp-grad":
                    add(f"{tag}: numpy time / jaxprop time >= 1.5x", ratio(
                        _find(records, workload=workload, impl="numpy", dtype=dtype), hand), 1.5)
                    if dev.startswith("cpu") and dtype == "float32":
                        add(f"{tag}: jaxprop GFLOP/s / matmul GFLOP/s >= 0.85",
                            hand["roofline_ratio"], 0.85)
        if not dev.startswith("cpu"):
            for r in records:
                if (r["workload"] == "width-sweep" and r["impl"] == "jaxprop"
                        and r["device"] == dev and r["dtype"] == "bfloat16" and r["width"] >= 2048):
                    add(f"width-sweep bfloat16 width {r['width']} ({dev}): jaxprop / bf16 matmul "
                        ">= 0.5", r["roofline_ratio"], 0.5)
    return out + cnn.targets(records)


# -- outputs -----------------------------------------------------------------------------------

COLUMNS = [  # (title, key, format)
    ("workload", "workload", str), ("impl", "impl", str), ("device", "device", str),
    ("dtype", "dtype", str), ("batch", "batch", str), ("width", "width", str),
    ("median ms", "median_s", lambda v: f"{v * 1e3:.3f}"),
    ("min ms", "min_s", lambda v: f"{v * 1e3:.3f}"),
    ("max ms", "max_s", lambda v: f"{v * 1e3:.3f}"),
    ("compile s", "compile_s", lambda v: f"{v:.2f}"),
    ("samples/s", "samples_per_s", lambda v: f"{v:,.0f}"),
    ("GFLOP/s", "gflops", lambda v: f"{v:.1f}" if v >= 1 else f"{v:.3f}"),
    ("roofline", "roofline_ratio", lambda v: f"{v:.0%}"),
    ("peak MiB", "peak_bytes", lambda v: f"{v / 2**20:.0f}"),
]


def _cells(record):
    return [("-" if record[k] is None else fmt(record[k])) for _, k, fmt in COLUMNS]


def print_table(console, records, summary) -> None:
    from rich.table import Table

    table = Table(title="jaxprop bench", header_style="bold")
    for title, key, _ in COLUMNS:
        table.add_column(title, justify="left" if key in ("workload", "impl", "device",
                                                          "dtype") else "right")
    for r in records:
        table.add_row(*_cells(r), style="dim" if r["impl"] == "matmul" else None)
    console.print(table)
    for t in summary:
        mark = "[green]met[/]" if t["met"] else "[red]below target[/]"
        console.print(f"  {t['target']}: {t['value']}  {mark}")


def write_json(path, head, records, summary) -> None:
    data = {"header": head, "records": [{k: r[k] for k in RECORD_KEYS} for r in records],
            "targets": summary}
    Path(path).write_text(json.dumps(data, indent=1) + "\n")


def markdown(head, records, summary) -> str:
    lines = [
        f"Device: {head['device']}; CPU: {head['cpu_model']}; GPU: {head['gpu_model'] or 'none'}; "
        f"JAX {head['jax_version']}; date {head['date']}.",
        f"Command: `{head['command']}`", "",
        "| " + " | ".join(t for t, _, _ in COLUMNS) + " |",
        "|" + "|".join("---" if k in ("workload", "impl", "device", "dtype") else "---:"
                       for _, k, _ in COLUMNS) + "|",
    ]
    lines += ["| " + " | ".join(_cells(r)) + " |" for r in records]
    if summary:
        lines += ["", "| target | measured | met |", "|---|---:|---|"]
        lines += [f"| {t['target']} | {t['value']} | {'yes' if t['met'] else 'no'} |"
                  for t in summary]
    return "\n".join(lines) + "\n"


def write_plots(directory, records) -> list[Path]:
    """``batch_sweep.png`` (time vs batch) and ``width_sweep.png`` (GFLOP/s vs width)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for workload, xkey, ykey, ylabel, fname in (
        ("batch-sweep", "batch", "median_s", "time per gradient (s)", "batch_sweep.png"),
        ("width-sweep", "width", "gflops", "achieved GFLOP/s", "width_sweep.png"),
    ):
        rows = [r for r in records if r["workload"] == workload and r[ykey] is not None]
        if not rows:
            continue
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for line in dict.fromkeys((r["impl"], r["device"], r["dtype"]) for r in rows):
            pts = sorted((r[xkey], r[ykey]) for r in rows
                         if (r["impl"], r["device"], r["dtype"]) == line)
            ax.plot(*zip(*pts), marker="o", label=" ".join(line),
                    linestyle="--" if line[0] == "matmul" else "-")
        ax.set(xscale="log", yscale="log", xlabel=xkey, ylabel=ylabel,
               title=f"{workload}: relu MLP, softmax cross-entropy")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(directory / fname, dpi=120)
        plt.close(fig)
        written.append(directory / fname)
    return written
