// The CPU vector loops. Included once per instruction set, right after that
// set's Vec header (vec_generic.h, vec_avx2.h or vec_avx512.h), by a translation
// unit that defines FO_ISA_NS and FO_KERNEL_TABLE (the table's accessor name).
//
// Every loop runs whole vectors, then finishes the tail on zero-padded stack
// copies through the same vector code, so a tensor's last elements see exactly
// the arithmetic its first ones do.
#pragma once

#include <cstring>
#include <type_traits>

#include "kernels.h"

namespace fusedopt {
namespace cpu {
inline namespace FO_ISA_NS {
namespace {

// Zero-padded copy of up to Vec::N elements of one stream, written back on flush.
template <class T>
struct Tail {
  T buf[Vec::N];
  T* dst;
  int64_t n;
  Tail(T* src, int64_t count) : dst(src), n(count) {
    std::memset(buf, 0, sizeof(buf));
    if (src) std::memcpy(buf, src, sizeof(T) * count);
  }
  T* ptr() { return dst ? buf : nullptr; }
  void flush() {
    if (dst) std::memcpy(dst, buf, sizeof(T) * n);
  }
};

template <class T>
FO_INLINE T* at(void* base, int64_t i) {
  return base ? static_cast<T*>(base) + i : nullptr;
}

template <class T>
FO_INLINE const T* at(const void* base, int64_t i) {
  return base ? static_cast<const T*>(base) + i : nullptr;
}

// ---------------------------------------------------------------- Adam

template <class P, class G, class S, bool kAmsgrad, bool kMaster>
FO_INLINE void adam_vec(
    P* p,
    const G* g,
    S* m,
    S* v,
    S* vm,
    float* w,
    const math::AdamConsts& c,
    const math::GradFactors& f) {
  Vec pv;
  if constexpr (kMaster) {
    pv = vload(w);
  } else {
    pv = vload(p);
  }
  const Vec gv = math::grad_prep(vload(g), f);
  Vec mv = vload(m);
  Vec vv = vload(v);
  Vec vmv(0.0f);
  if constexpr (kAmsgrad) vmv = vload(vm);
  math::adam_update<kAmsgrad>(pv, gv, mv, vv, vmv, c);
  vstore(p, pv);
  if constexpr (kMaster) vstore(w, pv);
  vstore(m, mv);
  vstore(v, vv);
  if constexpr (kAmsgrad) vstore(vm, vmv);
}

template <class P, class G, class S, bool kAmsgrad, bool kMaster>
void adam_range(
    const AdamTensor& t,
    const math::AdamConsts& c,
    const math::GradFactors& f,
    int64_t lo,
    int64_t hi) {
  P* p = at<P>(t.param, lo);
  const G* g = at<G>(t.grad, lo);
  S* m = at<S>(t.exp_avg, lo);
  S* v = at<S>(t.exp_avg_sq, lo);
  S* vm = kAmsgrad ? at<S>(t.max_exp_avg_sq, lo) : nullptr;
  float* w = kMaster ? at<float>(static_cast<void*>(t.master), lo) : nullptr;
  const int64_t n = hi - lo;
  int64_t i = 0;
  for (; i + Vec::N <= n; i += Vec::N) {
    adam_vec<P, G, S, kAmsgrad, kMaster>(
        p + i, g + i, m + i, v + i, vm ? vm + i : nullptr, w ? w + i : nullptr, c, f);
  }
  if (i < n) {
    const int64_t r = n - i;
    Tail<P> tp(p + i, r);
    Tail<G> tg(const_cast<G*>(g + i), r);
    Tail<S> tm(m + i, r), tv(v + i, r), tvm(vm ? vm + i : nullptr, r);
    Tail<float> tw(w ? w + i : nullptr, r);
    adam_vec<P, G, S, kAmsgrad, kMaster>(tp.ptr(), tg.ptr(), tm.ptr(), tv.ptr(), tvm.ptr(), tw.ptr(), c, f);
    tp.flush();
    tm.flush();
    tv.flush();
    tvm.flush();
    tw.flush();
  }
}

template <class P, class G, class S>
AdamRangeFn adam_pick(bool amsgrad, bool master) {
  if constexpr (std::is_same<P, float>::value) {
    if (master) return nullptr;  // an fp32 param is its own master
    return amsgrad ? &adam_range<P, G, S, true, false> : &adam_range<P, G, S, false, false>;
  } else {
    if (amsgrad) return master ? &adam_range<P, G, S, true, true> : &adam_range<P, G, S, true, false>;
    return master ? &adam_range<P, G, S, false, true> : &adam_range<P, G, S, false, false>;
  }
}

// ---------------------------------------------------------------- SGD

template <class P, class G, class S, bool kMomentum, bool kMaster>
FO_INLINE void sgd_vec(
    P* p,
    const G* g,
    S* b,
    float* w,
    bool first,
    const math::SgdConsts& c,
    const math::GradFactors& f) {
  Vec pv;
  if constexpr (kMaster) {
    pv = vload(w);
  } else {
    pv = vload(p);
  }
  const Vec gv = math::grad_prep(vload(g), f);
  Vec bv(0.0f);
  if constexpr (kMomentum) {
    if (!first) bv = vload(b);
  }
  math::sgd_update(pv, gv, bv, first, c);
  vstore(p, pv);
  if constexpr (kMaster) vstore(w, pv);
  if constexpr (kMomentum) vstore(b, bv);
}

template <class P, class G, class S, bool kMomentum, bool kMaster>
void sgd_range(
    const SgdTensor& t,
    const math::SgdConsts& c,
    const math::GradFactors& f,
    int64_t lo,
    int64_t hi) {
  P* p = at<P>(t.param, lo);
  const G* g = at<G>(t.grad, lo);
  S* b = kMomentum ? at<S>(t.momentum_buffer, lo) : nullptr;
  float* w = kMaster ? at<float>(static_cast<void*>(t.master), lo) : nullptr;
  const int64_t n = hi - lo;
  int64_t i = 0;
  for (; i + Vec::N <= n; i += Vec::N) {
    sgd_vec<P, G, S, kMomentum, kMaster>(p + i, g + i, b ? b + i : nullptr, w ? w + i : nullptr, t.first, c, f);
  }
  if (i < n) {
    const int64_t r = n - i;
    Tail<P> tp(p + i, r);
    Tail<G> tg(const_cast<G*>(g + i), r);
    Tail<S> tb(b ? b + i : nullptr, r);
    Tail<float> tw(w ? w + i : nullptr, r);
    sgd_vec<P, G, S, kMomentum, kMaster>(tp.ptr(), tg.ptr(), tb.ptr(), tw.ptr(), t.first, c, f);
    tp.flush();
    tb.flush();
    tw.flush();
  }
}

template <class P, class G, class S>
SgdRangeFn sgd_pick(bool momentum, bool master) {
  if constexpr (std::is_same<P, float>::value) {
    if (master) return nullptr;
    return momentum ? &sgd_range<P, G, S, true, false> : &sgd_range<P, G, S, false, false>;
  } else {
    if (momentum) return master ? &sgd_range<P, G, S, true, true> : &sgd_range<P, G, S, true, false>;
    return master ? &sgd_range<P, G, S, false, true> : &sgd_range<P, G, S, false, false>;
  }
}

// ---------------------------------------------------------------- dtype dispatch

template <class Fn, class P, class G, template <class, class, class> class Pick, class... A>
Fn pick_state(DType s, A... a) {
  switch (s) {
    case DType::F32:
      return Pick<P, G, float>::get(a...);
    case DType::BF16:
      return Pick<P, G, bf16_t>::get(a...);
    case DType::F16:
      return Pick<P, G, fp16_t>::get(a...);
  }
  return nullptr;
}

template <class P, class G, class S>
struct AdamPick {
  static AdamRangeFn get(bool amsgrad, bool master) { return adam_pick<P, G, S>(amsgrad, master); }
};

template <class P, class G, class S>
struct SgdPick {
  static SgdRangeFn get(bool momentum, bool master) { return sgd_pick<P, G, S>(momentum, master); }
};

// Grads come in the param's dtype, or in fp32 for a low-precision param.
template <class Fn, template <class, class, class> class Pick, class... A>
Fn pick(DType p, DType g, DType s, A... a) {
  switch (p) {
    case DType::F32:
      return g == DType::F32 ? pick_state<Fn, float, float, Pick>(s, a...) : nullptr;
    case DType::BF16:
      if (g == DType::BF16) return pick_state<Fn, bf16_t, bf16_t, Pick>(s, a...);
      return g == DType::F32 ? pick_state<Fn, bf16_t, float, Pick>(s, a...) : nullptr;
    case DType::F16:
      if (g == DType::F16) return pick_state<Fn, fp16_t, fp16_t, Pick>(s, a...);
      return g == DType::F32 ? pick_state<Fn, fp16_t, float, Pick>(s, a...) : nullptr;
  }
  return nullptr;
}

AdamRangeFn select_adam(DType p, DType g, DType s, bool amsgrad, bool master) {
  return pick<AdamRangeFn, AdamPick>(p, g, s, amsgrad, master);
}

SgdRangeFn select_sgd(DType p, DType g, DType s, bool momentum, bool master) {
  return pick<SgdRangeFn, SgdPick>(p, g, s, momentum, master);
}

// ---------------------------------------------------------------- AMP / norms

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
  }
  return nullptr;
}

}  // namespace
}  // namespace FO_ISA_NS

const KernelTable& FO_KERNEL_TABLE() {
  static const KernelTable table{
      FO_STRINGIFY(FO_ISA_NS), &select_adam, &select_sgd, &select_unscale, &select_sumsq, &select_clamp};
  return table;
}

}  // namespace cpu
}  // namespace fusedopt
