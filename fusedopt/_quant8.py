"""8-bit blockwise dynamic quantization (Dettmers et al. 2022, "8-bit Optimizers
via Block-wise Quantization") in plain torch: the reference that csrc/math/quant8.h
matches bit for bit, and the storage format of 8-bit optimizer states.

Format. A float32 tensor is flattened and cut into blocks of BLOCK = 256 elements
(the last block may be shorter). Each block keeps one float32 scale, its absmax
(the largest |x|, NaN if the block holds a NaN), and one uint8 code per element.
An element's value is ``values[code] * absmax``, where ``values`` is one of the
two 256-entry maps below: the signed map for first moments, the unsigned one for
second moments.

The maps ("dynamic" maps: a decimal exponent, then a linear fraction). For the
decades i = 0..6, whose values are 10^(i-6) times the midpoints of 2^j equal
intervals of [0.1, 1] (j = i for the signed map, j = i + 1 for the unsigned one),
plus 0 and 1. The signed map takes each of those fractions with both signs
(2 * 127 + 2 = 256 values, the smallest about -0.993: -1 has no code), the
unsigned one only positive (254 + 2 = 256). Each value is the float32 nearest to
its exact rational value (ties to even), so the maps need no floating-point
arithmetic of any platform to be defined.

Quantizing, step by step, every operation an IEEE float32 operation rounded to
nearest (so CPU SIMD, CUDA and torch give the same bits):
  1. absmax = max |x| over the block (exact; NaN if any element is NaN);
  2. n = x / absmax if absmax > 0, else 0 (a zero block, or a NaN absmax, whose
     block dequantizes to NaN whatever its codes). A division, not a product
     with 1 / absmax: |n| <= 1 exactly, and a subnormal absmax, whose
     reciprocal overflows, still gives zeros the zero code;
  3. code = the number of thresholds t[k] (k = 0..254, ascending) with t[k] <= n.
     t[k] is the smallest float32 above the exact midpoint of values[k] and
     values[k + 1], or equal to it when that midpoint is a negative float32: n
     goes to the nearest code, and a tie (n exactly on a midpoint) goes to the
     code of smaller magnitude. A NaN n compares false everywhere: code 0.
     Values beyond the map's ends take its end codes.
Dequantizing: values[code] * absmax, one float32 product.
"""

from __future__ import annotations

import functools
import struct
from fractions import Fraction

import torch

BLOCK = 256


def _f32_bits(x: float) -> int:
    return struct.unpack("<I", struct.pack("<f", x))[0]


def _f32(bits: int) -> float:
    return struct.unpack("<f", struct.pack("<I", bits))[0]


def _next_up(x: float) -> float:
    """The next float32 above the float32 x (finite, nonzero)."""
    bits = _f32_bits(x)
    return _f32(bits + 1 if x > 0 else bits - 1)


def _nearest_f32(q: Fraction) -> float:
    """The float32 nearest to the exact rational q, ties to even (q > 0, in the
    normal range): struct rounds the double nearest q, and the double rounding
    is undone by comparing the neighbours exactly."""
    f = struct.unpack("<f", struct.pack("<f", float(q)))[0]
    bits = _f32_bits(f)
    best = None
    for b in (bits - 1, bits, bits + 1):
        err = abs(Fraction(_f32(b)) - q)
        if best is None or err < best[0] or (err == best[0] and b % 2 == 0):
            best = (err, b)
    return _f32(best[1])


def _exact_values(signed: bool) -> list[Fraction]:
    out = [Fraction(0), Fraction(1)]
    for i in range(7):
        count = 2 ** i if signed else 2 ** (i + 1)
        decade = Fraction(1, 10 ** (6 - i))
        for j in range(count):
            # the midpoint of the j-th of `count` equal intervals of [0.1, 1]
            frac = Fraction(1, 10) + Fraction(9, 10) * Fraction(2 * j + 1, 2 * count)
            out.append(decade * frac)
            if signed:
                out.append(-decade * frac)
    return sorted(out)


@functools.cache
def map_tables(signed: bool) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(values, thresholds) of a map as Python floats holding float32 values:
    256 ascending code values and the 255 thresholds between them."""
    values = []
    for q in _exact_values(signed):
        mag = _nearest_f32(abs(q)) if q != 0 else 0.0
        values.append(-mag if q < 0 else mag)
    assert len(values) == 256 and all(a < b for a, b in zip(values, values[1:]))
    thresholds = []
    for lo, hi in zip(values, values[1:]):
        mid = (Fraction(lo) + Fraction(hi)) / 2
        t = _nearest_f32(abs(mid))
        t = -t if mid < 0 else t
        if Fraction(t) < mid or (Fraction(t) == mid and mid > 0):
            t = _next_up(t)
        thresholds.append(t)
    return tuple(values), tuple(thresholds)


# Both maps, made once at import (50 ms; fusedopt imports this module only once
# an optimizer has 8-bit states): a compiled step (torch.compile traces the
# plain-torch 8-bit update) then sees constants, not the exact arithmetic.
_TABLES = {True: map_tables(True), False: map_tables(False)}


@functools.cache
def _map_tensors(signed: bool, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    values, thresholds = _TABLES[signed]
    return (torch.tensor(values, dtype=torch.float32, device=device),
            torch.tensor(thresholds, dtype=torch.float32, device=device))


def code_values(signed: bool, device: torch.device | str = "cpu") -> torch.Tensor:
    """The map's 256 code values, float32, ascending."""
    return _map_tensors(signed, torch.device(device))[0]


def num_blocks(numel: int) -> int:
    return -(-numel // BLOCK)


def _blocks(flat: torch.Tensor) -> torch.Tensor:
    """flat as (blocks, BLOCK), zero-padded: zeros change no block's absmax."""
    pad = num_blocks(flat.numel()) * BLOCK - flat.numel()
    return torch.nn.functional.pad(flat, (0, pad)).view(-1, BLOCK)


def quantize_blockwise(x: torch.Tensor, signed: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes (uint8, x's shape) and per-block absmax (float32, one per 256
    elements of the flattened x) of a float32 tensor."""
    if not isinstance(x, torch.Tensor) or x.dtype != torch.float32:
        raise TypeError(f"quantize_blockwise needs a float32 tensor, got {getattr(x, 'dtype', type(x))}")
    if torch.compiler.is_compiling():
        return torch.ops.fusedopt_quant8.quantize(x.detach(), signed)
    return _quantize(x.detach(), signed)


def _quantize(x: torch.Tensor, signed: bool) -> tuple[torch.Tensor, torch.Tensor]:
    flat = x.reshape(-1)
    if flat.numel() == 0:
        return (torch.empty(x.shape, dtype=torch.uint8, device=x.device),
                torch.empty(0, dtype=torch.float32, device=x.device))
    blocks = _blocks(flat)
    absmax = blocks.abs().amax(dim=1)
    n = torch.where(absmax[:, None] > 0, blocks / absmax[:, None], torch.zeros_like(blocks))
    _, thresholds = _map_tensors(signed, x.device)
    # right=True: the count of thresholds <= n; searchsorted would put a NaN last
    codes = torch.searchsorted(thresholds, n, right=True)
    codes = torch.where(n.isnan(), torch.zeros_like(codes), codes)
    codes = codes.to(torch.uint8).view(-1)[: flat.numel()].view(x.shape)
    return codes, absmax


def dequantize_blockwise(codes: torch.Tensor, absmax: torch.Tensor, signed: bool) -> torch.Tensor:
    """float32 values (codes' shape) of codes and absmax from quantize_blockwise."""
    if codes.dtype != torch.uint8:
        raise TypeError(f"dequantize_blockwise needs uint8 codes, got {codes.dtype}")
    if absmax.dtype != torch.float32 or absmax.dim() != 1:
        raise TypeError(f"dequantize_blockwise needs a 1-D float32 absmax, got {absmax.dtype} of shape "
                        f"{tuple(absmax.shape)}")
    if absmax.numel() != num_blocks(codes.numel()):
        raise ValueError(f"{codes.numel()} codes need {num_blocks(codes.numel())} block scales, "
                         f"got {absmax.numel()}")
    if codes.device != absmax.device:
        raise ValueError(f"codes on {codes.device} and absmax on {absmax.device}")
    if torch.compiler.is_compiling():
        return torch.ops.fusedopt_quant8.dequantize(codes, absmax, signed)
    return _dequantize(codes, absmax, signed)


def _dequantize(codes: torch.Tensor, absmax: torch.Tensor, signed: bool) -> torch.Tensor:
    values = code_values(signed, codes.device)
    flat = values[codes.reshape(-1).long()]
    scale = absmax.repeat_interleave(BLOCK)[: flat.numel()]
    return (flat * scale).view(codes.shape)


# Inside a compiled graph both run as opaque ops (their eager code above):
# inductor's CPU code for them was wrong where a tensor ends in a partial block
# (torch 2.11 to 2.15: per-block scales gathered by element index, or padded
# blocks fused with what reads the states, read past their buffers), which
# made a compiled plain-torch 8-bit step update only the whole blocks
# (tests/test_sr_compile.py, tests/test_state_8bit.py check partial blocks).
@torch.library.custom_op("fusedopt_quant8::quantize", mutates_args=())
def _quantize_op(x: torch.Tensor, signed: bool) -> tuple[torch.Tensor, torch.Tensor]:
    codes, absmax = _quantize(x, signed)
    return codes.clone(), absmax  # (an op's outputs own their storage)


@_quantize_op.register_fake
def _(x: torch.Tensor, signed: bool) -> tuple[torch.Tensor, torch.Tensor]:
    return (torch.empty(x.shape, dtype=torch.uint8, device=x.device),
            torch.empty(num_blocks(x.numel()), dtype=torch.float32, device=x.device))


@torch.library.custom_op("fusedopt_quant8::dequantize", mutates_args=())
def _dequantize_op(codes: torch.Tensor, absmax: torch.Tensor, signed: bool) -> torch.Tensor:
    return _dequantize(codes, absmax, signed).clone()


@_dequantize_op.register_fake
def _(codes: torch.Tensor, absmax: torch.Tensor, signed: bool) -> torch.Tensor:
    return torch.empty(codes.shape, dtype=torch.float32, device=codes.device)
