"""The emulation's stand-ins for cuda_fp16.h and cuda_bf16.h convert as CUDA
does: every half widened exactly, floats narrowed to nearest even (ties,
subnormals, overflow to inf) as torch narrows them, and any NaN turned into
CUDA's canonical one (0x7fff narrowed, 0x7fffffff widened from a half), where
torch keeps a sign and payload. Cases run in the emulation worker."""

import ctypes

import pytest
import torch

import emu_device as ed
from conftest import requires_native_cpu

pytestmark = [pytest.mark.cuda_emulated, requires_native_cpu]


def _probe(name, src: torch.Tensor, out_dtype) -> torch.Tensor:
    src = src.contiguous()
    out = torch.empty(src.numel(), dtype=out_dtype)
    getattr(ed.lib(), name)(ctypes.c_void_p(src.data_ptr()), ctypes.c_void_p(out.data_ptr()), src.numel())
    return out


def _all_16_bit_patterns() -> torch.Tensor:
    return torch.arange(-(1 << 15), 1 << 15, dtype=torch.int32).to(torch.int16)


def _floats_around(values: torch.Tensor) -> torch.Tensor:
    """The floats at each value, one float ulp either side, and the midpoints
    to the next value up (the ties) with their neighbours; plus random bits."""
    v = values.float()
    v = v[torch.isfinite(v)].unique()
    nxt = v[1:]
    mid = (v[:-1].double() + nxt.double()) / 2  # exact in fp64, and a float
    mid = mid.float()
    pieces = [v, mid]
    for x in (v, mid):
        pieces.append(torch.nextafter(x, torch.full_like(x, float("inf"))))
        pieces.append(torch.nextafter(x, torch.full_like(x, -float("inf"))))
    gen = torch.Generator().manual_seed(0)
    pieces.append(torch.randint(-(1 << 31), 1 << 31, (1 << 20,), generator=gen, dtype=torch.int64).to(torch.int32)
                  .view(torch.float32))
    pieces.append(torch.tensor([65504.0, 65519.996, 65520.0, 1e10, float("inf"), -float("inf"), 0.0, -0.0, 2**-25,
                                2**-24, 3 * 2**-26, float("nan"), -float("nan")]))
    return torch.cat(pieces)


def _check_narrowing(name, half_dtype):
    x = _floats_around(_all_16_bit_patterns().view(half_dtype))
    got = _probe(name, x, torch.int16)
    nan = torch.isnan(x)
    want = x.to(half_dtype).view(torch.int16)
    assert torch.equal(got[~nan], want[~nan]), int((got[~nan] != want[~nan]).sum())
    assert bool((got[nan] == 0x7FFF).all())  # CUDA's canonical NaN, sign dropped
    return int(nan.sum()), x.numel()


def half_case():
    nans, total = _check_narrowing("fo_emu_float_to_half", torch.float16)
    assert nans > 1000 and total > 1 << 20
    h = _all_16_bit_patterns()
    got = _probe("fo_emu_half_to_float", h, torch.float32)
    ref = h.view(torch.float16).float()
    nan = torch.isnan(ref)
    assert torch.equal(got[~nan].view(torch.int32), ref[~nan].view(torch.int32))
    assert bool((got[nan].view(torch.int32) == 0x7FFFFFFF).all())


def test_half_conversions_are_cudas(cuda_emu):
    cuda_emu.run(half_case)


def bfloat16_case():
    _check_narrowing("fo_emu_float_to_bfloat16", torch.bfloat16)
    h = _all_16_bit_patterns()
    got = _probe("fo_emu_bfloat16_to_float", h, torch.float32)
    # exact, NaN payloads kept: the bits move up by 16
    assert torch.equal(got.view(torch.int32), h.to(torch.int32) << 16)


def test_bfloat16_conversions_are_cudas(cuda_emu):
    cuda_emu.run(bfloat16_case)
