"""``jaxprop explain``: trace gradient descent step by step on a small network from a JSON spec.

    jaxprop explain SPEC.json [--json] [--steps N]
    jaxprop explain --example 2-2-1 [--json] [--steps N]
    jaxprop explain --list-examples
"""

from __future__ import annotations

import argparse
import json


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


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
        "--steps", type=_positive_int, metavar="N", help="number of steps (overrides the spec)"
    )
    p.add_argument("--json", action="store_true", help="print the trace as JSON instead of tables")


def run(args: argparse.Namespace) -> int:
    from jaxprop import explain as ex

    if args.list_examples:
        for name, description in ex.list_examples().items():
            print(f"{name}\t{description}")
        return 0
    if (args.spec is None) == (args.example is None):
        raise ValueError("explain: give exactly one of SPEC.json or --example NAME")
    spec = ex.load_example(args.example) if args.example else ex.load_spec(args.spec)
    result = ex.explain(spec, steps=args.steps)
    if args.json:
        print(json.dumps(result))
    else:
        ex.render(spec, result)
    return 0
