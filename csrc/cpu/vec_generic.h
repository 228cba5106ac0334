// Portable "vector" of 8 floats as a plain array: the compiler vectorizes the
// element loops for whatever baseline the build targets (SSE2, NEON, ...).
#pragma once

#include "../math/common.h"
#include "dtypes.h"

namespace fusedopt {
namespace cpu {
inline namespace FO_ISA_NS {

struct Vec {
  static constexpr int N = 8;
  float x[N];
  Vec() = default;
  FO_INLINE Vec(float s) {
    for (int i = 0; i < N; ++i) x[i] = s;
  }
};

#define FO_GENERIC_BINOP(op)                                   \
  FO_INLINE Vec operator op(const Vec& a, const Vec& b) {      \
    Vec r;                                                     \
    for (int i = 0; i < Vec::N; ++i) r.x[i] = a.x[i] op b.x[i]; \
    return r;                                                  \
  }
FO_GENERIC_BINOP(+)
FO_GENERIC_BINOP(-)
FO_GENERIC_BINOP(*)
FO_GENERIC_BINOP(/)
#undef FO_GENERIC_BINOP

FO_INLINE Vec vsign(const Vec& a) {
  Vec r;
  for (int i = 0; i < Vec::N; ++i) r.x[i] = math::vsign(a.x[i]);
  return r;
}

FO_INLINE Vec vsqrt(const Vec& a) {
  Vec r;
  for (int i = 0; i < Vec::N; ++i) r.x[i] = math::vsqrt(a.x[i]);
  return r;
}

// a * b + c rounded once per lane (math::vfma: the FMA instruction where the
// baseline has one, the exact emulation elsewhere).
FO_INLINE Vec vfma(const Vec& a, const Vec& b, const Vec& c) {
  Vec r;
  for (int i = 0; i < Vec::N; ++i) r.x[i] = math::vfma(a.x[i], b.x[i], c.x[i]);
  return r;
}

FO_INLINE Vec vmax(const Vec& a, const Vec& b) {
  Vec r;
  for (int i = 0; i < Vec::N; ++i) r.x[i] = math::vmax(a.x[i], b.x[i]);
  return r;
}

FO_INLINE Vec vclamp(const Vec& x, const Vec& lo, const Vec& hi) {
  Vec r;
  for (int i = 0; i < Vec::N; ++i) r.x[i] = math::vclamp(x.x[i], lo.x[i], hi.x[i]);
  return r;
}

template <class T>
FO_INLINE Vec vload(const T* p) {
  Vec r;
  for (int i = 0; i < Vec::N; ++i) r.x[i] = to_float(p[i]);
  return r;
}

template <class T>
FO_INLINE void vstore(T* p, const Vec& v) {
  for (int i = 0; i < Vec::N; ++i) p[i] = from_float<T>(v.x[i]);
}

}  // namespace FO_ISA_NS
}  // namespace cpu
}  // namespace fusedopt
