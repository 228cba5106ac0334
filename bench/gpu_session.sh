#!/usr/bin/env bash
# Everything that needs a GPU, in one run (device time is scarce): build against
# the machine's torch, the `cuda` tests, compute-sanitizer, the benchmark, the
# host cost per tensor.
# Results go to $OUT (default bench/results/gpu-run).
#
#   OUT=/some/dir bash bench/gpu_session.sh
#   ADAM_BOUNDS_AB=1 bash bench/gpu_session.sh   # also time the Adam kernels' two occupancy variants
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-bench/results/gpu-run}"
mkdir -p "$OUT"
PY="${PYTHON:-python}"

{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"; } 2>&1 | tee "$OUT/machine.txt"
if ! ls fusedopt/_C_cuda.*so >/dev/null 2>&1; then
  "$PY" -m pip install --no-build-isolation --no-deps -e . > "$OUT/build.log" 2>&1 \
    || "$PY" setup.py build_ext --inplace >> "$OUT/build.log" 2>&1
fi
"$PY" -m fusedopt info 2>&1 | tee "$OUT/info.txt"
"$PY" -m pytest -q -m cuda tests 2>&1 | tail -40 | tee "$OUT/cuda_tests.txt"
if command -v compute-sanitizer >/dev/null; then
  # caching allocator off: an out-of-bounds access must leave its allocation to be seen
  for tool in memcheck racecheck; do
    PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool "$tool" --error-exitcode 1 \
      "$PY" tests/native/sanitize_step.py 2>&1 | tail -15 | tee "$OUT/sanitizer_$tool.txt"
  done
else
  echo "compute-sanitizer not found" | tee "$OUT/sanitizer_memcheck.txt"
fi
# both steps (AdamW alone, the whole AMP step) on every workload that fits the GPU
"$PY" -m fusedopt bench --device cuda --rounds "${ROUNDS:-3}" --reps "${REPS:-10}" \
  --out "$OUT/cuda_bench.json" --plot "$OUT/cuda_bench.png" --markdown "$OUT/cuda_bench.md" 2>&1 | tee "$OUT/cuda_bench.txt"

# what each extra tensor adds to a step's host time on the GPU: through the
# native step plans (the default eager path), and through the list ops
"$PY" -m fusedopt.benchmark.host_cost --device cuda --rounds 5 --out "$OUT/host_cost_cuda.json" 2>&1 | tee "$OUT/host_cost_cuda.txt"
FUSEDOPT_DISABLE_PLANS=1 "$PY" -m fusedopt.benchmark.host_cost --device cuda --rounds 5 \
  --out "$OUT/host_cost_cuda_list_ops.json" 2>&1 | tee "$OUT/host_cost_cuda_list_ops.txt"

# ADAM_BOUNDS_AB=1: the Adam kernels' occupancy (csrc/cuda/adam.cu), the default
# __launch_bounds__(512, 3) against __launch_bounds__(512) alone, timed back to
# back on the sets the update dominates. Costs a rebuild (~1 min) and two runs.
if [ "${ADAM_BOUNDS_AB:-0}" = 1 ]; then
  LIB="$(ls fusedopt/_C_cuda.*so)"
  KEEP="$(mktemp -d)"
  cp "$LIB" fusedopt/_build_info.json "$KEEP/"
  AB=(--device cuda --step amp --workloads decoder-1B,2000x4096 --rounds "${ROUNDS:-3}" --reps "${REPS:-10}" --no-plot)
  FUSEDOPT_NVCC_FLAGS=-DFUSEDOPT_ADAM_MIN_BLOCKS=0 "$PY" setup.py build_ext --inplace > "$OUT/build_adam_bounds.log" 2>&1 \
    && "$PY" -m fusedopt bench "${AB[@]}" --out "$OUT/adam_bounds_512.json" 2>&1 | tee "$OUT/adam_bounds_512.txt"
  cp "$KEEP/$(basename "$LIB")" "$LIB" && cp "$KEEP/_build_info.json" fusedopt/_build_info.json
  "$PY" -m fusedopt bench "${AB[@]}" --out "$OUT/adam_bounds_512_3.json" 2>&1 | tee "$OUT/adam_bounds_512_3.txt"
fi
