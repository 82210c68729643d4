"""``jaxprop explain``: trace gradient descent step by step on a small network from a JSON spec.

    jaxprop explain SPEC.json [--json | --diagram] [--steps N] [--html PAGE.html [--force]]
    jaxprop explain --example 2-2-1 [--json | --diagram] [--steps N] [--html PAGE.html]
    jaxprop explain --list-examples

``--diagram`` prints the network with its values in box characters (the first step and, after
several, the last); ``--html`` writes one self-contained page that walks through each step
(:mod:`jaxprop.tools.explain_html`), atomically, replacing an existing file only with
``--force`` (as ``predict --out``); with ``--html`` alone nothing else is printed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from jaxprop.cli.args import check_out, positive_int


def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "spec", nargs="?", metavar="SPEC.json",
        help="network, data and settings as JSON (see docs/explain.md)",
    )
    p.add_argument("--example", metavar="NAME", help="use a bundled example instead of SPEC.json")
    p.add_argument(
        "--list-examples", action="store_true", help="list the bundled examples and exit"
    )
    p.add_argument(
        "--steps", type=positive_int, metavar="N", help="number of steps (overrides the spec)"
    )
    shown = p.add_mutually_exclusive_group()
    shown.add_argument("--json", action="store_true",
                       help="print the trace as JSON instead of tables")
    shown.add_argument("--diagram", action="store_true",
                       help="print the network with its values in box characters")
    p.add_argument("--html", metavar="PAGE.html",
                   help="write a self-contained page that walks through each step; an "
                        "existing file only with --force")
    p.add_argument("--force", action="store_true",
                   help="replace --html when it already exists (a regular file only)")


def run(args: argparse.Namespace) -> int:
    from jaxprop.tools import explain as ex

    if args.list_examples:
        for name, description in ex.list_examples().items():
            print(f"{name}\t{description}")
        return 0
    if (args.spec is None) == (args.example is None):
        raise ValueError("explain: give exactly one of SPEC.json or --example NAME")
    page = None if args.html is None else Path(args.html)
    if args.html is not None and not args.html.strip():
        raise ValueError("--html is empty; give a file name")
    if page is not None:  # before the work, so a refusal comes at once
        check_out(page, "SPEC.json", args.spec, args.force, "--html")
    spec = ex.load_example(args.example) if args.example else ex.load_spec(args.spec)
    result = ex.explain(spec, steps=args.steps)
    if args.json:
        print(json.dumps(result))
    elif args.diagram:
        print(_diagram(spec, result))
    elif page is None:
        render(spec, result)
    if page is not None:
        _write_page(page, spec, result, args)
    return 0


def _diagram(spec, result: dict) -> str:
    """The terminal diagram of the first step and, after several, of the last."""
    from jaxprop.tools.explain_diagram import diagram
    from jaxprop.tools.explain_view import view

    v = view(spec, result)
    last = len(v["steps"]) - 1
    return "\n\n".join(diagram(v, i) for i in sorted({0, last}))


def _write_page(page: Path, spec, result: dict, args) -> None:
    from jaxprop.checkpoint import write_atomic
    from jaxprop.tools.explain_html import render_html

    text = render_html(spec, result)
    check_out(page, "SPEC.json", args.spec, args.force, "--html")  # again: it may exist now
    page.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(page, text.encode())
    print(f"page written to {page} (open it in a browser)", file=sys.stderr)


def _f(v: float) -> str:
    return f"{v:.6f}"


def render(spec, result: dict, console=None) -> None:
    """Print ``result`` (from :func:`explain` on ``spec``) as rich panels and tables."""
    from rich.console import Console

    console = console or Console()
    console.print(_header(spec, result))
    console.print(_data_table(spec))
    Ws = [ls.W.tolist() for ls in spec.layers]
    bs = [ls.b.tolist() for ls in spec.layers]
    n = len(result["steps"])
    for s, st in enumerate(result["steps"]):
        after = result["steps"][s + 1]["loss"] if s + 1 < n else result["final_loss"]
        console.rule(
            f"[bold]Step {s + 1}/{n}[/]  loss before {_f(st['loss'])}  →  after {_f(after)}"
        )
        for k, (ls, r) in enumerate(zip(spec.layers, st["layers"])):
            console.print(_units_table(k, ls, r, len(Ws[k])))
            console.print(_params_table(Ws[k], bs[k], r, spec.update_biases))
            Ws[k], bs[k] = r["W_after"], r["b_after"]
    console.print(f"[bold]Final loss[/] after {n} step(s): {_f(result['final_loss'])}")


def _header(spec, result: dict):
    """The panel that names the network, its loss and settings, and how to read the tables."""
    from rich.markup import escape
    from rich.panel import Panel

    widths = [spec.input.shape[1]] + [ls.W.shape[1] for ls in spec.layers]
    acts = ", ".join(ls.activation for ls in spec.layers)
    head = f"[bold]Network[/] {' → '.join(map(str, widths))}  ·  activations {acts}"
    head += f"\n[bold]Loss[/] {spec.loss}  ·  learning rate {spec.learning_rate:g}  ·  "
    biases = "updated" if spec.update_biases else "fixed"
    head += f"steps {len(result['steps'])}  ·  biases {biases}"
    if spec.description:
        head = f"{escape(spec.description)}\n{head}"
    head += (
        "\n[dim]W is (in, out): W\\[i]\\[j] connects input i to unit j (0-based, as in the JSON). "
        "delta = dL/dz; textbooks writing delta = (t - y)·f'(z) for sse_half have the opposite "
        "sign. Update: p ← p − lr·dL/dp.[/]"
    )
    return Panel(head, title="jaxprop explain", expand=False)


def _data_table(spec):
    """The examples: each input row and its target row."""
    from rich import box
    from rich.table import Table

    data = Table(box=box.SIMPLE, title="Data")
    data.add_column("example")
    data.add_column("input")
    data.add_column("target")
    for e, (xr, tr) in enumerate(zip(spec.input, spec.target)):
        data.add_row(str(e), ", ".join(map(_f, xr)), ", ".join(map(_f, tr)))
    return data


def _units_table(k: int, ls, r: dict, w_in: int):
    """Layer ``k``'s units in one step: ``z``, ``a`` and ``delta`` per example and unit."""
    from rich import box
    from rich.table import Table

    batch, w_out = len(r["z"]), len(r["z"][0])
    units = Table(
        box=box.SIMPLE_HEAD,
        title=f"layers[{k}]: Dense {w_in} → {w_out}, {ls.activation}",
        title_justify="left",
    )
    if batch > 1:
        units.add_column("example", justify="right")
    for col in ("unit", "z (pre-activation)", f"a = {ls.activation}(z)", "delta = dL/dz"):
        units.add_column(col, justify="right")
    for e in range(batch):
        for j in range(w_out):
            cells = [str(j), _f(r["z"][e][j]), _f(r["a"][e][j]), _f(r["delta"][e][j])]
            units.add_row(*([str(e)] if batch > 1 else []) + cells)
    return units


def _params_table(W: list, b: list, r: dict, update_biases: bool):
    """A layer's parameters in one step: before, ``dL/dparam`` and after, ``W`` then ``b``."""
    from rich import box
    from rich.table import Table

    ps = Table(box=box.SIMPLE_HEAD)
    for col in ("parameter", "before", "dL/dparam", "after"):
        ps.add_column(col, justify="right")
    for i in range(len(W)):
        for j in range(len(W[0])):
            ps.add_row(f"W[{i}][{j}] (in {i} → unit {j})",
                       _f(W[i][j]), _f(r["dW"][i][j]), _f(r["W_after"][i][j]))
    note = "" if update_biases else " (fixed)"
    for j in range(len(b)):
        ps.add_row(f"b[{j}]{note}", _f(b[j]), _f(r["db"][j]), _f(r["b_after"][j]))
    return ps
