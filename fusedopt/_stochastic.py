"""Stochastic rounding of float32 to bf16 and fp16 in plain torch: the reference
that csrc/math/stochastic.h matches bit for bit (the header's comment defines
the generator and the rounding; this module follows it step for step).

Random bits: element i (its index in the whole, unsharded, flattened param) at
step t with the param's 64-bit seed s takes word i % 4 of Philox4x32-10 with key
(s mod 2^32, s >> 32) and counter (i // 4 mod 2^32, i // 4 >> 32, t mod 2^32,
t >> 32): a pure function of (s, t, i), whatever the chunking or sharding.

torch has no unsigned 32-bit arithmetic to speak of, so the words live in int64
tensors (values 0 .. 2^32 - 1) and the 32 x 32 -> 64-bit products are split in
16-bit halves to stay below 2^63.
"""

from __future__ import annotations

import torch
from torch import Tensor

_MASK32 = 0xFFFFFFFF
_M0, _M1 = 0xD2511F53, 0xCD9E8D57  # Philox4x32 multipliers
_W0, _W1 = 0x9E3779B9, 0xBB67AE85  # its Weyl key increments


def _mulhilo(a: torch.Tensor, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(high, low) 32-bit halves of a * m, for a in [0, 2^32) and a constant m."""
    p_lo = a * (m & 0xFFFF)  # < 2^48
    p_hi = a * (m >> 16)  # < 2^48
    t = p_lo + ((p_hi & 0xFFFF) << 16)  # a * m = (p_hi >> 16) * 2^32 + t
    return (p_hi >> 16) + (t >> 32), t & _MASK32


def philox4x32_10(counter: list[torch.Tensor], key: tuple[int, int]) -> list[torch.Tensor]:
    """Philox4x32-10 of counters given as four int64 tensors of 32-bit words."""
    c0, c1, c2, c3 = counter
    k0, k1 = key
    for _ in range(10):
        hi0, lo0 = _mulhilo(c0, _M0)
        hi1, lo1 = _mulhilo(c2, _M1)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
        k0, k1 = (k0 + _W0) & _MASK32, (k1 + _W1) & _MASK32
    return [c0, c1, c2, c3]


def _check_u64(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2 ** 64:
        raise ValueError(f"{name} must be an int in [0, 2**64), got {value!r}")


def random_words(seed: int, step: int, offset: int, numel: int, device=None) -> torch.Tensor:
    """The 32-bit words (int64) of elements offset .. offset + numel - 1."""
    _check_u64("seed", seed)
    _check_u64("step", step)
    _check_u64("offset", offset)
    if numel < 0 or offset + numel > 2 ** 63:
        raise ValueError(f"elements {offset} .. {offset + numel} are beyond int64 indices")
    if numel == 0:
        return torch.empty(0, dtype=torch.int64, device=device)
    first, last = offset >> 2, (offset + numel - 1) >> 2
    groups = torch.arange(first, last + 1, dtype=torch.int64, device=device)
    full = lambda v: torch.full_like(groups, v)  # noqa: E731
    counter = [groups & _MASK32, (groups >> 32) & _MASK32, full(step & _MASK32), full(step >> 32)]
    words = torch.stack(philox4x32_10(counter, (seed & _MASK32, seed >> 32)), dim=1).view(-1)
    start = offset - 4 * first
    return words[start:start + numel]


def _bits(x: torch.Tensor) -> torch.Tensor:
    return x.view(torch.int32).to(torch.int64) & _MASK32


def _as16(bits: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """int64 values in [0, 2^16) as a tensor of a 16-bit dtype with those bits."""
    return torch.where(bits >= 0x8000, bits - 0x10000, bits).to(torch.int16).view(dtype)


def round_bf16(x: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    u = _bits(x)
    out = (u + (r >> 16)) >> 16
    out = torch.where((u & 0x7FFFFFFF) > 0x7F800000, torch.full_like(out, 0x7FC0), out)
    return _as16(out, torch.bfloat16)


def round_fp16(x: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    u = _bits(x)
    sign = (u >> 16) & 0x8000
    a = u & 0x7FFFFFFF
    exp = a >> 23
    # fp16's normal binades: 13 bits dropped (a carry to 65536 is infinity)
    normal = (a + (r >> 19)) & ~0x1FFF
    normal = torch.where(normal >= 0x47800000, torch.full_like(normal, 0x7C00),
                         (normal >> 13) - (112 << 10))
    # 2^-24 <= |x| < 2^-14: the subnormal grid is every 2^d-th float, d = 126 - exp
    d = (126 - exp).clamp(14, 23)
    sub = (a + (r >> (32 - d))) & ~((1 << d) - 1)
    sub = (_float_of(sub) * 16777216.0).to(torch.int64)
    # |x| < 2^-24: 0 or 2^-24 (fp16 bits 1), P(up) = m / 2^d
    e = exp.clamp_min(1)
    m = torch.where(exp > 0, (a & 0x7FFFFF) | 0x800000, a)
    d = 126 - e
    narrow = (r >> (32 - d.clamp(max=32))) + m >= (1 << d.clamp(max=32))
    shift = (d - 32).clamp(0, 63)
    wide = r + torch.where(d - 32 < 24, m >> shift, torch.zeros_like(m)) >= (1 << 32)
    tiny = torch.where(d <= 32, narrow, wide).to(torch.int64)
    out = torch.where(exp >= 113, normal, torch.where(exp >= 103, sub, tiny))
    out = torch.where(a >= 0x47800000, torch.full_like(out, 0x7C00), out)
    out = torch.where(a > 0x7F800000, torch.full_like(out, 0x7E00), out)
    return _as16(sign | out, torch.float16)


def _float_of(bits: torch.Tensor) -> torch.Tensor:
    return torch.where(bits >= 2 ** 31, bits - 2 ** 32, bits).to(torch.int32).view(torch.float32)


_ROUNDERS = {torch.bfloat16: round_bf16, torch.float16: round_fp16}


def stochastic_round(x: torch.Tensor, dtype: torch.dtype, seed: int, step: int, offset: int = 0) -> torch.Tensor:
    """x (float32) rounded stochastically to dtype (bf16 or fp16), element k of
    the flattened x taking the random word of global index offset + k."""
    if not isinstance(x, torch.Tensor) or x.dtype != torch.float32:
        raise TypeError(f"stochastic_round rounds float32 tensors, got {getattr(x, 'dtype', type(x))}")
    if dtype not in _ROUNDERS:
        raise ValueError(f"stochastic_round rounds to torch.bfloat16 or torch.float16, not {dtype}")
    r = random_words(seed, step, offset, x.numel(), device=x.device)
    return _ROUNDERS[dtype](x.detach().reshape(-1), r).view(x.shape)


# -- keyed by a device tensor: the optimizers' per-param generator state ---------------


def splitmix64(x: int) -> int:
    """SplitMix64's output function (Steele et al., OOPSLA 2014) of a 64-bit x:
    each param's seed from the optimizer's seed and the param's index."""
    x = (x + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return x ^ (x >> 31)


def as_int64(u: int) -> int:
    """A value in [0, 2^64) as the int64 with its bits (a rounding key holds seeds so)."""
    return u - 2 ** 64 if u >= 2 ** 63 else u


def _words_of(t: Tensor) -> tuple[Tensor, Tensor]:
    """(low, high) 32-bit words of an int64 tensor's bits, as int64 in [0, 2^32)."""
    return t & _MASK32, (t >> 32) & _MASK32


def keyed_words(key: Tensor, offset: int, numel: int) -> Tensor:
    """random_words(seed, step, offset, numel) with seed = key[0] and step =
    key[1] (the int64 rounding key, read as unsigned 64-bit words) on the key's
    device, without reading it on the host."""
    if numel == 0:
        return torch.empty(0, dtype=torch.int64, device=key.device)
    first, last = offset >> 2, (offset + numel - 1) >> 2
    groups = torch.arange(first, last + 1, dtype=torch.int64, device=key.device)
    s_lo, s_hi = _words_of(key[0])
    t_lo, t_hi = _words_of(key[1])
    counter = [groups & _MASK32, (groups >> 32) & _MASK32, t_lo.expand_as(groups), t_hi.expand_as(groups)]
    words = torch.stack(philox4x32_10(counter, (s_lo, s_hi)), dim=1).view(-1)
    start = offset - 4 * first
    return words[start:start + numel]


def round_keyed(x: Tensor, dtype: torch.dtype, key: Tensor, offset: int) -> Tensor:
    """stochastic_round(x, dtype, key[0], key[1], offset), the key a device tensor."""
    r = keyed_words(key.to(x.device), offset, x.numel())
    return _ROUNDERS[dtype](x.detach().reshape(-1), r).view(x.shape)
