"""8-bit blockwise quantization: fusedopt/_quant8.py (plain torch) and
csrc/math/quant8.h (CPU and CUDA kernels) give the same bits, the header's
table lookup of a code equals its search everywhere, the maps are the dynamic
maps of Dettmers et al. 2022 (bitsandbytes builds the same ones), and each
element gets the nearest code."""

import os
import shutil
import struct
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import pytest
import torch

from fusedopt import _quant8 as q8

ROOT = Path(__file__).resolve().parent.parent


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.view(torch.int32)


def _same_floats(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit for bit, except that any NaN matches any NaN."""
    nan = a.isnan()
    return bool(torch.equal(nan, b.isnan()) and torch.equal(_bits(a)[~nan], _bits(b)[~nan]))


def _inputs() -> torch.Tensor:
    """Blocks of every kind the kernels will meet, the last one partial."""
    g = torch.Generator().manual_seed(22)
    parts = []
    for scale in (1e-30, 1e-8, 1e-3, 1.0, 1e3, 1e30):  # optimizer-state magnitudes and beyond
        parts.append(torch.randn(256 * 3, generator=g) * scale)
    parts.append(torch.randn(256, generator=g).abs() * 1e-4)  # second moments: non-negative
    parts.append(torch.zeros(256))  # absmax 0
    parts.append(torch.full((256,), -0.0))
    nan_block = torch.randn(256, generator=g)
    nan_block[17] = float("nan")
    inf_block = torch.randn(256, generator=g)
    inf_block[3], inf_block[200] = float("inf"), float("-inf")
    parts += [nan_block, inf_block]
    subnormal = torch.randn(256, generator=g) * 1e-41  # subnormal absmax: 1 / absmax would overflow
    subnormal[::7] = 0.0
    parts.append(subnormal)
    for signed in (True, False):
        # n exactly on each threshold, and the floats either side, with absmax 1
        values, thresholds = q8.map_tables(signed)
        t = torch.tensor(thresholds)
        ties = torch.cat([t, torch.nextafter(t, torch.tensor(-2.0)), torch.nextafter(t, torch.tensor(2.0)),
                          torch.tensor(values)])
        for start in range(0, ties.numel(), 255):
            parts.append(torch.cat([torch.ones(1), ties[start:start + 255]]))
        # every code value at a scale: quantizing a dequantized block keeps its codes
        parts.append(torch.tensor(values) * 3.7)
    parts.append(torch.randn(100, generator=g))  # partial last block
    return torch.cat(parts)


@pytest.fixture(scope="module")
def native_results(tmp_path_factory):
    cxx = shutil.which(os.environ.get("CXX", "c++"))
    if cxx is None:
        pytest.skip("no C++ compiler")
    tmp = tmp_path_factory.mktemp("quant8")
    exe = tmp / "quant8_check"
    # the library's CPU flags: no contraction of a * b + c into an FMA
    subprocess.run([cxx, "-std=c++17", "-O2", "-ffp-contract=off", "-fno-math-errno", "-Wall", "-Werror",
                    f"-I{ROOT / 'csrc'}", str(ROOT / "tests/native/quant8_check.cpp"), "-o", str(exe)],
                   check=True)
    x = _inputs()
    (tmp / "in.bin").write_bytes(x.numpy().tobytes())
    res = subprocess.run([str(exe), str(tmp / "in.bin"), str(tmp / "out.bin")], capture_output=True, text=True)
    # the program first checks the CPU kernels' table lookup against the search
    assert res.returncode == 0, res.stdout + res.stderr
    assert " 0 differ from the search" in res.stdout
    raw = (tmp / "out.bin").read_bytes()
    n, nb = x.numel(), q8.num_blocks(x.numel())
    out, pos = {}, 0
    for signed in (True, False):
        codes = torch.frombuffer(bytearray(raw[pos:pos + n]), dtype=torch.uint8)
        pos += n
        absmax = torch.frombuffer(bytearray(raw[pos:pos + 4 * nb]), dtype=torch.float32)
        pos += 4 * nb
        deq = torch.frombuffer(bytearray(raw[pos:pos + 4 * n]), dtype=torch.float32)
        pos += 4 * n
        out[signed] = (codes, absmax, deq)
    assert pos == len(raw)
    return x, out


@pytest.mark.parametrize("signed", [True, False], ids=["signed", "unsigned"])
def test_header_matches_torch_bit_for_bit(native_results, signed):
    x, out = native_results
    codes, absmax, deq = out[signed]
    ref_codes, ref_absmax = q8.quantize_blockwise(x, signed)
    assert torch.equal(codes, ref_codes)
    assert _same_floats(absmax, ref_absmax)
    assert _same_floats(deq, q8.dequantize_blockwise(ref_codes, ref_absmax, signed))


def test_header_tables_are_generated_from_the_definition():
    sys.path.insert(0, str(ROOT / "tests" / "native"))
    try:
        from write_quant8_maps import header
    finally:
        sys.path.pop(0)
    assert (ROOT / "csrc/math/quant8_maps.h").read_text() == header(), \
        "regenerate: python tests/native/write_quant8_maps.py > csrc/math/quant8_maps.h"


@pytest.mark.parametrize("signed", [True, False], ids=["signed", "unsigned"])
def test_each_element_gets_the_nearest_code_ties_to_smaller_magnitude(signed):
    x = _inputs()
    x = x[x.isfinite()][: 256 * 30]  # whole blocks of finite values
    codes, absmax = q8.quantize_blockwise(x, signed)
    n = torch.where(absmax[:, None] > 0, x.view(-1, 256) / absmax[:, None], 0.0)
    values = q8.code_values(signed).double()
    dist = (n.double().reshape(-1, 1) - values[None, :]).abs()  # exact: doubles hold these differences
    chosen = dist.gather(1, codes.long().view(-1, 1)).squeeze(1)
    best = dist.min(dim=1).values
    assert torch.equal(chosen, best)
    # among equally near codes, the one of smaller magnitude
    tied = (dist == best[:, None]).sum(dim=1) > 1
    assert tied.any()
    tie_values = values[codes.long().view(-1)][tied]
    other = torch.where(dist[tied] == best[tied][:, None], values.abs()[None, :], torch.inf).min(dim=1).values
    assert torch.equal(tie_values.abs(), other)


@pytest.mark.parametrize("signed", [True, False], ids=["signed", "unsigned"])
def test_maps_are_bitsandbytes_dynamic_maps(signed):
    """Our values are the float32 nearest the exact ones; bitsandbytes computes
    the same map in float32 arithmetic (linspace, a mean, a product: three
    roundings), so they agree within two float32 ulps (bit patterns of the same
    sign, 2 apart at most)."""
    bnbf = pytest.importorskip("bitsandbytes.functional")
    ours = q8.code_values(signed)
    theirs = bnbf.create_dynamic_map(signed=signed)
    assert torch.equal(ours.sign(), theirs.sign())
    assert (ours.view(torch.int32).long() - theirs.view(torch.int32).long()).abs().max() <= 2
    values = q8.map_tables(signed)[0]
    assert all(Fraction(v) == Fraction(struct.unpack("<f", struct.pack("<f", v))[0]) for v in values)


@pytest.mark.parametrize("signed", [True, False], ids=["signed", "unsigned"])
def test_round_trip_no_worse_than_bitsandbytes(signed):
    """bitsandbytes' blockwise quantization as the oracle: element by element, our
    nearest code is never farther from x than the code bitsandbytes picks, give or
    take the maps' last-ulp differences (bitsandbytes' CPU search is not always
    exact: it picks a farther code for a few percent of second-moment values)."""
    bnbf = pytest.importorskip("bitsandbytes.functional")
    g = torch.Generator().manual_seed(5)
    x = torch.randn(256 * 64 + 77, generator=g) * torch.logspace(-6, 2, 256 * 64 + 77).sqrt()
    if not signed:
        x = x.square()  # second moments
    codes, absmax = q8.quantize_blockwise(x, signed)
    ours = q8.dequantize_blockwise(codes, absmax, signed)
    code = bnbf.create_dynamic_map(signed=signed)
    qb, state = bnbf.quantize_blockwise(x, code=code, blocksize=256)
    theirs = bnbf.dequantize_blockwise(qb, state)
    assert torch.equal(state.absmax, absmax)
    err, err_bnb = (ours - x).abs(), (theirs - x).abs()
    slack = 4 * torch.finfo(torch.float32).eps * absmax.repeat_interleave(256)[: x.numel()]
    assert (err <= err_bnb + slack).all()
    assert err.mean() <= err_bnb.mean() * (1 + 1e-6)


def test_codes_are_a_fixed_point_of_the_round_trip():
    """Quantizing a dequantized block gives its codes and scale back, where the
    block's absmax has a code of its own (1.0: the signed map has no -1)."""
    x = torch.randn(40, 256, generator=torch.Generator().manual_seed(1))
    top = x.gather(1, x.abs().argmax(dim=1, keepdim=True))
    x = (x * top.sign()).view(-1)  # each block's largest magnitude positive
    for signed in (True, False):
        codes, absmax = q8.quantize_blockwise(x if signed else x.abs(), signed)
        again, absmax2 = q8.quantize_blockwise(q8.dequantize_blockwise(codes, absmax, signed), signed)
        assert torch.equal(again, codes) and torch.equal(absmax2, absmax)


def test_zeros_stay_zero_and_no_value_grows_past_absmax():
    """Whatever the block's scale, subnormal included: a zero dequantizes to
    zero and no element's magnitude exceeds the block's absmax."""
    g = torch.Generator().manual_seed(9)
    x = torch.cat([torch.randn(256, generator=g) * scale for scale in (1e-41, 1e-38, 1e-20, 1.0, 1e30)])
    x[::5] = 0.0
    for signed in (True, False):
        codes, absmax = q8.quantize_blockwise(x, signed)
        back = q8.dequantize_blockwise(codes, absmax, signed)
        assert (back[x == 0] == 0).all()
        assert (back.view(-1, 256).abs() <= absmax[:, None]).all()
    assert absmax[0] < torch.finfo(torch.float32).tiny  # a subnormal scale


def test_shapes_and_empty():
    x = torch.randn(3, 5, 37)
    codes, absmax = q8.quantize_blockwise(x, True)
    assert codes.shape == x.shape and codes.dtype == torch.uint8
    assert absmax.shape == (q8.num_blocks(x.numel()),)
    assert q8.dequantize_blockwise(codes, absmax, True).shape == x.shape
    codes, absmax = q8.quantize_blockwise(torch.empty(0, 4), False)
    assert codes.shape == (0, 4) and absmax.numel() == 0
    assert q8.dequantize_blockwise(codes, absmax, False).shape == (0, 4)


def test_bad_input_is_refused():
    with pytest.raises(TypeError, match="float32"):
        q8.quantize_blockwise(torch.randn(10, dtype=torch.float64), True)
    codes, absmax = q8.quantize_blockwise(torch.randn(300), True)
    with pytest.raises(TypeError, match="uint8"):
        q8.dequantize_blockwise(codes.int(), absmax, True)
    with pytest.raises(ValueError, match="300 codes need 2 block scales, got 1"):
        q8.dequantize_blockwise(codes, absmax[:1], True)
    with pytest.raises(TypeError, match="float32 absmax"):
        q8.dequantize_blockwise(codes, absmax.double(), True)
