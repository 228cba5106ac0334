// 16 floats in an AVX-512 register (F + BW + VL); fp16 and bf16 converted in
// registers, rounding to nearest even like c10.
#pragma once

#include <immintrin.h>

#include "../math/common.h"
#include "dtypes.h"

namespace fusedopt {
namespace cpu {
inline namespace FO_ISA_NS {

struct Vec {
  static constexpr int N = 16;
  __m512 v;
  Vec() = default;
  FO_INLINE Vec(__m512 x) : v(x) {}
  FO_INLINE Vec(float s) : v(_mm512_set1_ps(s)) {}
};

FO_INLINE Vec operator+(Vec a, Vec b) { return _mm512_add_ps(a.v, b.v); }
FO_INLINE Vec operator-(Vec a, Vec b) { return _mm512_sub_ps(a.v, b.v); }
FO_INLINE Vec operator*(Vec a, Vec b) { return _mm512_mul_ps(a.v, b.v); }
FO_INLINE Vec operator/(Vec a, Vec b) { return _mm512_div_ps(a.v, b.v); }
// a * b + c rounded once (FMA3), as math::vfma
FO_INLINE Vec vfma(Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a.v, b.v, c.v); }
FO_INLINE Vec vsqrt(Vec a) { return _mm512_sqrt_ps(a.v); }

// maxps returns its second operand when either is NaN; put a's NaNs back so the
// result matches math::vmax (and torch.maximum) lane for lane.
FO_INLINE Vec vmax(Vec a, Vec b) {
  const __m512 r = _mm512_max_ps(a.v, b.v);
  return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(a.v, a.v, _CMP_UNORD_Q), r, a.v);
}

// As in AVX2, max/min return their second operand when either is NaN: with the
// data second, a NaN element stays NaN (math::vclamp).
// torch.sign: 1, -1, or +0 for zeros and NaN (comparisons with NaN are false).
FO_INLINE Vec vsign(Vec a) {
  const __m512 zero = _mm512_setzero_ps(), one = _mm512_set1_ps(1.0f);
  const __m512 pos = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(a.v, zero, _CMP_GT_OQ), one);
  const __m512 neg = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(a.v, zero, _CMP_LT_OQ), one);
  return _mm512_sub_ps(pos, neg);
}

FO_INLINE Vec vclamp(Vec x, Vec lo, Vec hi) { return _mm512_min_ps(hi.v, _mm512_max_ps(lo.v, x.v)); }

FO_INLINE Vec vload(const float* p) { return _mm512_loadu_ps(p); }

FO_INLINE Vec vload(const bf16_t* p) {
  const __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  return _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));
}

FO_INLINE Vec vload(const fp16_t* p) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}

FO_INLINE void vstore(float* p, Vec x) { _mm512_storeu_ps(p, x.v); }

FO_INLINE void vstore(bf16_t* p, Vec x) {
  const __m512i u = _mm512_castps_si512(x.v);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
  __m512i r = _mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff)));
  r = _mm512_srli_epi32(r, 16);
  r = _mm512_mask_blend_epi32(_mm512_cmp_ps_mask(x.v, x.v, _CMP_UNORD_Q), r, _mm512_set1_epi32(0x7fc0));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtepi32_epi16(r));
}

FO_INLINE void vstore(fp16_t* p, Vec x) {
  _mm256_storeu_si256(
      reinterpret_cast<__m256i*>(p), _mm512_cvtps_ph(x.v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}

}  // namespace FO_ISA_NS
}  // namespace cpu
}  // namespace fusedopt
