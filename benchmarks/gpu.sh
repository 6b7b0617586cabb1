#!/usr/bin/env bash
# The benchmark harness and the paper-scale presets on one GPU, in about 8 minutes.
#
#   bash benchmarks/gpu.sh [OUT]          # from the repository root, on the GPU machine
#
# Each benchmark module runs in its own process under its own time limit and appends its rows to
# benchmarks/results/<device>.json (python -m benchmarks --append), so a slow or broken module
# costs only its own slot. Then the paper presets run under what is left of the budget
# (python -m experiments.reproduce --preset paper, which writes as it goes and records each
# experiment's seconds in OUT/paper/*/.done). Everything is also copied into OUT with a log.
#
# Budget (seconds) per step; override with GPU_BUDGET_SCALE=2 to double every limit.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-gpu-results}
SCALE=${GPU_BUDGET_SCALE:-1}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
PY=${PYTHON:-python3}

limit() { echo $(( $1 * SCALE )); }
step() {  # step NAME SECONDS COMMAND...: run under a time limit, log, never stop the script
  local name=$1 seconds; seconds=$(limit "$2"); shift 2
  echo "== $name (limit ${seconds}s): $*"
  local start=$SECONDS
  timeout --signal=INT --kill-after=10 "$seconds" "$@"
  local rc=$?
  echo "== $name: rc=$rc in $((SECONDS - start))s"
  echo "$name rc=$rc seconds=$((SECONDS - start))" >>"$OUT/steps.txt"
}

$PY - <<'EOF'
import jax, jaxlib
print("jax", jax.__version__, "jaxlib", jaxlib.__version__, "devices", jax.devices())
EOF
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.mem --format=csv 2>/dev/null

# Speed: every module that answers a question about the hardware (quick where it has a baseline
# that runs on the CPU side; full where the workload is what the GPU is for).
step roofline 60 $PY -m benchmarks --only roofline --append
step scaling 50 $PY -m benchmarks --only scaling --append
step llc_devinterp 40 $PY -m benchmarks --only llc_devinterp --append --quick
step sgd_ensemble 50 $PY -m benchmarks --only sgd_ensemble --append
step nuts_sweep 60 $PY -m benchmarks --only nuts_sweep --append --quick
step core 25 $PY -m benchmarks --only core --append --quick
[ -f benchmarks/bayes_sweep.py ] && step bayes_sweep 60 $PY -m benchmarks --only bayes_sweep --append

# The paper presets, in the reproduction's order, for what is left of the ~8 minutes.
step paper 150 $PY -m experiments.reproduce --preset paper --out "$OUT/paper" --no-progress

cp benchmarks/results/*.json "$OUT/" 2>/dev/null
echo "== steps"; cat "$OUT/steps.txt"
