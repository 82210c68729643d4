"""Regenerate every benchmark figure of README.md and benchmarks/README.md, in one command.

    python benchmarks/figures.py             # ~15 min on 2 quiet cores; writes benchmarks/results/
    python benchmarks/figures.py --quick     # a smoke test of this script (nothing is updated)
    python benchmarks/figures.py --tables-only   # README tables from benchmarks/results/ again
    python benchmarks/figures.py --workloads xor-population   # re-measure some rows only

1. The whole benchmark (``jaxprop bench``, every default workload, float32 and bfloat16):
   ``results/cpu.json``, ``results/cpu.md`` (the full table) and ``results/plots/``.
2. The same MLP cell (784-1024-1024-10, batch 512, float32) timed three ways: JAX alone (no
   NumPy in the run), NumPy interleaved in the same process (the old method) and NumPy in its
   own process (the method now): ``results/isolation.json``.
3. The tables between ``<!-- figures:NAME -->`` and ``<!-- /figures:NAME -->`` in README.md
   (``targets``) and benchmarks/README.md (``targets``, ``isolation``, ``summary``) are
   replaced by the new figures, with the date, machine and load of the run.

Run it on a quiet machine: every other process slows some rows more than others.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _ms(v):
    return f"{v * 1e3:.3f}" if v < 1 else f"{v * 1e3:,.0f}"


def targets_table(result) -> str:
    """The targets (``report.targets_markdown``: one ratio direction, 80 columns)."""
    from jaxprop.bench import report

    return report.targets_markdown(result["targets"])


SUMMARY = [  # (label, workload, impl, variant, column)
    ("XOR, NumPy's classic loop", "xor", "numpy", "classic loop", "median_s"),
    ("XOR, `jp.fit` (repeated calls)", "xor", "jaxprop", "jp.fit", "median_s"),
    ("XOR, the same with `jax.grad`", "xor", "jax.grad", "jp.fit", "median_s"),
    ("XOR, first `jp.fit` call", "xor", "jaxprop", "first jp.fit call", "median_s"),
    ("XOR, the same, compilation cache", "xor", "jaxprop",
     "first jp.fit call, compilation cache", "median_s"),
    ("XOR, `jaxprop train` after import", "xor", "jaxprop",
     "jaxprop train (after JAX import)", "median_s"),
    ("XOR, `jaxprop train`, whole command", "xor", "jaxprop",
     "jaxprop train (whole command)", "median_s"),
    ("1000 XOR nets, `jp.fit_population`", "xor-population", "jaxprop",
     "jp.fit_population", "median_s"),
    ("MLP gradient, jaxprop", "mlp-grad", "jaxprop", "gradient", "median_s"),
    ("MLP gradient, `jax.grad`", "mlp-grad", "jax.grad", "gradient", "median_s"),
    ("MLP gradient, NumPy", "mlp-grad", "numpy", "gradient", "median_s"),
    ("digits epoch, `jp.fit`", "train-digits", "jaxprop", "jp.fit", "median_s"),
    ("digits epoch, `jp.fit`, optimised", "train-digits", "jaxprop",
     "jp.fit, full optimisation", "median_s"),
    ("digits epoch, `jax.grad` + optax", "train-digits", "jax.grad", "jp.fit", "median_s"),
    ("digits epoch, PyTorch eager", "train-digits", "torch", "eager loop", "median_s"),
]
SUMMARY_LEGEND = (
    "XOR: 10,000 epochs (a first call: in a fresh process; `jaxprop train`: after JAX's "
    "import, or the whole command from Python's start to its exit, `--no-plots`); MLP: "
    "784-1024-1024-10, batch 512; digits: one epoch of `jaxprop train --dataset digits` "
    "(optimised: `compiler_options=None`; `jax.grad` + optax in the same scan). vs NumPy, "
    "vs jax.grad: speed-ups, NumPy's or jax.grad's time / this row's (> 1: this row is "
    "faster).")


def summary_table(result) -> str:
    import textwrap

    recs = result["records"]
    lines = ["| what (CPU, float32) | median ms | compile s | vs NumPy | vs jax.grad |",
             "|---|---:|---:|---:|---:|"]
    for label, workload, impl, variant, _ in SUMMARY:
        r = next((r for r in recs if (r["workload"], r["impl"], r["variant"], r["device"])
                  == (workload, impl, variant, "cpu:0") and r["dtype"] == "float32"), None)
        if r is None:
            continue

        def f(v, fmt):
            return "-" if v is None else fmt(v)

        lines.append(f"| {label} | {_ms(r['median_s'])} | {f(r['compile_s'], '{:.2f}'.format)}"
                     f" | {f(r['vs_numpy'], '{:.2f}x'.format)}"
                     f" | {f(r['vs_jax_grad'], '{:.2f}x'.format)} |")
    return "\n".join(lines + [""] + textwrap.wrap(SUMMARY_LEGEND, 80, break_on_hyphens=False))


ISOLATION_LABELS = {  # the methods' names in isolation.json -> the table's (80 columns)
    "JAX alone": "JAX alone (no NumPy in the run)",
    "NumPy in the same process, back to back (old)": "NumPy in the same process (old)",
    "NumPy in its own process, quiet wait (now)": "NumPy in its own process (now)",
}


def isolation_table(runs) -> str:
    lines = ["| method | jaxprop ms | jax.grad ms | NumPy ms | jaxprop roofline |",
             "|---|---:|---:|---:|---:|"]
    for label, result in runs:
        recs = {r["impl"]: r for r in result["records"] if r["workload"] == "mlp-grad"}

        def ms(impl):
            return _ms(recs[impl]["median_s"]) if impl in recs else "-"

        roof = recs.get("jaxprop", {}).get("roofline_ratio")
        lines.append(f"| {ISOLATION_LABELS.get(label, label)} | {ms('jaxprop')} | "
                     f"{ms('jax.grad')} | {ms('numpy')} | "
                     f"{'-' if roof is None else f'{roof:.0%}'} |")
    return "\n".join(lines)


def stamp(head) -> str:
    load = head.get("load_average")
    text = "n/a" if not load else ", ".join(f"{v:.1f}" for v in load)
    cores = os.cpu_count() or 1
    # the benchmark itself keeps up to every core busy: only more than that means other work
    busy = (f" **The machine was busy (load average {load[0]:.1f} on {cores} cores): other "
            f"processes slowed some rows more than others; these figures are noisy, rerun "
            f"`python benchmarks/figures.py` on a quiet machine.**"
            if load and load[0] > cores + 1 else "")
    return (f"_{head['cpu_model']}; JAX {head['jax_version']}, NumPy {head['numpy_version']}, "
            f"torch {head['torch_version'] or 'not installed'}; {head['date']}; load average "
            f"at the end {text} (the benchmark's own processes included); "
            f"`python benchmarks/figures.py`{_remeasured(head)}._{busy}")


def _remeasured(head) -> str:
    """The rows measured again later (``--workloads``), as the stamp's last words."""
    notes = [n for n in head.get("notes", []) if REMEASURED in n]
    return "".join(f"; {n}" for n in notes)


def update(path: Path, name: str, text: str) -> None:
    """Replace what stands between the ``figures:name`` markers of ``path``."""
    source = path.read_text()
    pattern = re.compile(rf"(<!-- figures:{name} -->\n).*?(\n<!-- /figures:{name} -->)", re.S)
    if not pattern.search(source):
        raise SystemExit(f"{path}: no <!-- figures:{name} --> markers")
    path.write_text(pattern.sub(lambda m: m.group(1) + text + m.group(2), source))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--quick", action="store_true", help="tiny sizes; updates no README")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--tables-only", action="store_true",
                    help="measure nothing: rewrite the README tables from the results in --out")
    ap.add_argument("--workloads", default=None,
                    help="re-measure only these workloads (comma-separated) and replace their "
                         "rows in --out/cpu.json; the isolation comparison is kept")
    args = ap.parse_args(argv)
    out = Path(args.out)
    if args.tables_only:
        full = json.loads((out / "cpu.json").read_text())
        runs = [(r.pop("method"), r) for r in json.loads((out / "isolation.json").read_text())]
        return write_tables(out, full, runs, update_readmes=True)

    from jaxprop.bench import Config, run

    if args.workloads:
        return rerun(out, tuple(args.workloads.split(",")), args.repeats)

    (out / "plots").mkdir(parents=True, exist_ok=True)
    base = Config(repeats=args.repeats)
    if args.quick:
        base = base.quick()
    full = run(base, json_path=out / "cpu.json", markdown_path=out / "cpu.md",
               plots_dir=out / "plots")
    cell = dataclasses.replace(base, workloads=("mlp",), dtypes=("float32",), repeats=9
                               if not args.quick else base.repeats)
    runs = [
        ("JAX alone", run(dataclasses.replace(cell, impls=("jaxprop", "jax.grad")))),
        ("NumPy in the same process, back to back (old)",
         run(dataclasses.replace(cell, impls=("numpy", "jaxprop", "jax.grad"),
                                 isolation="shared"))),
        ("NumPy in its own process, quiet wait (now)",
         run(dataclasses.replace(cell, impls=("numpy", "jaxprop", "jax.grad")))),
    ]
    (out / "isolation.json").write_text(json.dumps(
        [{"method": label, **result} for label, result in runs], indent=1, default=str) + "\n")
    return write_tables(out, full, runs, update_readmes=not args.quick)


REMEASURED = " re-measured on "


def rerun(out: Path, names, repeats: int) -> int:
    """Re-measure ``names`` and put their rows in place of the old ones in ``out``."""
    from jaxprop.bench import Config, report, run

    full = json.loads((out / "cpu.json").read_text())
    new = run(Config(workloads=names, repeats=repeats))
    produced = {r["workload"] for r in new["records"]} - {"roofline"}
    records = [r for r in full["records"] if r["workload"] not in produced]
    records += [r for r in new["records"] if r["workload"] != "roofline"]
    full["records"] = records
    full["targets"] = report.targets(records)
    # a workload's older re-measurement notes give way to this one
    notes = [n for n in full["header"].get("notes", []) if not (
        REMEASURED in n and set(n.split(REMEASURED)[0].split(", ")) <= produced)]
    load = ", ".join(f"{v:.1f}" for v in new["header"]["load_average"] or ())
    full["header"]["notes"] = notes + [
        f"{', '.join(sorted(produced))}{REMEASURED}{new['header']['date']} (load average "
        f"{load}; `python benchmarks/figures.py --workloads {','.join(names)}`)"]
    (out / "cpu.json").write_text(json.dumps(full, indent=1) + "\n")
    (out / "cpu.md").write_text(report.markdown(full["header"], records, full["targets"]))
    runs = [(r.pop("method"), r) for r in json.loads((out / "isolation.json").read_text())]
    return write_tables(out, full, runs, update_readmes=True)


def write_tables(out: Path, full, runs, *, update_readmes: bool) -> int:
    """``out/summary.md``, and the README tables when ``update_readmes``."""
    tables = {
        "targets": targets_table(full) + "\n\n" + stamp(full["header"]),
        "summary": summary_table(full) + "\n\n" + stamp(full["header"]),
        "isolation": isolation_table(runs) + "\n\n" + stamp(runs[-1][1]["header"]),
    }
    (out / "summary.md").write_text("\n\n".join(f"## {k}\n\n{v}" for k, v in tables.items())
                                    + "\n")
    if not update_readmes:
        print(f"wrote {out}; README files left as they are")
        return 0
    update(ROOT / "README.md", "targets", tables["targets"])
    for name in ("targets", "summary", "isolation"):
        update(ROOT / "benchmarks" / "README.md", name, tables[name])
    print(f"wrote {out}; updated README.md and benchmarks/README.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
