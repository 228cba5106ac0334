// Test-only stand-in for CUDA's cuda_bf16.h (see cuda_runtime.h), with CUDA's
// rules: float -> bfloat16 rounds to nearest even and turns any NaN into the
// canonical 0x7fff; bfloat16 -> float is exact, NaN payloads kept. (csrc/cuda
// converts bf16 by hand today; this is for kernels that use the intrinsics.)
#pragma once

#include <cstdint>
#include <cstring>

struct __nv_bfloat16_raw {
  unsigned short x;
};

struct __nv_bfloat16 {
  unsigned short __x;
  __nv_bfloat16() = default;
  constexpr __nv_bfloat16(__nv_bfloat16_raw r) : __x(r.x) {}
  operator __nv_bfloat16_raw() const { return __nv_bfloat16_raw{__x}; }
};

inline __nv_bfloat16 __float2bfloat16_rn(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  if ((x & 0x7fffffffu) > 0x7f800000u) return __nv_bfloat16_raw{0x7fff};
  x += 0x7fffu + ((x >> 16) & 1u);  // round to nearest even; a carry reaches inf correctly
  return __nv_bfloat16_raw{static_cast<unsigned short>(x >> 16)};
}

inline __nv_bfloat16 __float2bfloat16(float f) { return __float2bfloat16_rn(f); }

inline float __bfloat162float(__nv_bfloat16 h) {
  const uint32_t x = static_cast<uint32_t>(h.__x) << 16;
  float f;
  std::memcpy(&f, &x, 4);
  return f;
}

inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 h) { return h.__x; }
inline __nv_bfloat16 __ushort_as_bfloat16(unsigned short u) { return __nv_bfloat16_raw{u}; }
