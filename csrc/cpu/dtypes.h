// Exact scalar conversions of the storage types to and from float on the CPU
// (round to nearest even, as c10 rounds).
#pragma once

#include <cstdint>
#include <cstring>

#include "../math/common.h"
#include "../storage.h"

namespace fusedopt {
namespace cpu {

inline namespace FO_ISA_NS {

FO_INLINE uint32_t bits_of(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  return u;
}

FO_INLINE float float_of(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}

FO_INLINE float to_float(float x) {
  return x;
}

FO_INLINE float to_float(bf16_t x) {
  return float_of(static_cast<uint32_t>(x.x) << 16);
}

FO_INLINE float to_float(fp16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h.x & 0x8000u) << 16;
  const uint32_t exp = (h.x >> 10) & 0x1fu;
  const uint32_t mant = h.x & 0x3ffu;
  if (exp == 0) {
    // zero or subnormal: mant * 2^-24, exact in float
    const float mag = static_cast<float>(mant) * 5.9604644775390625e-8f;
    return float_of(bits_of(mag) | sign);
  }
  if (exp == 31) return float_of(sign | 0x7f800000u | (mant << 13));
  return float_of(sign | ((exp + 112u) << 23) | (mant << 13));
}

template <class T>
FO_INLINE T from_float(float f);

template <>
FO_INLINE float from_float<float>(float f) {
  return f;
}

template <>
FO_INLINE bf16_t from_float<bf16_t>(float f) {
  if (f != f) return bf16_t{0x7fc0};
  uint32_t u = bits_of(f);
  u += 0x7fffu + ((u >> 16) & 1u);
  return bf16_t{static_cast<uint16_t>(u >> 16)};
}

template <>
FO_INLINE fp16_t from_float<fp16_t>(float f) {
  uint32_t u = bits_of(f);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  u &= 0x7fffffffu;
  if (u >= 0x7f800000u) return fp16_t{static_cast<uint16_t>(sign | (u > 0x7f800000u ? 0x7e00u : 0x7c00u))};
  if (u >= 0x477ff000u) return fp16_t{static_cast<uint16_t>(sign | 0x7c00u)};  // rounds past 65504
  if (u < 0x38800000u) {
    // Below the smallest normal half: adding 0.5f lines the half's subnormal
    // bits up with the float's low mantissa, and the addition rounds to even.
    const float sum = float_of(u) + 0.5f;
    return fp16_t{static_cast<uint16_t>(sign | (bits_of(sum) - 0x3f000000u))};
  }
  const uint32_t odd = (u >> 13) & 1u;
  u += 0xc8000fffu + odd;  // rebias the exponent (-112 << 23) and round to even
  return fp16_t{static_cast<uint16_t>(sign | (u >> 13))};
}

}  // namespace FO_ISA_NS
}  // namespace cpu
}  // namespace fusedopt
