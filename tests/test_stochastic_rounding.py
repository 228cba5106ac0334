"""Stochastic rounding of float32 to bf16 and fp16: fusedopt/_stochastic.py (plain
torch) and csrc/math/stochastic.h (the kernels) give the same bits; the
generator is Philox4x32-10 (torch's own engine and Random123's known answers as
oracles), a function of (seed, step, element index) alone; the rounding is
unbiased, lands on one of the two neighbours, and leaves representable values
alone."""

import math
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from fusedopt import _stochastic as sr

ROOT = Path(__file__).resolve().parent.parent
SEED, STEP, OFFSET = 0x0123_4567_89AB_CDEF, 2 ** 33 + 5, 7  # high words in use, odd offset


def _u16(t: torch.Tensor) -> torch.Tensor:
    return t.view(torch.int16).to(torch.int64) & 0xFFFF


def _inputs() -> torch.Tensor:
    g = torch.Generator().manual_seed(22)
    bits = torch.randint(-2 ** 31, 2 ** 31, (40000,), generator=g, dtype=torch.int64)
    parts = [bits.to(torch.int32).view(torch.float32)]  # every exponent, NaN payloads, subnormals
    for scale in (1e-9, 1e-7, 1e-5, 1e-3, 1.0, 1e3, 6e4):  # fp16 subnormal, normal, near overflow
        parts.append(torch.randn(3000, generator=g) * scale)
    edges = [0.0, -0.0, float("inf"), float("-inf"), float("nan"), 2 ** -24, 2 ** -14, 2 ** -33, 2 ** -34,
             65504.0, 65519.0, 65520.0, 65535.99, 65536.0, 3.3895313892515355e38, 3.4028234663852886e38]
    parts.append(torch.tensor(edges + [-e for e in edges]))
    special = torch.tensor([0x7FFFFFFF, -1, 0x7F800001, 0x7FC00000, 0x00000001, 0x807FFFFF],
                           dtype=torch.int64).to(torch.int32).view(torch.float32)
    parts.append(special)
    return torch.cat(parts)


def test_philox_known_answers():
    """Random123's known-answer vectors for philox4x32-10."""
    cases = [
        ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
        ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
        ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
         (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
    ]
    for counter, key, want in cases:
        got = sr.philox4x32_10([torch.tensor([c]) for c in counter], key)
        assert tuple(int(w) for w in got) == want


def test_header_matches_torch_bit_for_bit(tmp_path):
    cxx = shutil.which(os.environ.get("CXX", "c++"))
    if cxx is None:
        pytest.skip("no C++ compiler")
    exe = tmp_path / "stochastic_check"
    torch_include = Path(torch.__file__).parent / "include"  # at::philox_engine, the oracle
    subprocess.run([cxx, "-std=c++17", "-O2", "-ffp-contract=off", "-fno-math-errno", "-Wall", "-Werror",
                    f"-I{ROOT / 'csrc'}", f"-I{torch_include}", str(ROOT / "tests/native/stochastic_check.cpp"),
                    "-o", str(exe)], check=True)
    x = _inputs()
    (tmp_path / "in.bin").write_bytes(x.numpy().tobytes())
    res = subprocess.run([str(exe), str(SEED), str(STEP), str(OFFSET), str(tmp_path / "in.bin"),
                          str(tmp_path / "out.bin")], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr  # its words are torch's Philox's
    raw = (tmp_path / "out.bin").read_bytes()
    n = x.numel()
    words = torch.frombuffer(bytearray(raw[: 4 * n]), dtype=torch.int32).to(torch.int64) & 0xFFFFFFFF
    bf16 = torch.frombuffer(bytearray(raw[4 * n: 6 * n]), dtype=torch.int16)
    fp16 = torch.frombuffer(bytearray(raw[6 * n:]), dtype=torch.int16)
    assert torch.equal(words, sr.random_words(SEED, STEP, OFFSET, n))
    assert torch.equal(bf16, sr.stochastic_round(x, torch.bfloat16, SEED, STEP, OFFSET).view(torch.int16))
    assert torch.equal(fp16, sr.stochastic_round(x, torch.float16, SEED, STEP, OFFSET).view(torch.int16))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_representable_values_never_change(dtype):
    every = torch.arange(-2 ** 15, 2 ** 15, dtype=torch.int64).to(torch.int16).view(dtype)
    every = every[~every.isnan()]
    for seed, step in ((0, 0), (SEED, STEP)):
        out = sr.stochastic_round(every.float(), dtype, seed, step)
        assert torch.equal(out.view(torch.int16), every.view(torch.int16))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_result_is_one_of_the_two_neighbours(dtype):
    x = _inputs()
    x = x[x.isfinite()]
    out = sr.stochastic_round(x, dtype, SEED, STEP)
    near = x.to(dtype)  # round to nearest: one of the neighbours
    toward = torch.where(near.float() > x, torch.tensor(-math.inf), torch.tensor(math.inf)).to(dtype)
    other = torch.where(near.float() == x, near, torch.nextafter(near, toward))
    ok = (out.view(torch.int16) == near.view(torch.int16)) | (out.view(torch.int16) == other.view(torch.int16))
    assert ok.all(), x[~ok][:5]
    # both neighbours occur
    assert (out.view(torch.int16) != near.view(torch.int16)).any()


def _fraction_up(x: float, dtype: torch.dtype) -> tuple[float, float, float]:
    """(lo, hi, f): the neighbours of x in dtype and x's exact position between
    them; past the largest finite value hi is infinity, placed where the next
    binade would start (65536 for fp16), as round to nearest places it."""
    near = torch.tensor([x]).to(dtype)
    toward = torch.tensor([-math.inf if near.float().item() > x else math.inf]).to(dtype)
    other = torch.nextafter(near, toward)
    lo, hi = sorted([near.float().item(), other.float().item()])
    top = 2.0 * 2.0 ** math.floor(math.log2(lo)) if math.isinf(hi) else hi
    return lo, hi, (x - lo) / (top - lo)  # exact in double for these values


@pytest.mark.parametrize("dtype,value", [
    (torch.bfloat16, 1.0 + 2 ** -9),  # a quarter of the way
    (torch.bfloat16, -3.14159),
    (torch.bfloat16, 1e-3 + 1e-7),
    (torch.bfloat16, 1e-40),  # a float subnormal
    (torch.float16, 0.1),
    (torch.float16, -1000.3),
    (torch.float16, 65510.0),  # between the largest fp16 and infinity's 65536
    (torch.float16, 3e-6),  # fp16 subnormal
    (torch.float16, 1e-8),  # below fp16's smallest subnormal: 0 or 2^-24
], ids=lambda v: str(v).replace("torch.", ""))
def test_unbiased(dtype, value):
    """Many elements holding the same value: the fraction rounded up is the
    value's position between its neighbours. The seeds are fixed, so the counts
    are fixed: the 6-sigma band guards against a biased rule, not against luck."""
    x = torch.tensor(value, dtype=torch.float32).item()  # the float32 actually rounded
    lo, hi, f = _fraction_up(x, dtype)
    assert 0 < f < 1
    n = 2 ** 16
    for seed in (1, SEED):
        out = sr.stochastic_round(torch.full((n,), x), dtype, seed, STEP).float().double()
        ups = int((out == hi).sum())
        assert ups + int((out == lo).sum()) == n
        sigma = math.sqrt(n * f * (1 - f))
        assert abs(ups - n * f) <= 6 * sigma + 1, (ups, n * f, sigma)
        # so the mean converges to x: |mean - x| <= (hi - lo) * 6 sigma / n
        assert math.isinf(hi) or abs(out.mean().item() - x) <= (hi - lo) * (6 * sigma + 1) / n


def test_deterministic_and_independent_of_chunking():
    x = torch.randn(1000, generator=torch.Generator().manual_seed(3))
    for dtype in (torch.bfloat16, torch.float16):
        whole = sr.stochastic_round(x, dtype, SEED, STEP, offset=5)
        assert torch.equal(whole.view(torch.int16), sr.stochastic_round(x, dtype, SEED, STEP, 5).view(torch.int16))
        cuts = [0, 1, 2, 7, 256, 513, 998, 1000]  # pieces of every alignment to the groups of four
        pieces = [sr.stochastic_round(x[a:b], dtype, SEED, STEP, offset=5 + a) for a, b in zip(cuts, cuts[1:])]
        assert torch.equal(torch.cat(pieces).view(torch.int16), whole.view(torch.int16))
        # a 2-D view rounds its flattened elements
        assert torch.equal(sr.stochastic_round(x.view(10, 100), dtype, SEED, STEP, 5).view(-1).view(torch.int16),
                           whole.view(torch.int16))
    words = sr.random_words(SEED, STEP, 0, 4000)
    assert not torch.equal(words, sr.random_words(SEED, STEP + 1, 0, 4000))
    assert not torch.equal(words, sr.random_words(SEED + 1, STEP, 0, 4000))
    assert words.unique().numel() > 3990  # distinct elements get distinct words


def test_bad_input_is_refused():
    x = torch.randn(4)
    with pytest.raises(TypeError, match="float32"):
        sr.stochastic_round(x.double(), torch.bfloat16, 0, 0)
    with pytest.raises(ValueError, match="bfloat16 or torch.float16"):
        sr.stochastic_round(x, torch.float32, 0, 0)
    with pytest.raises(ValueError, match="seed must be an int"):
        sr.stochastic_round(x, torch.bfloat16, -1, 0)
    with pytest.raises(ValueError, match="step must be an int"):
        sr.stochastic_round(x, torch.bfloat16, 0, 2 ** 64)
    with pytest.raises(ValueError, match="beyond int64 indices"):
        sr.stochastic_round(x, torch.bfloat16, 0, 0, offset=2 ** 63 - 2)
