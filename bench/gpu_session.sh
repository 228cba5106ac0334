#!/usr/bin/env bash
# Everything that needs a GPU, in one device call inside a time budget (a task
# gets ~15 minutes of device time, the machine's start included; one call at
# most 10). In order of what matters most:
#   install  fusedopt from a wheel built on a machine without a GPU (`make
#            wheel`; carry dist/), installed beside the machine's torch and
#            imported from outside the source tree, so that everything after it
#            is also the wheel proof. Without a wheel: a build here.
#   tests    the `cuda` tests (kernels against the CPU kernels and torch's
#            fused CUDA optimizers, native plans against the list ops, graphs)
#   bench    the goals: the AMP + clip + AdamW step and AdamW alone against
#            torch, on the 1B decoder, GPT-2 small, 2000 x 4096 and huge tensors
#   host     the host cost per tensor, through native plans and through the list ops
#   memcheck, racecheck   compute-sanitizer over tests/native/sanitize_step.py,
#            caching allocator off
#   compiled torch.compile(opt.step) against the eager step, default mode and
#            mode="reduce-overhead" (CUDA graphs): bench/compiled_vs_eager.py;
#            last, so the first call's budget may not reach it: then a second
#            call, STAGES=compiled BUDGET=200
#   bounds   only with ADAM_BOUNDS_AB=1, from a source build: the Adam kernels'
#            occupancy variants (csrc/cuda/adam.cu)
# Each stage runs under a timeout cut to the time left, and a stage that fails
# or runs out of time does not stop the next; logs and reports go to $OUT, and
# the lines printed last are the summary. BUDGET (seconds, default 420) leaves
# a task's device time room for a second, narrower call: STAGES names the
# stages to run (install/build always runs).
#
#   OUT=/some/dir bash bench/gpu_session.sh                      (first call: timeout_s 480)
#   STAGES="tests memcheck" BUDGET=240 bash bench/gpu_session.sh  (a rerun after a fix)
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
OUT="${OUT:-bench/results/gpu-run}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
BUDGET="${BUDGET:-420}"
STAGES=" ${STAGES:-tests bench host memcheck racecheck compiled bounds} "
PY="${PYTHON:-python3}"
SUMMARY="$OUT/summary.txt"
: > "$SUMMARY"

left() { echo $((BUDGET - SECONDS)); }

# stage NAME CAP CMD...: CMD under min(CAP, time left) seconds, output in $OUT/NAME.txt
stage() {
  local name="$1" cap="$2"
  shift 2
  case "$name" in
    install | build) ;;
    *) [[ "$STAGES" == *" $name "* || "$STAGES" == *" ${name%%_*} "* ]] || return 1 ;;  # "host": both host stages
  esac
  local t
  t="$(left)"
  if [ "$t" -lt "$cap" ]; then cap="$t"; fi
  if [ "$cap" -lt 20 ]; then
    echo "$name: not run (out of time)" | tee -a "$SUMMARY"
    return 1
  fi
  local t0=$SECONDS rc
  timeout --kill-after=10 "$cap" "$@" > "$OUT/$name.txt" 2>&1
  rc=$?
  echo "$name: exit $rc after $((SECONDS - t0)) s$([ "$rc" = 124 ] && echo " (timed out at $cap s)")" | tee -a "$SUMMARY"
  tail -n 4 "$OUT/$name.txt" | sed 's/^/    /' | tee -a "$SUMMARY"
  return "$rc"
}

{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  "$PY" -V
  "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
  git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || true; } > "$OUT/machine.txt" 2>&1

WHEEL="${WHEEL:-$(ls -t dist/fusedopt-*.whl 2>/dev/null | head -n 1)}"
if [ -n "$WHEEL" ]; then
  # the machine's python is itself a venv: a --target directory on PYTHONPATH
  # keeps its torch and adds only the wheel
  SITE="$(mktemp -d)/site"
  stage install 120 "$PY" -m pip install --no-deps --no-index --no-compile --target "$SITE" "$WHEEL"
  export PYTHONPATH="$SITE"
  SUITE="$(mktemp -d)"
  cp -r tests "$SUITE/" && cp pyproject.toml "$SUITE/"  # the suite and its pytest configuration
  cd "$SUITE"
  echo "wheel $(basename "$WHEEL")" >> "$OUT/machine.txt"
  if ! "$PY" -c "from fusedopt import _ops; assert _ops.CUDA_LIB.loaded, _ops.CUDA_LIB.reason" >> "$OUT/machine.txt" 2>&1; then
    echo "the wheel's CUDA library did not load (machine.txt): building from source instead" | tee -a "$SUMMARY"
    unset PYTHONPATH
    cd "$ROOT"
    WHEEL=""
  fi
fi
if [ -z "$WHEEL" ]; then
  stage build 300 "$PY" -m pip install --no-build-isolation --no-deps -e .
fi
"$PY" -c "import fusedopt; print('fusedopt from', fusedopt.__file__)" >> "$OUT/machine.txt" 2>&1
"$PY" -m fusedopt info > "$OUT/info.txt" 2>&1
cat "$OUT/machine.txt" "$OUT/info.txt" | tee -a "$SUMMARY"

PER_TEST=()
"$PY" -c "import pytest_timeout" 2> /dev/null && PER_TEST=(--timeout 120)  # a hung test must not eat the budget
stage tests 240 "$PY" -m pytest -q -m cuda tests -p no:cacheprovider "${PER_TEST[@]}"
stage bench 200 "$PY" -m fusedopt bench --device cuda --rounds "${ROUNDS:-3}" --reps "${REPS:-10}" \
  --out "$OUT/cuda_bench.json" --plot "$OUT/cuda_bench.png" --markdown "$OUT/cuda_bench.md"
stage host 60 "$PY" -m fusedopt.benchmark.host_cost --device cuda --rounds 3 --out "$OUT/host_cost_cuda.json"
FUSEDOPT_DISABLE_PLANS=1 stage host_list_ops 60 "$PY" -m fusedopt.benchmark.host_cost --device cuda --rounds 3 \
  --out "$OUT/host_cost_cuda_list_ops.json"
if command -v compute-sanitizer > /dev/null; then
  for tool in memcheck racecheck; do
    PYTORCH_NO_CUDA_MEMORY_CACHING=1 stage "$tool" 120 compute-sanitizer --tool "$tool" --error-exitcode 1 \
      "$PY" tests/native/sanitize_step.py
  done
else
  echo "memcheck, racecheck: compute-sanitizer not found" | tee -a "$SUMMARY"
fi
# small tensors, where the compiled step's host cost per tensor shows, and large
# ones, where memory traffic does (1000x10K takes minutes to compile)
stage compiled 120 "$PY" "$ROOT/bench/compiled_vs_eager.py" --device cuda --modes default,reduce-overhead \
  --workloads 100x1K,10x1M --reps 7

# ADAM_BOUNDS_AB=1: __launch_bounds__(512, 3), the default, against
# __launch_bounds__(512) alone, timed back to back where the update dominates.
# Needs the source tree (a rebuild, ~1 min) and two bench runs.
if [ "${ADAM_BOUNDS_AB:-0}" = 1 ]; then
  cd "$ROOT"
  unset PYTHONPATH
  AB=(-m fusedopt bench --device cuda --step amp --workloads decoder-1B,2000x4096 --rounds 3 --reps 10 --no-plot)
  stage bounds_build_512_3 240 "$PY" setup.py build_ext --inplace \
    && stage bounds_512_3 90 "$PY" "${AB[@]}" --out "$OUT/adam_bounds_512_3.json"
  FUSEDOPT_NVCC_FLAGS=-DFUSEDOPT_ADAM_MIN_BLOCKS=0 stage bounds_build_512 240 "$PY" setup.py build_ext --inplace \
    && stage bounds_512 90 "$PY" "${AB[@]}" --out "$OUT/adam_bounds_512.json"
fi

echo "--- summary ($SECONDS s of $BUDGET) ---"
cat "$SUMMARY"
