// The CPU vector loops of the update rules (plain and 8-bit states, the
// stochastically rounded param store) and the kernel table; the AMP and
// clipping loops are in amp_loops_impl.h. Included once per instruction set, right after that
// set's Vec header (vec_generic.h, vec_avx2.h or vec_avx512.h), by a translation
// unit that defines FO_ISA_NS and FO_KERNEL_TABLE (the table's accessor name).
//
// Every loop runs whole vectors, then finishes the tail on zero-padded stack
// copies through the same vector code, so a tensor's last elements see exactly
// the arithmetic its first ones do.
#pragma once

#include <cstring>
#include <type_traits>

#include "../codecs.h"
#include "../math/quant8.h"
#include "../math/stochastic.h"
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

// ---------------------------------------------------------------- update rules

// Where stochastic rounding's bits come from for one vector: the param's seed,
// the applied step and the global index of the vector's first element.
struct RoundKey {
  uint64_t seed;
  uint64_t step;
  uint64_t index;
};

// The vector's new values x stored into a bf16/fp16 param with stochastic
// rounding (csrc/math/stochastic.h): one Philox call per four elements of the
// same group of the global index, exactly the reference's words.
template <class P>
FO_INLINE void store_rounded(P* p, const Vec& v, const RoundKey& k) {
  float x[Vec::N];
  vstore(x, v);
  uint32_t w[4];
  uint64_t group = ~uint64_t{0};
  for (int j = 0; j < Vec::N; ++j) {
    const uint64_t i = k.index + static_cast<uint64_t>(j);
    if ((i >> 2) != group) {
      group = i >> 2;
      math::sr_random_words(k.seed, k.step, group, w);
    }
    if constexpr (std::is_same<P, bf16_t>::value) {
      p[j].x = math::sr_bf16_bits(x[j], w[i & 3]);
    } else {
      static_assert(std::is_same<P, fp16_t>::value, "stochastic rounding stores bf16 or fp16 params");
      p[j].x = math::sr_fp16_bits(x[j], w[i & 3]);
    }
  }
}

// One vector of elements: the rule's update over Vec::N of them. States go
// through their codec S (csrc/codecs.h); the plain codecs' unit is the vector.
template <class Rule, class P, class G, class S, int kActive, bool kMaster, bool kStochastic>
FO_INLINE void rule_vec(P* p, const G* g, typename S::Storage* const (&st)[kMaxStates], float* w, const typename Rule::Consts& c,
                        const math::GradFactors& f, const RoundKey& key) {
  static_assert(S::kBlock == 1, "blockwise codecs walk whole blocks: a loop of their own (csrc/codecs.h)");
  using T = typename S::Storage;
  Vec pv;
  if constexpr (kMaster) {
    pv = vload(w);
  } else {
    pv = vload(p);
  }
  const Vec gv = math::grad_prep(vload(g), f);
  Vec sv[Rule::kStates];
  for (int k = 0; k < kActive; ++k) sv[k] = vload(static_cast<const T*>(st[k]));
  for (int k = kActive; k < Rule::kStates; ++k) sv[k] = Vec(0.0f);
  Rule::template update<kActive>(pv, gv, sv, c);
  if constexpr (kStochastic) {
    store_rounded(p, pv, key);
  } else {
    vstore(p, pv);
  }
  if constexpr (kMaster) vstore(w, pv);
  for (int k = 0; k < kActive; ++k) vstore(st[k], sv[k]);
}

template <class Rule, class P, class G, class S, int kActive, bool kMaster, bool kStochastic>
void rule_range(const RuleTensor& t, const typename Rule::Consts& c, const math::GradFactors& f, int64_t lo,
                int64_t hi) {
  using T = typename S::Storage;
  P* p = at<P>(t.param, lo);
  const G* g = at<G>(t.grad, lo);
  T* st[kMaxStates] = {};
  for (int k = 0; k < kActive; ++k) st[k] = at<T>(t.states[k], lo);
  float* w = kMaster ? at<float>(static_cast<void*>(t.master), lo) : nullptr;
  const int64_t n = hi - lo;
  RoundKey key{0, 0, 0};
  if constexpr (kStochastic) {
    key = {static_cast<uint64_t>(t.key[0]), static_cast<uint64_t>(t.key[1]) + 1, static_cast<uint64_t>(t.offset + lo)};
  }
  auto at_elem = [&key](int64_t i) { return RoundKey{key.seed, key.step, key.index + static_cast<uint64_t>(i)}; };
  int64_t i = 0;
  T* sp[kMaxStates] = {};
  for (; i + Vec::N <= n; i += Vec::N) {
    for (int k = 0; k < kActive; ++k) sp[k] = st[k] + i;
    rule_vec<Rule, P, G, S, kActive, kMaster, kStochastic>(p + i, g + i, sp, w ? w + i : nullptr, c, f, at_elem(i));
  }
  if (i < n) {
    const int64_t r = n - i;
    Tail<P> tp(p + i, r);
    Tail<G> tg(const_cast<G*>(g + i), r);
    Tail<T> ts[kMaxStates] = {Tail<T>(kActive > 0 ? st[0] + i : nullptr, r),
                              Tail<T>(kActive > 1 ? st[1] + i : nullptr, r),
                              Tail<T>(kActive > 2 ? st[2] + i : nullptr, r),
                              Tail<T>(kActive > 3 ? st[3] + i : nullptr, r)};
    Tail<float> tw(w ? w + i : nullptr, r);
    for (int k = 0; k < kActive; ++k) sp[k] = ts[k].ptr();
    rule_vec<Rule, P, G, S, kActive, kMaster, kStochastic>(tp.ptr(), tg.ptr(), sp, tw.ptr(), c, f, at_elem(i));
    tp.flush();
    for (int k = 0; k < kActive; ++k) ts[k].flush();
    tw.flush();
  }
}

// ---------------------------------------------------------------- 8-bit states

static_assert(Quant8Codec::kBlock == math::kQuant8Block, "the codec's block is the format's");

// The bucket lookup of a map (quant8.h), built once per process.
template <bool kSigned>
const math::Quant8Lookup<kSigned>& quant8_lookup() {
  static const math::Quant8Lookup<kSigned> table = [] {
    math::Quant8Lookup<kSigned> l;
    math::quant8_build_lookup(l);
    return l;
  }();
  return table;
}

#if defined(__AVX2__)
// quant8_code_lookup for 8 values at once, with gathers: the same key, bucket
// clamp, first code and comparisons with the bucket's thresholds, lane by lane.
template <bool kSigned>
FO_INLINE void quant8_codes8(const float* n, uint8_t* codes, const math::Quant8Lookup<kSigned>& l) {
  static_assert(math::kQuant8PerBucket == 2, "two comparisons per bucket below");
  const __m256 x = _mm256_loadu_ps(n);
  const __m256i u = _mm256_castps_si256(x);
  // negatives' bits inverted, positives' sign bit set: the floats' order
  const __m256i key = _mm256_xor_si256(u, _mm256_or_si256(_mm256_srai_epi32(u, 31), _mm256_set1_epi32(INT32_MIN)));
  __m256i b = _mm256_sub_epi32(_mm256_srli_epi32(key, math::Quant8Lookup<kSigned>::kShift),
                               _mm256_set1_epi32(static_cast<int32_t>(l.first_bucket)));
  b = _mm256_min_epi32(_mm256_max_epi32(b, _mm256_setzero_si256()), _mm256_set1_epi32(l.buckets - 1));
  // a byte table: gather 4 bytes at the bucket (inside the struct: the table
  // has room past its last used bucket) and keep the first
  __m256i code = _mm256_and_si256(
      _mm256_i32gather_epi32(reinterpret_cast<const int*>(l.first_code), b, 1), _mm256_set1_epi32(0xff));
  const __m256 t0 = _mm256_i32gather_ps(l.thresholds, code, 4);
  const __m256 t1 = _mm256_i32gather_ps(l.thresholds + 1, code, 4);
  // a true comparison is -1 (false for NaN)
  code = _mm256_sub_epi32(code, _mm256_castps_si256(_mm256_cmp_ps(t0, x, _CMP_LE_OQ)));
  code = _mm256_sub_epi32(code, _mm256_castps_si256(_mm256_cmp_ps(t1, x, _CMP_LE_OQ)));
  code = _mm256_and_si256(code, _mm256_castps_si256(_mm256_cmp_ps(x, x, _CMP_ORD_Q)));  // NaN: 0
  alignas(32) int32_t out[8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(out), code);
  for (int k = 0; k < 8; ++k) codes[k] = static_cast<uint8_t>(out[k]);
}
#endif

// One block's values from its codes: values[code] * absmax, as
// quant8_dequantize_block (the same float product), 8 at a time with a gather.
template <bool kSigned>
FO_INLINE void quant8_load(const uint8_t* q, int count, float absmax, float* out) {
  const float* values = math::quant8_values<kSigned>();
  int i = 0;
#if defined(__AVX2__)
  const __m256 scale = _mm256_set1_ps(absmax);
  for (; i + 8 <= count; i += 8) {
    const __m256i idx = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(q + i)));
    _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_i32gather_ps(values, idx, 4), scale));
  }
#endif
  for (; i < count; ++i) out[i] = math::quant8_dequantize(q[i], absmax, values);
}

// Codes and the new absmax of one block's values: max |x| and x / absmax in
// whole vectors (the same IEEE operations as quant8_absmax and
// quant8_normalize, so the same bits), then each code by the lookup.
template <bool kSigned>
void quant8_store(const float* x, int count, uint8_t* codes, float* absmax) {
  constexpr int B = Quant8Codec::kBlock;
  // |v| as max(v, 0 - v): +0 for both zeros, and a NaN stays (vmax keeps a
  // NaN in either operand)
  const Vec zero(0.0f);
  Vec acc(0.0f);
  int i = 0;
  for (; i + Vec::N <= count; i += Vec::N) {
    const Vec v = vload(x + i);
    acc = vmax(acc, vmax(v, zero - v));
  }
  float lanes[Vec::N];
  vstore(lanes, acc);
  float m = 0.0f;
  for (int k = 0; k < Vec::N; ++k) m = math::vmax(m, lanes[k]);
  for (; i < count; ++i) m = math::vmax(m, fabsf(x[i]));
  alignas(64) float n[B];
  if (m > 0.0f) {
    const Vec d(m);
    i = 0;
    for (; i + Vec::N <= count; i += Vec::N) vstore(n + i, vload(x + i) / d);
    for (; i < count; ++i) n[i] = x[i] / m;
  } else {
    for (i = 0; i < count; ++i) n[i] = 0.0f;  // a zero block, or NaN: dequantizes to NaN whatever its codes
  }
  const math::Quant8Lookup<kSigned>& l = quant8_lookup<kSigned>();
  if (l.valid) {
    i = 0;
#if defined(__AVX2__)
    for (; i + 8 <= count; i += 8) quant8_codes8(n + i, codes + i, l);
#endif
    for (; i < count; ++i) codes[i] = math::quant8_code_lookup(n[i], l);
  } else {
    const float* t = math::quant8_thresholds<kSigned>();
    for (i = 0; i < count; ++i) codes[i] = math::quant8_code(n[i], t);
  }
  *absmax = m;
}

// Elements [lo, hi) of a tensor with 8-bit states, block by block (lo is a
// block start: the shares cut at blocks): each active state's block is
// dequantized into a float buffer, the plain-float loop (rule_range with fp32
// states, the very arithmetic of fp32 states) updates the block, and each
// state's block is requantized with its new absmax. One read and one write of
// each code byte and scale.
template <class Rule, class P, class G, int kActive, bool kMaster, bool kStochastic>
void rule_blocks_q8(const RuleTensor& t, const typename Rule::Consts& c, const math::GradFactors& f, int64_t lo,
                    int64_t hi) {
  constexpr int B = Quant8Codec::kBlock;
  alignas(64) float buf[kActive][B];
  for (int64_t start = lo; start < hi; start += B) {
    const int count = static_cast<int>(hi - start < B ? hi - start : B);
    const int64_t block = start / B;
    RuleTensor u{};
    u.param = at<P>(t.param, start);
    u.grad = at<G>(t.grad, start);
    u.master = kMaster ? t.master + start : nullptr;
    u.key = t.key;
    u.offset = t.offset + start;
    for (int k = 0; k < kActive; ++k) {
      const uint8_t* q = static_cast<const uint8_t*>(t.states[k]) + start;
      if (Rule::kStateSigned[k]) {
        quant8_load<true>(q, count, t.absmax[k][block], buf[k]);
      } else {
        quant8_load<false>(q, count, t.absmax[k][block], buf[k]);
      }
      u.states[k] = buf[k];
    }
    rule_range<Rule, P, G, PlainCodec<float>, kActive, kMaster, kStochastic>(u, c, f, 0, count);
    for (int k = 0; k < kActive; ++k) {
      uint8_t* q = static_cast<uint8_t*>(t.states[k]) + start;
      if (Rule::kStateSigned[k]) {
        quant8_store<true>(buf[k], count, q, t.absmax[k] + block);
      } else {
        quant8_store<false>(buf[k], count, q, t.absmax[k] + block);
      }
    }
  }
}

// The loop of a codec: whole vectors for the plain codecs, whole blocks for a
// blockwise one (which needs at least one state list).
template <class Rule, class P, class G, class S, int kActive, bool kMaster, bool kStochastic>
RangeFn<Rule> range_fn() {
  if constexpr (S::kBlock == 1) {
    return &rule_range<Rule, P, G, S, kActive, kMaster, kStochastic>;
  } else if constexpr (kActive > 0) {
    return &rule_blocks_q8<Rule, P, G, kActive, kMaster, kStochastic>;
  } else {
    return nullptr;
  }
}

// The kernel for `active` state lists, among kMinStates..kStates.
template <class Rule, class P, class G, class S, bool kMaster, bool kStochastic, int kActive = Rule::kMinStates>
RangeFn<Rule> pick_active(int active) {
  if (active == kActive) return range_fn<Rule, P, G, S, kActive, kMaster, kStochastic>();
  if constexpr (kActive < Rule::kStates) {
    return pick_active<Rule, P, G, S, kMaster, kStochastic, kActive + 1>(active);
  } else {
    return nullptr;
  }
}

template <class Rule, class P, class G, class S>
RangeFn<Rule> pick_master(int active, bool master, bool stochastic) {
  if constexpr (std::is_same<P, float>::value) {
    // an fp32 param is its own master, and needs no rounding
    if (master || stochastic) return nullptr;
    return pick_active<Rule, P, G, S, false, false>(active);
  } else {
    if (stochastic) return master ? nullptr : pick_active<Rule, P, G, S, false, true>(active);
    return master ? pick_active<Rule, P, G, S, true, false>(active) : pick_active<Rule, P, G, S, false, false>(active);
  }
}

// ---------------------------------------------------------------- dtype dispatch

template <class Rule, class P, class G>
RangeFn<Rule> pick_state(DType s, int active, bool master, bool stochastic) {
  switch (s) {
    case DType::F32:
      return pick_master<Rule, P, G, PlainCodec<float>>(active, master, stochastic);
    case DType::BF16:
      return pick_master<Rule, P, G, PlainCodec<bf16_t>>(active, master, stochastic);
    case DType::F16:
      return pick_master<Rule, P, G, PlainCodec<fp16_t>>(active, master, stochastic);
    case DType::U8:
      return pick_master<Rule, P, G, Quant8Codec>(active, master, stochastic);
  }
  return nullptr;
}

// Grads come in the param's dtype, or in fp32 for a low-precision param.
template <class Rule>
RangeFn<Rule> select_rule(DType p, DType g, DType s, int active, bool master, bool stochastic) {
  switch (p) {
    case DType::F32:
      return g == DType::F32 ? pick_state<Rule, float, float>(s, active, master, stochastic) : nullptr;
    case DType::BF16:
      if (g == DType::BF16) return pick_state<Rule, bf16_t, bf16_t>(s, active, master, stochastic);
      return g == DType::F32 ? pick_state<Rule, bf16_t, float>(s, active, master, stochastic) : nullptr;
    case DType::F16:
      if (g == DType::F16) return pick_state<Rule, fp16_t, fp16_t>(s, active, master, stochastic);
      return g == DType::F32 ? pick_state<Rule, fp16_t, float>(s, active, master, stochastic) : nullptr;
    case DType::U8:
      break;  // not a param dtype
  }
  return nullptr;
}

}  // namespace
}  // namespace FO_ISA_NS
}  // namespace cpu
}  // namespace fusedopt

#include "amp_loops_impl.h"

namespace fusedopt {
namespace cpu {

const KernelTable& FO_KERNEL_TABLE() {
#define FO_RULE_SELECT(name, Rule) &select_rule<Rule>,
  static const KernelTable table{FO_STRINGIFY(FO_ISA_NS), FUSEDOPT_RULES(FO_RULE_SELECT) &select_unscale,
                                 &select_sumsq, &select_clamp};
#undef FO_RULE_SELECT
  return table;
}

}  // namespace cpu
}  // namespace fusedopt
