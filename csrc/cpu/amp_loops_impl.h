// The CPU loops of the AMP and clipping passes (unscale and inf check, the
// sum of squares, the value clamp), over grads of each dtype. Included once
// per instruction set by kernels_impl.h, after its Vec header and the Tail
// helper, inside the same namespaces (the kernel table is there).
#pragma once

#include <cstring>

namespace fusedopt {
namespace cpu {
inline namespace FO_ISA_NS {
namespace {

template <class G>
bool unscale_range(void* grad, float inv_scale, int64_t lo, int64_t hi) {
  G* g = static_cast<G*>(grad) + lo;
  const int64_t n = hi - lo;
  // x - x is 0 for finite x and NaN otherwise; the sum stays 0 iff all are finite.
  Vec bad(0.0f);
  const Vec inv(inv_scale);
  const bool scale = inv_scale != 1.0f;
  auto body = [&](G* q) {
    const Vec x = vload(q);
    bad = bad + (x - x);
    if (scale) vstore(q, x * inv);
  };
  int64_t i = 0;
  for (; i + Vec::N <= n; i += Vec::N) body(g + i);
  if (i < n) {
    Tail<G> t(g + i, n - i);
    body(t.ptr());
    if (scale) t.flush();
  }
  float lanes[Vec::N];
  vstore(lanes, bad);
  bool any = false;
  for (int k = 0; k < Vec::N; ++k) any |= lanes[k] != 0.0f;
  return any;
}

constexpr int kSumLanes = 16;
static_assert(kSumLanes % Vec::N == 0, "the sum's lanes must be whole vectors");

template <class G>
double sumsq_range(const void* grad, float inv_scale, float max_value, int64_t lo, int64_t hi, bool* nonfinite) {
  const G* g = static_cast<const G*>(grad) + lo;
  const int64_t n = hi - lo;
  double acc[kSumLanes] = {};
  float x[kSumLanes];
  const Vec inv(inv_scale), vlo(-max_value), vhi(max_value);
  // x - x is 0 for finite x and NaN otherwise: the sum stays 0 iff all are finite
  // (checked before clamping, which would turn an inf into max_value)
  Vec bad(0.0f);
  auto lanes = [&](const G* q) {
    for (int j = 0; j < kSumLanes; j += Vec::N) {
      const Vec raw = vload(q + j);
      bad = bad + (raw - raw);
      vstore(x + j, vclamp(raw * inv, vlo, vhi));
    }
    // a product of two floats is exact in double, so only the additions round
    for (int k = 0; k < kSumLanes; ++k) acc[k] += static_cast<double>(x[k]) * static_cast<double>(x[k]);
  };
  int64_t i = 0;
  for (; i + kSumLanes <= n; i += kSumLanes) lanes(g + i);
  if (i < n) {
    G pad[kSumLanes];
    std::memset(pad, 0, sizeof(pad));
    std::memcpy(pad, g + i, sizeof(G) * (n - i));
    lanes(pad);
  }
  for (int width = kSumLanes / 2; width >= 1; width /= 2) {
    for (int k = 0; k < width; ++k) acc[k] += acc[k + width];
  }
  float flags[Vec::N];
  vstore(flags, bad);
  for (int k = 0; k < Vec::N; ++k) {
    if (flags[k] != 0.0f) *nonfinite = true;
  }
  return acc[0];
}

template <class G>
void clamp_range(void* grad, float lo_value, float hi_value, int64_t lo, int64_t hi) {
  G* g = static_cast<G*>(grad) + lo;
  const int64_t n = hi - lo;
  const Vec vlo(lo_value), vhi(hi_value);
  int64_t i = 0;
  for (; i + Vec::N <= n; i += Vec::N) vstore(g + i, vclamp(vload(g + i), vlo, vhi));
  if (i < n) {
    Tail<G> t(g + i, n - i);
    vstore(t.ptr(), vclamp(vload(t.ptr()), vlo, vhi));
    t.flush();
  }
}

ClampRangeFn select_clamp(DType g) {
  switch (g) {
    case DType::F32:
      return &clamp_range<float>;
    case DType::BF16:
      return &clamp_range<bf16_t>;
    case DType::F16:
      return &clamp_range<fp16_t>;
    case DType::U8:
      break;  // not a grad dtype
  }
  return nullptr;
}

UnscaleRangeFn select_unscale(DType g) {
  switch (g) {
    case DType::F32:
      return &unscale_range<float>;
    case DType::BF16:
      return &unscale_range<bf16_t>;
    case DType::F16:
      return &unscale_range<fp16_t>;
    case DType::U8:
      break;  // not a grad dtype
  }
  return nullptr;
}

SumsqRangeFn select_sumsq(DType g) {
  switch (g) {
    case DType::F32:
      return &sumsq_range<float>;
    case DType::BF16:
      return &sumsq_range<bf16_t>;
    case DType::F16:
      return &sumsq_range<fp16_t>;
    case DType::U8:
      break;  // not a grad dtype
  }
  return nullptr;
}

}  // namespace
}  // namespace FO_ISA_NS
}  // namespace cpu
}  // namespace fusedopt
