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
from jaxprop.bench.harness import RECORD_KEYS, ROOFLINE, VS_JAX_GRAD, VS_NUMPY, target
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
    workload's and the GPU rows'. Each ratio reads one way (:func:`~jaxprop.bench.harness.target`):
    > 1 means jaxprop is faster."""
    out = []

    def add(name, value, goal, unit="x"):
        if value is not None:
            out.append(target(name, value, goal, unit))

    def get(key, **kw):
        r = _find(records, **kw)
        return None if r is None else r[key]

    add(f"xor jp.fit: {VS_NUMPY}",
        get("vs_numpy", workload="xor", impl="jaxprop", variant="jp.fit", device="cpu:0"), 40)
    for variant, tag in (("first jp.fit call", "first jp.fit call"),
                         ("first jp.fit call, compilation cache", "first call, cache")):
        add(f"xor {tag}: {VS_NUMPY}", get("vs_numpy", workload="xor", variant=variant), 1.0)
    add("xor jaxprop train after JAX's import: seconds",
        get("median_s", workload="xor", variant="jaxprop train (after JAX import)"), 0.25,
        unit="s")
    pop = _find(records, workload="xor-population", impl="jaxprop", variant="jp.fit_population",
                device="cpu:0")
    one = _find(records, workload="xor-population", impl="numpy")
    if pop and one:  # one NumPy network's time / the whole population's
        add(f"xor-population, {pop['batch'] // 4} nets vs 1: {VS_NUMPY}",
            one["median_s"] / pop["median_s"], 1.0)
    for dev in sorted({r["device"] for r in records if r["impl"] == "jaxprop"}):
        _mlp_targets(records, dev, add)
    for r in records:  # the gpt training step, on every device (issue 20: >= 1.0x on the CPU)
        if r["workload"] == "gpt" and r["impl"] == "jaxprop":
            add(f"gpt {r['dtype']} {r['device']} batch {r['batch']}: {VS_JAX_GRAD}",
                r["vs_jax_grad"], 1.0)
    return out + cnn.targets(records) + gpu.targets(records)


def _mlp_targets(records, dev: str, add) -> None:
    """The MLP rows' targets on device ``dev``, each given to ``add(name, value, goal)``."""
    for r in records:
        if r["impl"] != "jaxprop" or r["device"] != dev or r["workload"] not in (
                "mlp-grad", "mlp-adam", "batch-sweep"):
            continue
        tag = f"{r['workload']} {r['dtype']} {dev} batch {r['batch']}"
        if r["workload"] != "batch-sweep":
            add(f"{tag}: {VS_JAX_GRAD}", r["vs_jax_grad"], 1.0)
        if (dev.startswith("cpu") and r["dtype"] == "float32" and r["batch"] >= 512
                and r["workload"] != "mlp-adam"):
            add(f"{tag}: {ROOFLINE}", r["roofline_ratio"], 0.85, "share")
    if not dev.startswith("cpu"):
        for r in records:
            if (r["workload"] == "width-sweep" and r["impl"] == "jaxprop"
                    and r["device"] == dev and r["dtype"] == "bfloat16" and r["width"] >= 2048):
                add(f"width-sweep bfloat16 {dev} width {r['width']}: {ROOFLINE}",
                    r["roofline_ratio"], 0.5, "share")


# -- outputs -----------------------------------------------------------------------------------
# Every table fits 80 columns: the records are grouped into one small table per (workload,
# variant, device, dtype), whose title names them; batch and width are columns only where they
# vary in the group, peak MiB only where a row has it. min/max ms, samples/s and the process
# are left to the JSON. What the short column names mean is said once, under the tables.


def _ratio(v):
    return f"{v:.2f}x" if v < 10 else f"{v:.0f}x"


def _count(v):
    """A rate in at most 6 characters: ``2,483``, ``412k``, ``12.3M``."""
    return f"{v:,.0f}" if v < 1e4 else f"{v / 1e3:.0f}k" if v < 1e6 else f"{v / 1e6:.1f}M"


COLUMNS = [  # (title, key, format)
    ("batch", "batch", str), ("width", "width", str), ("impl", "impl", str),
    ("ms", "median_s", lambda v: f"{v * 1e3:.3f}" if v < 1 else f"{v * 1e3:,.0f}"),
    ("compile", "compile_s", lambda v: f"{v:.2f}"),
    ("vs NumPy", "vs_numpy", _ratio),
    ("vs jax.grad", "vs_jax_grad", _ratio),
    ("vs torch", "vs_torch", _ratio),
    ("GFLOP/s", "gflops", lambda v: f"{v:,.0f}" if v >= 1000 else f"{v:.1f}" if v >= 1
     else f"{v:.3f}"),
    ("roof", "roofline_ratio", lambda v: f"{v:.0%}"),
    ("tok/s", "tokens_per_s", _count),
    ("MiB", "peak_bytes", lambda v: f"{v / 2**20:,.0f}"),
]
TEXT_COLUMNS = ("impl",)
GROUP_KEYS = ("workload", "variant", "device", "dtype")
# columns shown only where they tell something: batch and width where they vary in a group;
# the speed-ups over NumPy and torch, tokens/s (sequence models) and peak memory where they
# were measured
VARYING = ("batch", "width")
MEASURED = ("vs_numpy", "vs_torch", "tokens_per_s", "peak_bytes")
LEGEND = ("ms: median milliseconds per call (per epoch for train-digits, per whole run for "
          "XOR). vs NumPy, vs jax.grad, vs torch: speed-ups, NumPy's, jax.grad's or torch's "
          "time / this row's (> 1: this row is faster). roof: roofline, GFLOP/s / the best "
          "matmul's (n/a: a tiny step). compile: seconds. tok/s: tokens per second (gpt). "
          "MiB: peak device memory. min/max ms, samples/s, process: in the JSON.")


def _cells(record, columns=COLUMNS):
    cells = []
    for _, k, fmt in columns:
        v = record.get(k)
        if v is None:
            # a tiny step is overhead-bound: its share of the matmul rate means nothing
            cells.append("n/a" if k == "roofline_ratio" and record.get("gflops") else "-")
        else:
            cells.append(fmt(v))
    return cells


def groups(records) -> list[tuple[str, list, list[dict]]]:
    """``(title, columns, records)``: one table per (workload, variant, device, dtype), in the
    order the records first name them, with only the columns that tell something."""
    grouped: dict[tuple, list] = {}
    for r in records:
        grouped.setdefault(tuple(r[k] for k in GROUP_KEYS), []).append(r)
    out = []
    for key, rows in grouped.items():
        columns = [c for c in COLUMNS
                   if (c[1] not in VARYING or len({r[c[1]] for r in rows}) > 1)
                   and (c[1] not in MEASURED or any(r.get(c[1]) is not None for r in rows))]
        fixed = [f"{k} {rows[0][k]}" for k in VARYING
                 if len({r[k] for r in rows}) == 1 and rows[0][k] is not None]
        title = " · ".join([*key, *fixed])
        out.append((title, columns, rows))
    return out


def _wrap(text: str, width: int = 80) -> list[str]:
    """``text`` in lines of at most ``width`` characters (a longer word, e.g. a path, whole)."""
    import textwrap

    return textwrap.wrap(text, width, break_long_words=False, break_on_hyphens=False)


QUICK_NOTICE = ("--quick: tiny sizes, a smoke test of the benchmark itself; these numbers are "
                "not measurements and no target is judged")


def print_table(console, records, summary, *, quick: bool = False) -> None:
    """Print the records, one small table per group (:func:`groups`), what the columns mean,
    then each target and whether it was met. Every line fits 80 columns.

    Args:
      console: the ``rich`` console to print to.
      records: the benchmark's records (``RECORD_KEYS``), one row each (``matmul`` rows dim).
      summary: the targets (:func:`targets`): dicts with ``target``, ``value``, ``unit``,
        ``goal`` and ``met``.
      quick: a ``--quick`` run: print ``QUICK_NOTICE`` under the tables.

    Returns:
      ``None``; everything goes to ``console``.
    """
    console.print("[bold]jaxprop bench[/]\n")
    for title, columns, rows in groups(records):
        table = _table(title, [(name, key not in TEXT_COLUMNS) for name, key, _ in columns])
        for r in rows:
            table.add_row(*_cells(r, columns), style="dim" if r["impl"] == "matmul" else None)
        console.print(table, "")
    for line in _wrap(LEGEND):
        console.print(line, highlight=False)
    if quick:
        console.print(f"[yellow]{QUICK_NOTICE}[/]")
    if not summary:
        return
    table = _table("targets", [("target", False), ("measured", True), ("goal", True),
                               ("met", False)])
    for t in summary:
        table.add_row(t["target"], format_value(t), format_goal(t),
                      "[green]yes[/]" if t["met"] else "[red]no[/]")
    console.print("", table, "")
    for line in _wrap(TARGETS_LEGEND):
        console.print(line, highlight=False)


def _table(title: str, columns: list[tuple[str, bool]]):
    """A compact ``rich`` table (one space between columns) with ``(name, numeric)``
    columns, numbers to the right."""
    from rich import box
    from rich.table import Table

    table = Table(title=title, title_justify="left", header_style="bold", box=box.SIMPLE_HEAD,
                  pad_edge=False, show_edge=False, collapse_padding=True)
    for name, numeric in columns:
        table.add_column(name, justify="right" if numeric else "left")
    return table


def format_value(t: dict) -> str:
    """A target's measured value in its unit: ``1.22x``, ``76%``, ``0.443 s``."""
    return _in_unit(t["value"], t["unit"])


def format_goal(t: dict) -> str:
    """A target's goal with its direction: ``>= 40x``, ``>= 85%``, ``<= 0.25 s``."""
    return f"{'<=' if t['unit'] == 's' else '>='} {_in_unit(t['goal'], t['unit'])}"


def _in_unit(v: float, unit: str) -> str:
    return {"x": f"{v:.3g}x", "share": f"{v:.0%}", "s": f"{v:.3g} s"}[unit]


TARGETS_LEGEND = ("vs NumPy, vs jax.grad: speed-ups, the other's time / jaxprop's (> 1: "
                  "jaxprop is faster). roofline: jaxprop's GFLOP/s / the best matmul's.")


def targets_markdown(summary) -> str:
    """The targets as a markdown table (every line within 80 columns), with its legend."""
    lines = ["| target | measured | goal | met |", "|---|---:|---:|---|"]
    lines += [f"| {t['target']} | {format_value(t)} | {format_goal(t)} | "
              f"{'yes' if t['met'] else 'no'} |" for t in summary]
    return "\n".join(lines + [""] + _wrap(TARGETS_LEGEND))


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
    """The run as markdown: the header, one table per group (:func:`groups`), what the columns
    mean, and the targets. The tables' lines fit 80 columns."""
    lines = [
        *_wrap(f"Device: {head['device']}; CPU: {head['cpu_model']}; GPU: "
               f"{head['gpu_model'] or 'none'}; JAX {head['jax_version']}; date {head['date']}; "
               f"isolation: {head['isolation']}."),
        *_wrap(f"Command: `{head['command']}`"), "",
    ]
    if head.get("quick"):
        lines += [*_wrap(f"**{QUICK_NOTICE}.**"), ""]
    for title, columns, rows in groups(records):
        lines += [*_wrap(f"**{title}**"), "",
                  "| " + " | ".join(name for name, _, _ in columns) + " |",
                  "|" + "|".join("---" if k in TEXT_COLUMNS else "---:" for _, k, _ in columns)
                  + "|"]
        lines += ["| " + " | ".join(_cells(r, columns)) + " |" for r in rows]
        lines += [""]
    lines += _wrap(LEGEND)
    if summary:
        lines += ["", targets_markdown(summary)]
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
