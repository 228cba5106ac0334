"""The 8-bit quantization and stochastic rounding headers (csrc/math/quant8.h,
stochastic.h) compile as CUDA device code, warning-free, under the library's
nvcc flags; they run nowhere yet (no kernel uses them), so this is all a CPU
machine can check until the 8-bit codec lands."""

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_headers_compile_for_cuda(tmp_path):
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("no nvcc")
    subprocess.run(
        [nvcc, "-std=c++17", "-O3", "--expt-relaxed-constexpr", "--fmad=false",
         "-Xcompiler=-fno-math-errno,-Wall,-Wextra,-Werror", "-Werror=all-warnings",
         "-gencode", "arch=compute_80,code=sm_80", f"-I{ROOT / 'csrc'}",
         "-c", str(ROOT / "tests/native/lowmem_math_check.cu"), "-o", str(tmp_path / "check.o")],
        check=True,
    )
    assert (tmp_path / "check.o").stat().st_size > 0
