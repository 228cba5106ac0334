#!/usr/bin/env bash
# Proof that a wheel built elsewhere (no GPU, another Python and torch) runs on a
# GPU machine as is: install it beside the machine's torch, then run the `cuda`
# tests and a benchmark smoke run from a directory outside the source tree, so
# the installed wheel (not the checkout) is what they import; the benchmark
# runner is the wheel's own. Nothing is rebuilt.
#
#   bash bench/gpu_wheel_proof.sh dist/fusedopt-*.whl        (results in $OUT)
set -uo pipefail
cd "$(dirname "$0")/.."
WHEEL="$1"
OUT="${OUT:-bench/results/wheel-proof}"
mkdir -p "$OUT"
WORK="$(mktemp -d)"
python -m venv --system-site-packages "$WORK/venv"   # the machine's torch, nothing of ours
PY="$WORK/venv/bin/python"
"$PY" -m pip install --no-deps --no-index "$WHEEL" 2>&1 | tail -1 | tee "$OUT/install.txt"
cp -r tests "$WORK/"
cd "$WORK"
{ nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; "$PY" -V; "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"; echo "wheel $(basename "$WHEEL")"; } 2>&1 | tee "$OLDPWD/$OUT/machine.txt"
"$PY" -c "import fusedopt, sys; assert 'site-packages' in fusedopt.__file__, fusedopt.__file__; print('fusedopt from', fusedopt.__file__)" 2>&1 | tee -a "$OLDPWD/$OUT/machine.txt"
"$PY" -m fusedopt info 2>&1 | tee "$OLDPWD/$OUT/info.txt"
"$PY" -m pytest -q -m cuda tests -p no:cacheprovider 2>&1 | tail -30 | tee "$OLDPWD/$OUT/cuda_tests.txt"
"$PY" -m fusedopt bench --device cuda --workloads 2000x4096,gpt2-124M --rounds 1 --reps 5 \
  --out "$OLDPWD/$OUT/bench_smoke.json" 2>&1 | tee "$OLDPWD/$OUT/bench_smoke.txt"
