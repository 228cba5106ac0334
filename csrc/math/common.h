// Shared by every kernel, CPU and CUDA: the function qualifiers and the few
// scalar helpers the update rules are written in.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

// pow's old glibc symbol version (see the header)
#include "../glibc_versions.h"

#if defined(__CUDACC__)
#define FO_HD __host__ __device__
#define FO_INLINE __forceinline__
#else
#define FO_HD
#define FO_INLINE inline __attribute__((always_inline))
#endif

// Each CPU translation unit is compiled for one instruction set (baseline, AVX2,
// AVX-512). Functions defined in headers would otherwise be merged across those
// units by the linker, and a baseline machine could end up running the AVX-512
// copy. The inline namespace gives every unit its own symbols.
#define FO_STR_(x) #x
#define FO_STRINGIFY(x) FO_STR_(x)

#ifndef FO_ISA_NS
#define FO_ISA_NS generic
#endif

#define FO_MATH_BEGIN    \
  namespace fusedopt {   \
  namespace math {       \
  inline namespace FO_ISA_NS {
#define FO_MATH_END \
  }                 \
  }                 \
  }

FO_MATH_BEGIN

// fmaf without an FMA instruction, exactly. The product of two floats is exact
// in double, so s = a * b + c in double is the exact sum rounded once; rounding
// s to float then gives the correctly rounded result unless s landed exactly on
// a float rounding midpoint (any midpoint between the exact sum and s would be a
// double nearer the sum than s). Those rare sums, and sums in float's subnormal
// range, where the midpoints lie elsewhere, take the slow path: TwoSum recovers
// the double rounding's error, and the sum is rounded to odd instead (truncate
// towards zero, then set the last bit if anything was cut off), which keeps what
// the final rounding to float needs because double carries more than 24 + 2 bits
// (Boldo & Melquiond, "Emulation of FMA and correctly rounded sums", IEEE TC
// 2008). Non-finite sums pass through. Host code only: CUDA has its own fma.
FO_INLINE float fma_by_round_to_odd(float a, float b, float c) {
  const double p = static_cast<double>(a) * static_cast<double>(b);
  const double cd = static_cast<double>(c);
  const double s = p + cd;
  uint64_t bits;
  std::memcpy(&bits, &s, sizeof bits);
  // 29 = 53 - 24 bits below float precision: exactly half a float ulp; biased
  // exponent 897 = 1023 - 126, float's smallest normal
  const bool midpoint = (bits & 0x1fffffffull) == 0x10000000ull;
  const bool subnormal = ((bits >> 52) & 0x7ff) < 897;
  if (__builtin_expect(!midpoint && !subnormal, 1)) return static_cast<float>(s);
  const double t = s - p;
  const double err = (p - (s - t)) + (cd - t);  // exact: s + err == a * b + c
  const bool inexact = err != 0.0 && s - s == 0.0;  // s - s == 0 for finite s only
  // err against s's sign: s was rounded away from zero, and the truncation is
  // the double below it in magnitude (s != 0 whenever err != 0)
  const bool rounded_away = (err < 0.0) == (s > 0.0);
  bits = (bits - uint64_t{inexact && rounded_away}) | uint64_t{inexact};
  double odd;
  std::memcpy(&odd, &bits, sizeof odd);
  return static_cast<float>(odd);
}

// a * b + c rounded once, as torch's CPU kernels compute `add_(x, alpha=a)`,
// `addcmul_` and `lerp_` (an FMA instruction in their AVX2/AVX-512 code, body and
// tail alike). Every backend must produce exactly these bits: the CUDA fma and
// x86's FMA3 are single-rounding by definition; a build without an FMA
// instruction uses the exact emulation above, never libm's call per element.
FO_HD FO_INLINE float vfma(float a, float b, float c) {
#if defined(__CUDA_ARCH__)
  return __fmaf_rn(a, b, c);
#elif defined(__FMA__) || defined(__aarch64__) || defined(__FP_FAST_FMAF)
  return __builtin_fmaf(a, b, c);
#else
  return fma_by_round_to_odd(a, b, c);
#endif
}

// torch.maximum semantics: NaN in either operand gives NaN.
FO_HD FO_INLINE float vmax(float a, float b) {
  if (a != a) return a;
  if (b != b) return b;
  return a > b ? a : b;
}

FO_HD FO_INLINE float vsqrt(float x) {
  return sqrtf(x);
}

// torch.sign / sgn of a real: 1, -1, or +0 for zeros and NaN.
FO_HD FO_INLINE float vsign(float x) {
  return x > 0.0f ? 1.0f : (x < 0.0f ? -1.0f : 0.0f);
}

// torch's x.clamp_min_(lo).clamp_max_(hi): NaN stays NaN; with lo > hi every
// element becomes hi. The bounds are never NaN here.
FO_HD FO_INLINE float vclamp(float x, float lo, float hi) {
  const float m = x < lo ? lo : x;
  return m > hi ? hi : m;
}

FO_MATH_END
