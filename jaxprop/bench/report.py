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

from jaxprop.bench import cnn, gpu  # their own targets: the CNN and the GPU rows
from jaxprop.bench.harness import RECORD_KEYS
from jaxprop.bench.numpy_baseline import numpy_blas

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
        "numpy_blas": numpy_blas(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join(sys.argv),
        "python": platform.python_version(),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "matmul_precision": config.matmul_precision,
        "repeats": config.repeats,
        "warmup": config.warmup,
        "isolation": config.isolation,
        "quick": config.quick_run,
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
    """Every target, as measured in this run (only those whose cells ran), including the CNN
    workload's and the GPU rows'."""
    out = []

    def add(name, value, goal, higher=True):
        if value is not None:
            met = value >= goal if higher else value <= goal
            out.append({"target": name, "value": round(value, 3), "goal": goal, "met": met})

    def get(key, **kw):
        r = _find(records, **kw)
        return None if r is None else r[key]

    add("xor: jp.fit, NumPy's time / jaxprop's >= 40x",
        get("vs_numpy", workload="xor", impl="jaxprop", variant="jp.fit", device="cpu:0"), 40)
    for variant in ("first jp.fit call", "first jp.fit call, compilation cache"):
        add(f"xor: {variant} (fresh process), NumPy's whole loop / it >= 1x",
            get("vs_numpy", workload="xor", variant=variant), 1.0)
    add("xor: jaxprop train (compile + 10,000 epochs) after JAX's import <= 0.25 s",
        get("median_s", workload="xor", variant="jaxprop train (after JAX import)"), 0.25,
        higher=False)
    pop = _find(records, workload="xor-population", impl="jaxprop", variant="jp.fit_population",
                device="cpu:0")
    one = _find(records, workload="xor-population", impl="numpy")
    if pop and one:
        add(f"xor-population: {pop['batch'] // 4} networks (jp.fit_population) / one NumPy "
            "network <= 1x", pop["median_s"] / one["median_s"], 1.0, higher=False)
    for dev in sorted({r["device"] for r in records if r["impl"] == "jaxprop"}):
        _mlp_targets(records, dev, add)
    return out + cnn.targets(records) + gpu.targets(records)


def _mlp_targets(records, dev: str, add) -> None:
    """The MLP rows' targets on device ``dev``, each given to ``add(name, value, goal)``."""
    for r in records:
        if r["impl"] != "jaxprop" or r["device"] != dev or r["workload"] not in (
                "mlp-grad", "mlp-adam", "batch-sweep"):
            continue
        tag = f"{r['workload']} {r['dtype']} ({dev}, batch {r['batch']})"
        if r["workload"] != "batch-sweep":
            add(f"{tag}: jax.grad's time / jaxprop's >= 1.0x", r["vs_jax_grad"], 1.0)
        if (dev.startswith("cpu") and r["dtype"] == "float32" and r["batch"] >= 512
                and r["workload"] != "mlp-adam"):
            add(f"{tag}: jaxprop GFLOP/s / best matmul GFLOP/s >= 0.85",
                r["roofline_ratio"], 0.85)
    if not dev.startswith("cpu"):
        for r in records:
            if (r["workload"] == "width-sweep" and r["impl"] == "jaxprop"
                    and r["device"] == dev and r["dtype"] == "bfloat16" and r["width"] >= 2048):
                add(f"width-sweep bfloat16 width {r['width']} ({dev}): jaxprop / bf16 matmul "
                    ">= 0.5", r["roofline_ratio"], 0.5)


# -- outputs -----------------------------------------------------------------------------------


def _ratio(v):
    return f"{v:.2f}x" if v < 10 else f"{v:.0f}x"


COLUMNS = [  # (title, key, format)
    ("workload", "workload", str), ("impl", "impl", str), ("variant", "variant", str),
    ("device", "device", str), ("dtype", "dtype", str), ("batch", "batch", str),
    ("width", "width", str),
    ("median ms", "median_s", lambda v: f"{v * 1e3:.3f}"),
    ("min ms", "min_s", lambda v: f"{v * 1e3:.3f}"),
    ("max ms", "max_s", lambda v: f"{v * 1e3:.3f}"),
    ("compile s", "compile_s", lambda v: f"{v:.2f}"),
    ("vs numpy", "vs_numpy", _ratio),
    ("vs jax.grad", "vs_jax_grad", _ratio),
    ("samples/s", "samples_per_s", lambda v: f"{v:,.0f}"),
    ("GFLOP/s", "gflops", lambda v: f"{v:.1f}" if v >= 1 else f"{v:.3f}"),
    ("roofline", "roofline_ratio", lambda v: f"{v:.0%}"),
    ("process", "process", str),
    ("peak MiB", "peak_bytes", lambda v: f"{v / 2**20:.0f}"),
]
TEXT_COLUMNS = ("workload", "impl", "variant", "device", "dtype", "process")


def _cells(record):
    cells = []
    for _, k, fmt in COLUMNS:
        v = record.get(k)
        if v is None:
            # a tiny step is overhead-bound: its share of the matmul rate means nothing
            cells.append("n/a" if k == "roofline_ratio" and record.get("gflops") else "-")
        else:
            cells.append(fmt(v))
    return cells


QUICK_NOTICE = ("--quick: tiny sizes, a smoke test of the benchmark itself; these numbers are "
                "not measurements and no target is judged")


def print_table(console, records, summary, *, quick: bool = False) -> None:
    """Print the records as one table, then each target and whether it was met.

    Args:
      console: the ``rich`` console to print to.
      records: the benchmark's records (``RECORD_KEYS``), one row each (``matmul`` rows dim).
      summary: the targets (:func:`targets`): dicts with ``target``, ``value`` and ``met``.
      quick: a ``--quick`` run: print ``QUICK_NOTICE`` under the table.

    Returns:
      ``None``; everything goes to ``console``.
    """
    from rich.table import Table

    table = Table(title="jaxprop bench", header_style="bold")
    for title, key, _ in COLUMNS:
        table.add_column(title, justify="left" if key in TEXT_COLUMNS else "right")
    for r in records:
        table.add_row(*_cells(r), style="dim" if r["impl"] == "matmul" else None)
    console.print(table)
    if quick:
        console.print(f"[yellow]{QUICK_NOTICE}[/]")
    for t in summary:
        mark = "[green]met[/]" if t["met"] else "[red]below target[/]"
        console.print(f"  {t['target']}: {t['value']}  {mark}")


def write_json(path, head, records, summary) -> None:
    """Write ``{"header", "records", "targets"}`` to ``path`` as indented JSON.

    Args:
      path: the file to write (replaced if it exists).
      head: the run's header (:func:`header`).
      records: the benchmark's records; each is written with exactly the ``RECORD_KEYS``
        (``null`` for a missing one).
      summary: the targets (:func:`targets`).

    Returns:
      ``None``; the file is written.
    """
    data = {"header": head, "records": [{k: r.get(k) for k in RECORD_KEYS} for r in records],
            "targets": summary}
    Path(path).write_text(json.dumps(data, indent=1) + "\n")


def markdown(head, records, summary) -> str:
    lines = [
        f"Device: {head['device']}; CPU: {head['cpu_model']}; GPU: {head['gpu_model'] or 'none'}; "
        f"JAX {head['jax_version']}; date {head['date']}; isolation: {head['isolation']}.",
        f"Command: `{head['command']}`", "",
    ]
    if head.get("quick"):
        lines += [f"**{QUICK_NOTICE}.**", ""]
    lines += [
        "| " + " | ".join(t for t, _, _ in COLUMNS) + " |",
        "|" + "|".join("---" if k in TEXT_COLUMNS else "---:" for _, k, _ in COLUMNS) + "|",
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
