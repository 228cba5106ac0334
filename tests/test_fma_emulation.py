"""The fused multiply-add that CPU builds without an FMA instruction use (the
baseline x86-64 kernels; csrc/math/common.h) rounds exactly once, as the FMA
instructions of the AVX2/AVX-512 kernels and of CUDA do: checked against libm's
fmaf on millions of cases, including the rounding ties where a sum rounded to
double first would round to the wrong float."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_emulated_fma_rounds_once(tmp_path):
    cxx = shutil.which(os.environ.get("CXX", "c++"))
    if cxx is None:
        pytest.skip("no C++ compiler")
    exe = tmp_path / "fma_check"
    # the flags of the library's baseline kernels: no FMA instruction, no contraction
    subprocess.run(
        [cxx, "-std=c++17", "-O3", "-ffp-contract=off", "-fno-math-errno", f"-I{ROOT / 'csrc'}",
         str(ROOT / "tests/native/fma_check.cpp"), "-o", str(exe), "-lm"],
        check=True,
    )
    res = subprocess.run([str(exe)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert " 0 failures" in res.stdout
