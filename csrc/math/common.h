// Shared by every kernel, CPU and CUDA: the function qualifiers and the few
// scalar helpers the update rules are written in.
#pragma once

#include <cmath>
#include <cstdint>

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

// torch.maximum semantics: NaN in either operand gives NaN.
FO_HD FO_INLINE float vmax(float a, float b) {
  if (a != a) return a;
  if (b != b) return b;
  return a > b ? a : b;
}

FO_HD FO_INLINE float vsqrt(float x) {
  return sqrtf(x);
}

// torch's x.clamp_min_(lo).clamp_max_(hi): NaN stays NaN; with lo > hi every
// element becomes hi. The bounds are never NaN here.
FO_HD FO_INLINE float vclamp(float x, float lo, float hi) {
  const float m = x < lo ? lo : x;
  return m > hi ? hi : m;
}

FO_MATH_END
