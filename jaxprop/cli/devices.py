"""``jaxprop devices``: the backend, each device and its memory, the default matmul precision,
and the jax/jaxlib (and plugin) versions. ``--json`` prints the same as JSON; ``--verbose``
adds ``jax.print_environment_info()`` (on NVIDIA machines it includes ``nvidia-smi``)."""

from __future__ import annotations

import argparse
import json


def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.add_argument("--verbose", action="store_true",
                   help="also print jax.print_environment_info() (with nvidia-smi on NVIDIA)")


def run(args) -> int:
    import jax

    from jaxprop.device import describe, gib

    info = describe()
    if args.json:
        print(json.dumps(info, indent=1))
    else:
        versions = ", ".join(f"{k} {v}" for k, v in info["versions"].items())
        print(f"default backend: {info['default_backend']}")
        print(f"versions: {versions}")
        print(f"jax_enable_x64: {'on' if info['x64'] else 'off'}")
        print(f"default matmul precision: {info['default_matmul_precision']}")
        for backend, what in info["float32_matmul"].items():
            print(f"  float32 matmuls on {backend}: {what}")
        print(f"devices ({len(info['devices'])}):")
        for d in info["devices"]:
            mem = d["memory"]
            if mem and "bytes_limit" in mem:
                memory = f"memory {gib(mem['bytes_limit'])}"
                if "bytes_in_use" in mem:
                    memory += f" ({gib(mem['bytes_in_use'])} in use)"
            else:
                memory = "memory not reported"
            print(f"  {d['id']:8s} {d['kind']:28s} process {d['process']}  {memory}")
    if args.verbose:
        print(jax.print_environment_info(return_string=True), end="")
    return 0
