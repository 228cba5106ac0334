"""Every CPU instruction-set path computes the same bits.

The kernels evaluate the update rules operation by operation (no compiler
contraction; a fused multiply-add only where the rule asks for one, which is the
FMA instruction on AVX2/AVX-512 and an exact emulation on the baseline; exact
conversions; a fixed lane order for sums), so the AVX-512, AVX2 and baseline
builds must agree exactly; this runs one workload under each and compares."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import requires_native_cpu

HERE = Path(__file__).parent


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def _available_isas() -> list[str]:
    flags = _cpu_flags()
    isas = ["generic"]
    if {"avx2", "fma", "f16c"} <= flags:
        isas.append("avx2")
    if {"avx512f", "avx512bw", "avx512vl"} <= flags:
        isas.append("avx512")
    return isas


def _run(isa: str, tmp_path: Path) -> dict:
    out = tmp_path / f"{isa}.pt"
    env = dict(os.environ, FUSEDOPT_CPU_ISA=isa)
    subprocess.run([sys.executable, str(HERE / "isa_workload.py"), str(out)], check=True, env=env, cwd=HERE)
    return torch.load(out)


def _assert_identical(a, b, where=""):
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a.view(-1).view(torch.uint8) if a.dtype != torch.bool else a, b.view(-1).view(torch.uint8) if b.dtype != torch.bool else b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _assert_identical(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_identical(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


@requires_native_cpu
@pytest.mark.slow
def test_instruction_sets_agree_bit_for_bit(tmp_path):
    isas = _available_isas()
    if len(isas) == 1:
        pytest.skip("this CPU has only the baseline instruction set")
    results = {isa: _run(isa, tmp_path) for isa in isas}
    for isa, res in results.items():
        assert res.pop("isa") == isa, f"FUSEDOPT_CPU_ISA={isa} did not select {isa}"
    base = results["generic"]
    for isa in isas[1:]:
        _assert_identical(results[isa], base, isa)
