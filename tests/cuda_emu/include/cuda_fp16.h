// Test-only stand-in for CUDA's cuda_fp16.h (see cuda_runtime.h): __half and
// the conversions csrc/cuda uses, with CUDA's exact rules:
//   float -> half, round to nearest even: overflow (>= 65520 in magnitude) gives
//     inf, subnormals are rounded correctly, any NaN gives the canonical 0x7fff
//     (the sign dropped), as cvt.rn.f16.f32 does;
//   half -> float is exact; any NaN gives the canonical 0x7fffffff.
// tests/test_cuda_emulated_conversions.py checks both against torch for every
// half and a spread of floats.
#pragma once

#include <cstdint>
#include <cstring>

struct __half_raw {
  unsigned short x;
};

struct __half {
  unsigned short __x;
  __half() = default;
  constexpr __half(__half_raw r) : __x(r.x) {}
  operator __half_raw() const { return __half_raw{__x}; }
};

inline __half __float2half_rn(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t a = x & 0x7fffffffu;
  if (a > 0x7f800000u) return __half_raw{0x7fff};               // NaN
  if (a >= 0x47800000u) return __half_raw{static_cast<unsigned short>(sign | 0x7c00u)};  // >= 2^16, inf
  uint32_t h;
  uint32_t rem;
  uint32_t half_ulp;
  if (a >= 0x38800000u) {  // a normal half: rebias the exponent (127 -> 15), keep 10 bits
    const uint32_t m = a - 0x38000000u;
    h = m >> 13;
    rem = m & 0x1fffu;
    half_ulp = 0x1000u;
  } else if (a <= 0x33000000u) {  // at most 2^-25, half the least subnormal: ties to even, 0
    return __half_raw{static_cast<unsigned short>(sign)};
  } else {  // a subnormal half: count units of 2^-24
    const uint32_t e = a >> 23;
    const uint32_t mant = (a & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126u - e;
    h = mant >> shift;
    rem = mant & ((1u << shift) - 1u);
    half_ulp = 1u << (shift - 1u);
  }
  if (rem > half_ulp || (rem == half_ulp && (h & 1u))) ++h;  // a carry rounds up into the next exponent, or inf
  return __half_raw{static_cast<unsigned short>(sign | h)};
}

inline __half __float2half(float f) { return __float2half_rn(f); }

inline float __half2float(__half h) {
  const uint32_t x = h.__x;
  const uint32_t sign = (x & 0x8000u) << 16;
  const uint32_t e = (x >> 10) & 0x1fu;
  const uint32_t m = x & 0x3ffu;
  uint32_t out;
  if (e == 0x1fu) {
    out = m != 0 ? 0x7fffffffu : (sign | 0x7f800000u);
  } else if (e != 0) {
    out = sign | ((e + 112u) << 23) | (m << 13);
  } else if (m == 0) {
    out = sign;
  } else {  // subnormal: normalize the mantissa
    uint32_t mm = m;
    uint32_t exp = 113u;  // 2^-14's biased exponent, lowered per shift
    while ((mm & 0x400u) == 0) {
      mm <<= 1;
      --exp;
    }
    out = sign | (exp << 23) | ((mm & 0x3ffu) << 13);
  }
  float f;
  std::memcpy(&f, &out, 4);
  return f;
}

inline unsigned short __half_as_ushort(__half h) { return h.__x; }
inline __half __ushort_as_half(unsigned short u) { return __half_raw{u}; }
