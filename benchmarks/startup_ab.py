"""Start-up A/B: `jaxprop train` (XOR default) of two checkouts, in alternating fresh processes.

    git worktree add /tmp/before <commit>
    python benchmarks/startup_ab.py /tmp/before .          # 8 rounds, medians

For each checkout and round: `main` timed inside a fresh process after JAX's import (the
benchmark's `jaxprop train (after JAX import)` row), then the whole command from the process's
start to its exit. Both use the same warm persistent compilation cache and Python's bytecode
cache; each process imports jaxprop from its checkout (an editable install of either is
bypassed), and says so.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from jaxprop.bench.timing import command_seconds, fresh_process

# Import jaxprop from CHECKOUT, not from an editable install's finder.
PRE = ("import sys; sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in "
       "repr(f).lower() and 'editable' not in getattr(f, '__name__', '').lower()]; "
       "sys.path.insert(0, {path!r})\n")
AFTER_IMPORT = r'''
import json, tempfile, time
t0 = time.perf_counter()
import jax
jax.devices()
t1 = time.perf_counter()
from jaxprop.cli import main
import jaxprop
assert jaxprop.__file__.startswith({path!r}), jaxprop.__file__
t2 = time.perf_counter()
main(["train", "--out", tempfile.mkdtemp() + "/run", "--no-plots"])
t3 = time.perf_counter()
print("RESULT", json.dumps({{"columns": [t1 - t0, t2 - t1, t3 - t2, t3 - t1]}}))
'''
WHOLE = ("import jaxprop, jaxprop.cli as cli\n"
         "assert jaxprop.__file__.startswith({path!r}), jaxprop.__file__\n"
         "cli.command() if hasattr(cli, 'command') else sys.exit(cli.main())\n")
COLUMNS = ("import JAX", "import jaxprop", "main", "after JAX's import")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("before", type=Path)
    ap.add_argument("after", type=Path)
    ap.add_argument("--rounds", type=int, default=8)
    args = ap.parse_args()
    checkouts = {"before": str(args.before.resolve()), "after": str(args.after.resolve())}
    # None: fresh_process and command_seconds drop PYTHONPATH (and PYTHONDONTWRITEBYTECODE)
    env = {"PYTHONPATH": None}
    inside = {name: [] for name in checkouts}
    whole = {name: [] for name in checkouts}
    with tempfile.TemporaryDirectory(prefix="jaxprop-startup-") as d:
        env["JAXPROP_COMPILATION_CACHE"] = f"{d}/cache"
        for r in range(args.rounds + 1):  # round 0 fills the caches and is not counted
            for name, path in checkouts.items():
                cols = fresh_process(PRE.format(path=path) + AFTER_IMPORT.format(path=path),
                                     env=env, cwd=d)["columns"]
                shutil.rmtree(f"{d}/run", ignore_errors=True)
                seconds = command_seconds(
                    [sys.executable, "-c", PRE.format(path=path) + WHOLE.format(path=path),
                     "train", "--no-plots", "--out", f"{d}/run"], env=env, cwd=d)
                if r:
                    inside[name].append(cols)
                    whole[name].append(seconds)
    for name in checkouts:
        cols = [statistics.median(c) for c in zip(*inside[name])]
        print(f"{name:>6} ({checkouts[name]}): "
              + ", ".join(f"{c} {v:.3f} s" for c, v in zip(COLUMNS, cols))
              + f"; whole command {statistics.median(whole[name]):.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
