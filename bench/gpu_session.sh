#!/usr/bin/env bash
# Everything that needs a GPU, in one run (device time is scarce): build against
# the machine's torch, the `cuda` tests, compute-sanitizer, the benchmark.
# Results go to $OUT (default bench/results/gpu-run).
#
#   OUT=/some/dir bash bench/gpu_session.sh
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
"$PY" -m pytest -q -m cuda tests/test_cuda.py 2>&1 | tail -40 | tee "$OUT/cuda_tests.txt"
if command -v compute-sanitizer >/dev/null; then
  for tool in memcheck racecheck; do
    compute-sanitizer --tool "$tool" --error-exitcode 1 "$PY" tests/native/sanitize_step.py 2>&1 | tail -15 | tee "$OUT/sanitizer_$tool.txt"
  done
else
  echo "compute-sanitizer not found" | tee "$OUT/sanitizer_memcheck.txt"
fi
"$PY" -m fusedopt bench --device cuda --rounds "${ROUNDS:-3}" --reps "${REPS:-10}" \
  --out "$OUT/cuda_bench.json" --plot "$OUT/cuda_bench.png" 2>&1 | tee "$OUT/cuda_bench.txt"
