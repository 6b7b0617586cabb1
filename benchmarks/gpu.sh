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
# The whole script keeps to GPU_BUDGET seconds (default 480 = 8 minutes): each step runs under the
# smaller of its own limit and what is left, and steps run in order of value. Measured on an H200
# (2026-11-29, jax 0.11.2): compiling for the GPU costs 1.5-15 s per program, so the modules run
# --quick (their workloads are sized for the CPU baselines they are timed against); the roofline and
# the paper presets are the GPU-sized work.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-gpu-results}
BUDGET=${GPU_BUDGET:-480}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
PY=${PYTHON:-python3}

step() {  # step NAME SECONDS COMMAND...: run under a time limit, log, never stop the script
  local name=$1 seconds=$2; shift 2
  local left=$((BUDGET - SECONDS))
  ((seconds > left)) && seconds=$left
  if ((seconds < 20)); then
    echo "== $name: skipped (budget spent)"
    echo "$name skipped" >>"$OUT/steps.txt"
    return
  fi
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

# Speed (measured step times on the H200 in brackets).
step roofline 80 $PY -m benchmarks --only roofline --append                  # [59 s]
step llc_devinterp 60 $PY -m benchmarks --only llc_devinterp --append --quick  # [~35 s]
step scaling 60 $PY -m benchmarks --only scaling --append --quick             # [~45 s]
step sgd_ensemble 40 $PY -m benchmarks --only sgd_ensemble --append --quick   # [~20 s]
step core 45 $PY -m benchmarks --only core --append --quick                   # [~40 s]
step bayes_sweep 90 $PY -m benchmarks --only bayes_sweep --append --quick
step nuts_sweep 150 $PY -m benchmarks --only nuts_sweep --append --quick       # [> 130 s]

# The paper presets, in the reproduction's order, with what is left (they write as they go, and
# OUT/paper/*/.done records each finished experiment's seconds; sgd_plateaus took 31.7 s).
step paper 600 $PY -m experiments.reproduce --preset paper --out "$OUT/paper" --no-progress

cp benchmarks/results/*.json "$OUT/" 2>/dev/null
echo "== steps"; cat "$OUT/steps.txt"
