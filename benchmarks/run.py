"""Run the benchmarks: the same code and flags as ``jaxprop bench`` (see benchmarks/README.md).

    python benchmarks/run.py --quick
    python benchmarks/run.py --json results.json --markdown results.md --plots plots/
"""

import sys

from jaxprop.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
