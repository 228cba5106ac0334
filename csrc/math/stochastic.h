// Stochastic rounding of float32 results to bf16 and fp16 params, written once
// for every backend. fusedopt/_stochastic.py is the plain-torch twin: both give
// the same bits (tests/test_stochastic_rounding.py checks it).
//
// The random bits. Element i of a param (its index in the whole, unsharded
// tensor, flattened) at optimizer step t, with the param's 64-bit seed s, takes
// word i % 4 of Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy
// as 1, 2, 3", SC 2011) with
//   key     = (s mod 2^32, s >> 32)
//   counter = ((i / 4) mod 2^32, (i / 4) >> 32, t mod 2^32, t >> 32).
// That is a pure function of (s, t, i): the same bits whatever the chunking,
// sharding or bucketing, on every backend, and a resumed run continues the
// stream given the seed and step. (It is also torch's at::philox_engine with
// seed s, subsequence t and offset i / 4, which the test uses as an oracle.) One
// Philox call serves four neighbouring elements.
//
// The rounding. For a finite x, let lo be x with its magnitude truncated to the
// target format and hi the next value of larger magnitude (infinity past the
// largest finite one), both with x's sign, and L / 2^D the exact position of |x|
// between |lo| and |hi| (D bits dropped). With R the top D bits of the element's
// 32-bit word r, the result is hi if R + L >= 2^D, else lo: probability
// L / 2^D exactly, so the rounding is unbiased, and a value of the target
// format (L = 0) never changes. For bf16 D is 16 everywhere; for fp16 it is 13
// for normal results and up to 32 in the subnormal range; below 2^-33, where
// more than 32 bits are dropped, L is truncated to 32 bits (P(hi) is low by
// less than 2^-32). NaN gives the canonical NaN of the dtype's round-to-nearest
// conversion (as dtypes.h); infinities stay; fp16 |x| >= 65536 is infinity, as
// round to nearest gives.
#pragma once

#include <cstdint>

#include "common.h"

FO_MATH_BEGIN

FO_HD FO_INLINE uint32_t sr_bits_of(float x) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(x);
#else
  uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  return u;
#endif
}

FO_HD FO_INLINE float sr_float_of(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float x;
  std::memcpy(&x, &u, sizeof x);
  return x;
#endif
}

FO_HD FO_INLINE uint32_t sr_mulhilo(uint32_t a, uint32_t b, uint32_t* hi) {
#if defined(__CUDA_ARCH__)
  *hi = __umulhi(a, b);
  return a * b;
#else
  const uint64_t p = static_cast<uint64_t>(a) * b;
  *hi = static_cast<uint32_t>(p >> 32);
  return static_cast<uint32_t>(p);
#endif
}

// Philox4x32-10 of the counter c (in place) under the key (k0, k1).
FO_HD FO_INLINE void philox4x32_10(uint32_t (&c)[4], uint32_t k0, uint32_t k1) {
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
  for (int round = 0; round < 10; ++round) {
    uint32_t hi0, hi1;
    const uint32_t lo0 = sr_mulhilo(0xD2511F53u, c[0], &hi0);
    const uint32_t lo1 = sr_mulhilo(0xCD9E8D57u, c[2], &hi1);
    const uint32_t c1 = c[1], c3 = c[3];
    c[0] = hi1 ^ c1 ^ k0;
    c[1] = lo1;
    c[2] = hi0 ^ c3 ^ k1;
    c[3] = lo0;
    k0 += 0x9E3779B9u;  // the Weyl key schedule
    k1 += 0xBB67AE85u;
  }
}

// The random words of elements 4g .. 4g + 3 (word j is element 4g + j's).
FO_HD FO_INLINE void sr_random_words(uint64_t seed, uint64_t step, uint64_t group, uint32_t (&out)[4]) {
  out[0] = static_cast<uint32_t>(group);
  out[1] = static_cast<uint32_t>(group >> 32);
  out[2] = static_cast<uint32_t>(step);
  out[3] = static_cast<uint32_t>(step >> 32);
  philox4x32_10(out, static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
}

// One element's word; kernels that handle four neighbours call sr_random_words.
FO_HD FO_INLINE uint32_t sr_random_word(uint64_t seed, uint64_t step, uint64_t index) {
  uint32_t w[4];
  sr_random_words(seed, step, index >> 2, w);
  return w[index & 3];
}

// x rounded stochastically to bf16 (its bits) with the random word r.
FO_HD FO_INLINE uint16_t sr_bf16_bits(float x, uint32_t r) {
  const uint32_t u = sr_bits_of(x);
  if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fc0u;
  // the carry out of the low 16 bits is the rounding up; it may carry into the
  // exponent (the next binade, or infinity past bf16's largest value), and an
  // infinity's low bits are zero, so it stays. No 32-bit overflow: |u| <= inf.
  return static_cast<uint16_t>((u + (r >> 16)) >> 16);
}

// x rounded stochastically to fp16 (its bits) with the random word r.
FO_HD FO_INLINE uint16_t sr_fp16_bits(float x, uint32_t r) {
  const uint32_t u = sr_bits_of(x);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u);  // NaN
  if (a >= 0x47800000u) return static_cast<uint16_t>(sign | 0x7c00u);  // |x| >= 65536, inf
  const int exp = static_cast<int>(a >> 23);
  if (exp >= 113) {
    // fp16's normal binades (|x| >= 2^-14): 13 bits dropped; a carry may reach
    // 65536, which is fp16's infinity
    a = (a + (r >> 19)) & ~0x1fffu;
    if (a >= 0x47800000u) return static_cast<uint16_t>(sign | 0x7c00u);
    return static_cast<uint16_t>(sign | ((a >> 13) - (112u << 10)));  // rebias the exponent
  }
  if (exp >= 103) {
    // 2^-24 <= |x| < 2^-14: fp16's subnormal grid, multiples of 2^-24, is
    // every 2^D-th float of this binade (D = 14..23); the result k * 2^-24 is
    // exact in float, and k is the fp16's bits (k = 1024 is 2^-14, a normal)
    const int d = 126 - exp;
    a = (a + (r >> (32 - d))) & ~((1u << d) - 1u);
    return static_cast<uint16_t>(sign | static_cast<uint32_t>(sr_float_of(a) * 16777216.0f));
  }
  // |x| < 2^-24: lo = 0, hi = 2^-24, and |x| / 2^-24 = m / 2^D with m the
  // significand (float subnormals: exponent field 0, scaled as exponent 1)
  const int e = exp > 0 ? exp : 1;
  const uint32_t m = exp > 0 ? (a & 0x7fffffu) | 0x800000u : a;
  const int d = 126 - e;  // 24 .. 125
  bool up;
  if (d <= 32) {
    up = static_cast<uint64_t>(r >> (32 - d)) + m >= (uint64_t{1} << d);
  } else {
    const uint32_t l = d - 32 < 24 ? m >> (d - 32) : 0u;  // L truncated to 32 bits
    up = static_cast<uint64_t>(r) + l >= (uint64_t{1} << 32);
  }
  return static_cast<uint16_t>(sign | (up ? 1u : 0u));
}

FO_MATH_END
