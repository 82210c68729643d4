#!/usr/bin/env bash
# The device check: every GPU claim of jaxprop in one command, for one GPU, in under 8 minutes.
#
#   bash benchmarks/device_check.sh OUTDIR
#
# Run from anywhere (it works from the repository root it sits in); nothing is fetched. Uses
# $PYTHON (default python3) with jax (CUDA plugin), optax, chex, rich, matplotlib, scikit-learn,
# pytest, pytest-xdist, hypothesis and, optionally, torch installed; jaxprop itself is taken from
# this checkout (PYTHONPATH), installed or not. Writes at most 11 files to OUTDIR:
#
#   summary.txt        what ran, each step's exit code and seconds, skips, and the targets
#   devices_tests.txt  1. `jaxprop devices --verbose`, then the suite's fast subset on the GPU
#   check.txt          2. `jaxprop check` (mixed and xor presets, float32) on the GPU, highest
#   bench.txt          3. `jaxprop bench --workloads gpu`: the table as printed
#   bench.json         3. the GPU rows: MLP gradient, widths 1024/4096/8192, batch 4096, in
#   bench.md              highest / f32 (TF32) / bf16; jaxprop, jax.grad, torch, NumPy on host
#   speed.txt          4. XOR populations (1,000 and 10,000 networks x 10,000 epochs) and
#   speed.json            digits training time per epoch (benchmarks/device_speed.py)
#   bench_gpt.txt      5. `jaxprop bench --workloads gpt --backends gpu`: a GPT training step
#   bench_gpt.json        (4 blocks, 256 features, context 128, batch 16; Adam), hand-written
#   bench_gpt.md          vs jax.grad vs torch, tokens/s and roofline share; 3 rounds, highest
#
# Each step runs under its own `timeout`; a failed or timed-out step is recorded and the next
# one runs. The whole script stops starting steps after DEVICE_CHECK_BUDGET seconds (default
# 450) and caps each step at what is left, so it ends well inside 8 minutes.
#
# Without a GPU (JAX's default backend is not "gpu") it records the devices, says what it
# skipped, and exits 0. DEVICE_CHECK_QUICK=1 runs every step on whatever device there is with
# tiny sizes (a smoke test of this script on a CPU).
set -u

if [ $# -ne 1 ]; then
    echo "usage: bash benchmarks/device_check.sh OUTDIR" >&2
    exit 2
fi
mkdir -p "$1" || exit 2
OUT=$(cd "$1" && pwd)
cd "$(dirname "$0")/.." || exit 2
ROOT=$(pwd)

PY=${PYTHON:-python3}
BUDGET=${DEVICE_CHECK_BUDGET:-450}
QUICK=${DEVICE_CHECK_QUICK:-0}
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export XLA_PYTHON_CLIENT_PREALLOCATE=false   # test workers, JAX and torch share one GPU
export PYTHONUNBUFFERED=1
START=$(date +%s)
SUMMARY="$OUT/summary.txt"
: > "$SUMMARY"

elapsed() { echo $(( $(date +%s) - START )); }
say() { echo "[$(elapsed)s] $*" | tee -a "$SUMMARY"; }

# step NAME LIMIT_SECONDS FILE COMMAND...: run COMMAND (appending to FILE) under a timeout of
# at most LIMIT_SECONDS and at most what is left of the budget; record its exit code.
step() {
    local name=$1 limit=$2 file=$3
    shift 3
    local left=$(( BUDGET - $(elapsed) ))
    if [ "$left" -lt 15 ]; then
        say "SKIPPED $name: the ${BUDGET}s budget is spent"
        return 0
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    local t0
    t0=$(date +%s)
    say "start $name (limit ${limit}s)"
    echo "\$ $*" >> "$file"
    timeout -k 5 "$limit" "$@" >> "$file" 2>&1
    local rc=$?
    local took=$(( $(date +%s) - t0 ))
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        say "TIMEOUT $name after ${took}s (limit ${limit}s); see $(basename "$file")"
    else
        say "done $name: exit $rc in ${took}s"
    fi
    return 0
}

say "jaxprop device check in $ROOT, output in $OUT, budget ${BUDGET}s"
say "git: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
say "python: $("$PY" --version 2>&1)"

step devices 45 "$OUT/devices_tests.txt" "$PY" -m jaxprop devices --verbose
BACKEND=$("$PY" -c "import jax; print(jax.default_backend())" 2>/dev/null | tail -n 1)
say "default backend: ${BACKEND:-unknown}"

if [ "$BACKEND" != "gpu" ] && [ "$QUICK" != "1" ]; then
    say "no GPU: JAX's default backend is '${BACKEND:-unknown}'"
    say "skipped: the test subset on the GPU, jaxprop check on the GPU, the bench GPU rows," \
        "the XOR populations, the digits timing and the gpt training step (set" \
        "DEVICE_CHECK_QUICK=1 to run them with tiny sizes on this device)"
    say "finished in $(elapsed)s"
    exit 0
fi

# 1. The suite's fast subset with the GPU as default backend. The suite's comparisons are exact
#    float32 checks, so they run under highest matmul precision (the GPU default is TF32).
TESTS="tests/test_precision.py tests/test_layers.py tests/test_losses.py tests/test_gradcheck.py
       tests/test_protocol.py tests/test_no_autodiff.py tests/test_bridge.py
       tests/test_per_example.py tests/test_vmap.py tests/test_train.py tests/test_spec.py
       tests/test_bench_gpt.py"
WORKERS=4
if [ "$QUICK" = "1" ]; then TESTS="tests/test_precision.py"; WORKERS=2; fi
TESTS=$(for f in $TESTS; do [ -f "$f" ] && echo "$f"; done)  # files renamed since: left out
# shellcheck disable=SC2086
step tests 120 "$OUT/devices_tests.txt" env JAX_DEFAULT_MATMUL_PRECISION=highest \
    "$PY" -m pytest -p no:cacheprovider -n "$WORKERS" -m "not slow" $TESTS
say "tests: $(grep -E '(passed|failed|error)' "$OUT/devices_tests.txt" | tail -n 1)"

# 2. Hand-written gradients against jax.grad and float64 finite differences, on the GPU.
step check-mixed 45 "$OUT/check.txt" env JAX_DEFAULT_MATMUL_PRECISION=highest \
    "$PY" -m jaxprop check --preset mixed
step check-xor 30 "$OUT/check.txt" env JAX_DEFAULT_MATMUL_PRECISION=highest \
    "$PY" -m jaxprop check --preset xor
say "check: $(grep -cE '^OK' "$OUT/check.txt") of 2 presets OK"

# 3. The GPU rows.
BENCH=(--workloads gpu --precision highest,f32,bf16 --repeats 5 --warmup 2)
if [ "$QUICK" = "1" ]; then BENCH+=(--quick --backends "$BACKEND"); fi
step bench 150 "$OUT/bench.txt" "$PY" -m jaxprop bench "${BENCH[@]}" \
    --json "$OUT/bench.json" --markdown "$OUT/bench.md"

# 4. XOR populations and digits time per epoch.
SPEED=()
if [ "$QUICK" = "1" ]; then SPEED=(--quick); fi
step speed 90 "$OUT/speed.txt" "$PY" benchmarks/device_speed.py "${SPEED[@]}" \
    --json "$OUT/speed.json"

# 5. The gpt training step on the GPU (float32 matmuls at highest precision, the bench's
#    default): fewer rounds than the CPU table, to fit the budget.
GPT=(--workloads gpt --backends gpu --repeats 3 --warmup 1)
if [ "$QUICK" = "1" ]; then GPT=(--workloads gpt --quick --backends "$BACKEND"); fi
step bench-gpt 75 "$OUT/bench_gpt.txt" "$PY" -m jaxprop bench "${GPT[@]}" \
    --json "$OUT/bench_gpt.json" --markdown "$OUT/bench_gpt.md"

# The targets, as measured.
"$PY" - "$OUT" >> "$SUMMARY" 2>&1 <<'EOF'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
for name in ("bench.json", "speed.json", "bench_gpt.json"):
    path = out / name
    if not path.exists():
        print(f"targets: {name} missing")
        continue
    for t in json.loads(path.read_text()).get("targets", []):
        print(f"target {'met    ' if t['met'] else 'NOT met'}  {t['target']}: {t['value']}")
EOF
say "finished in $(elapsed)s"
exit 0
