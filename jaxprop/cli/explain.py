"""``jaxprop explain``: trace gradient descent step by step on a small network from a JSON spec.

    jaxprop explain SPEC.json [--json | --diagram] [--steps N] [--html PAGE.html [--force]]
    jaxprop explain --example 2-2-1 [--json | --diagram] [--steps N] [--html PAGE.html]
    jaxprop explain --model TEXT --in-shape SHAPE [--loss L] [--lr R] [--batch B] [--seed S]
    jaxprop explain --list-examples

``--diagram`` prints the network with its values in box characters (the first step and, after
several, the last); ``--html`` writes one self-contained page that walks through each step
(:mod:`jaxprop.tools.explain_html`), atomically, replacing an existing file only with
``--force`` (as ``predict --out``); with ``--html`` alone nothing else is printed. ``--model``
explains a small architecture (at most ``MAX_UNITS`` units) on random data: Dense layers with
their activations as the network, any other model as tables of values per layer and step.
"""

from __future__ import annotations

import argparse
import json
import re
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
    m = p.add_argument_group("a model from its architecture (random weights and data)")
    m.add_argument("--model", metavar="TEXT",
                   help="architecture, e.g. 'dense(3)-tanh-dense(2)-softmax' (at most 30 units)")
    m.add_argument("--in-shape", metavar="SHAPE", help="one example's shape, e.g. 2 or 3,3,1")
    m.add_argument("--loss", help="loss name (default mse)")
    m.add_argument("--lr", type=float, metavar="RATE", help="learning rate (default 0.1)")
    m.add_argument("--batch", type=positive_int, metavar="N", help="examples (default 2)")
    m.add_argument("--seed", type=int, metavar="S", help="seed of weights and data (default 0)")
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
    if sum(v is not None for v in (args.spec, args.example, args.model)) != 1:
        raise ValueError("explain: give exactly one of SPEC.json, --example NAME or "
                         "--model TEXT")
    _check_model_options(args)
    page = None if args.html is None else Path(args.html)
    if args.html is not None and not args.html.strip():
        raise ValueError("--html is empty; give a file name")
    if page is not None:  # before the work, so a refusal comes at once
        check_out(page, "SPEC.json", args.spec, args.force, "--html")
    spec = (_from_model(args) if args.model is not None else
            ex.load_example(args.example) if args.example else ex.load_spec(args.spec))
    result = ex.explain(spec, steps=args.steps)
    tables = isinstance(spec, ex.TableSpec)
    if args.json:
        print(json.dumps(result))
    elif args.diagram and tables:
        render_tables(spec, result, steps=sorted({0, len(result["steps"]) - 1}))
    elif args.diagram:
        print(_diagram(spec, result))
    elif page is None:
        (render_tables if tables else render)(spec, result)
    if page is not None:
        _write_page(page, spec, result, args)
    return 0


_MODEL_OPTIONS = ("in_shape", "loss", "lr", "batch", "seed")


def _check_model_options(args) -> None:
    """``--in-shape`` with ``--model``; the model's settings only with it."""
    given = [f"--{k.replace('_', '-')}" for k in _MODEL_OPTIONS if getattr(args, k) is not None]
    if args.model is None and given:
        raise ValueError(f"{', '.join(given)} only with --model TEXT (a spec sets its own)")
    if args.model is not None and args.in_shape is None:
        raise ValueError("--model needs --in-shape (one example's shape, e.g. 2 or 3,3,1)")


def _from_model(args):
    from jaxprop.cli.check import parse_in_shape
    from jaxprop.tools import explain as ex

    options = {k: v for k, v in (("loss", args.loss), ("learning_rate", args.lr),
                                 ("batch", args.batch), ("seed", args.seed)) if v is not None}
    try:
        return ex.from_model(args.model, parse_in_shape(args.in_shape),
                             steps=args.steps or 1, **options)
    except ValueError as e:  # the library's argument names, as this command spells them
        message = re.sub(r"^learning_rate\b", "--lr", str(e))
        raise ValueError(re.sub(r"^batch\b", "--batch", message)) from None


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

    from jaxprop.tools.explain_view import article_sign

    widths = [spec.input.shape[1]] + [ls.W.shape[1] for ls in spec.layers]
    acts = ", ".join(ls.activation for ls in spec.layers)
    head = f"[bold]Network[/] {' → '.join(map(str, widths))}  ·  activations {acts}"
    head += f"\n[bold]Loss[/] {spec.loss}  ·  learning rate {spec.learning_rate:g}  ·  "
    biases = "updated" if spec.update_biases else "fixed"
    head += f"steps {len(result['steps'])}  ·  biases {biases}"
    if spec.description:
        head = f"{escape(spec.description)}\n{head}"
    sign = (" textbooks writing delta = (t - y)·f'(z) for sse_half have the opposite sign."
            if article_sign(spec, result) else "")
    head += (
        "\n[dim]W is (in, out): W\\[i]\\[j] connects input i to unit j (0-based, as in the JSON). "
        f"delta = dL/dz;{sign} Update: p ← p − lr·dL/dp.[/]"
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


def render_tables(spec, result: dict, console=None, steps=None) -> None:
    """Print ``result`` of a :class:`~jaxprop.tools.explain.TableSpec` as tables: per step
    (all, or the indices ``steps``) and layer its output and dL/doutput for every example,
    and its parameters before, dL/dp and after."""
    from rich import box
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from jaxprop.tools.explain_view import table_view

    console = console or Console()
    v = table_view(spec, result, limit=len(result["steps"]))
    console.print(f"[bold]{escape(v['description'])}[/]\nloss {v['loss']} · learning rate "
                  f"{v['learning_rate']:g} · {v['n_steps']} step(s) · update p ← p − lr·dL/dp")
    for st in (v["steps"] if steps is None else [v["steps"][i] for i in steps]):
        console.rule(f"[bold]Step {st['step'] + 1}/{v['n_steps']}[/]  loss before "
                     f"{_f(st['loss'])}  →  after {_f(st['loss_after'])}")
        for k, r in enumerate(st["layers"]):
            t = Table(box=box.SIMPLE_HEAD, title=f"layers[{k}]: {escape(r['layer'])}, output "
                      f"({', '.join(map(str, r['shape']))}) per example", title_justify="left")
            t.add_column("index", justify="right")
            for e in range(len(r["output"])):
                t.add_column(f"out e{e}", justify="right")
                t.add_column(f"dL/dout e{e}", justify="right")
            for n, ix in enumerate(r["index"]):
                t.add_row(ix, *[_f(c[n]) for o, d in zip(r["output"], r["doutput"])
                                for c in (o, d)])
            console.print(t)
            if r["params"]:
                ps = Table(box=box.SIMPLE_HEAD)
                for col in ("parameter", "before", "dL/dparam", "after"):
                    ps.add_column(col, justify="right")
                for name, *values in r["params"]:
                    ps.add_row(escape(name), *map(_f, values))
                console.print(ps)
    console.print(f"[bold]Final loss[/] after {v['n_steps']} step(s): {_f(v['final_loss'])}")
