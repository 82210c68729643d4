#!/usr/bin/env bash
# Prove the minimum versions pyproject.toml states: install exactly those (every ">=X" of the
# runtime dependencies pinned to "==X") into a fresh venv, then run the fast tests there.
# Usage: bash scripts/check_min_versions.sh [pytest args...]   (default: -n 2, the default run)
# Prints the versions it installed and pytest's summary; exits with pytest's status.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=$(mktemp -d)/venv
trap 'rm -rf "$(dirname "$venv")"' EXIT
python3 -m venv "$venv"
source "$venv/bin/activate"
python -m pip install --quiet --upgrade pip
pins=$(python - <<'PY'
import re, tomllib
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
for dep in deps:
    name, low = re.fullmatch(r"([A-Za-z0-9_.-]+)>=([0-9][0-9A-Za-z.]*)", dep.replace(" ", "")).groups()
    print(f"{name}=={low}")
PY
)
echo "installing the stated minimums:" $pins
# shellcheck disable=SC2086
python -m pip install --quiet $pins "pytest>=7" "hypothesis>=6" "pytest-xdist>=3"
python -m pip install --quiet --no-deps -e .
python - <<'PY'
import importlib.metadata as md, sys
names = ["jax", "jaxlib", "optax", "chex", "numpy", "rich", "matplotlib", "scikit-learn", "scipy", "ml_dtypes"]
print("python", sys.version.split()[0], "|", ", ".join(f"{n} {md.version(n)}" for n in names))
PY
if [ $# -eq 0 ]; then set -- -n 2; fi
python -m pytest "$@"
