// 8 floats in an AVX2 register; fp16 through F16C, bf16 through integer ops.
#pragma once

#include <immintrin.h>

#include "../math/common.h"
#include "dtypes.h"

namespace fusedopt {
namespace cpu {
inline namespace FO_ISA_NS {

struct Vec {
  static constexpr int N = 8;
  __m256 v;
  Vec() = default;
  FO_INLINE Vec(__m256 x) : v(x) {}
  FO_INLINE Vec(float s) : v(_mm256_set1_ps(s)) {}
};

FO_INLINE Vec operator+(Vec a, Vec b) { return _mm256_add_ps(a.v, b.v); }
FO_INLINE Vec operator-(Vec a, Vec b) { return _mm256_sub_ps(a.v, b.v); }
FO_INLINE Vec operator*(Vec a, Vec b) { return _mm256_mul_ps(a.v, b.v); }
FO_INLINE Vec operator/(Vec a, Vec b) { return _mm256_div_ps(a.v, b.v); }
// a * b + c rounded once (FMA3), as math::vfma
FO_INLINE Vec vfma(Vec a, Vec b, Vec c) { return _mm256_fmadd_ps(a.v, b.v, c.v); }
FO_INLINE Vec vsqrt(Vec a) { return _mm256_sqrt_ps(a.v); }

// maxps returns its second operand when either is NaN; put a's NaNs back so the
// result matches math::vmax (and torch.maximum) lane for lane.
FO_INLINE Vec vmax(Vec a, Vec b) {
  const __m256 r = _mm256_max_ps(a.v, b.v);
  return _mm256_blendv_ps(r, a.v, _mm256_cmp_ps(a.v, a.v, _CMP_UNORD_Q));
}

// torch.sign: 1, -1, or +0 for zeros and NaN (comparisons with NaN are false).
FO_INLINE Vec vsign(Vec a) {
  const __m256 zero = _mm256_setzero_ps(), one = _mm256_set1_ps(1.0f);
  const __m256 pos = _mm256_and_ps(_mm256_cmp_ps(a.v, zero, _CMP_GT_OQ), one);
  const __m256 neg = _mm256_and_ps(_mm256_cmp_ps(a.v, zero, _CMP_LT_OQ), one);
  return _mm256_sub_ps(pos, neg);
}

// maxps/minps return their second operand when either is NaN, so with the data
// second a NaN element stays NaN, as in math::vclamp.
FO_INLINE Vec vclamp(Vec x, Vec lo, Vec hi) { return _mm256_min_ps(hi.v, _mm256_max_ps(lo.v, x.v)); }

FO_INLINE Vec vload(const float* p) { return _mm256_loadu_ps(p); }

FO_INLINE Vec vload(const bf16_t* p) {
  const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
}

FO_INLINE Vec vload(const fp16_t* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

FO_INLINE void vstore(float* p, Vec x) { _mm256_storeu_ps(p, x.v); }

FO_INLINE void vstore(bf16_t* p, Vec x) {
  const __m256i u = _mm256_castps_si256(x.v);
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
  __m256i r = _mm256_add_epi32(u, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7fff)));
  r = _mm256_srli_epi32(r, 16);
  const __m256 nan = _mm256_cmp_ps(x.v, x.v, _CMP_UNORD_Q);
  r = _mm256_blendv_epi8(r, _mm256_set1_epi32(0x7fc0), _mm256_castps_si256(nan));
  // every lane is <= 0xffff, so the unsigned saturating pack is exact
  const __m128i packed = _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(p), packed);
}

FO_INLINE void vstore(fp16_t* p, Vec x) {
  _mm_storeu_si128(
      reinterpret_cast<__m128i*>(p), _mm256_cvtps_ph(x.v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}

}  // namespace FO_ISA_NS
}  // namespace cpu
}  // namespace fusedopt
