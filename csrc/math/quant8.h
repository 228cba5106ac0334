// 8-bit blockwise dynamic quantization (Dettmers et al. 2022), the storage of
// 8-bit optimizer states, written once for every backend. fusedopt/_quant8.py
// defines the maps and the format and is the plain-torch twin of this header:
// both compute the same bits (tests/test_quant8.py checks it).
//
// A block is up to 256 consecutive elements of the flattened state with one
// float32 scale, its absmax, and one uint8 code each; an element's value is
// values[code] * absmax. Quantizing, in float32 with IEEE round-to-nearest:
//   absmax = max |x| (NaN if any x is NaN); n = absmax > 0 ? x / absmax : 0;
//   code = #{k : thresholds[k] <= n} (0 for a NaN n).
// A division, not a product with 1 / absmax: |n| <= 1 exactly, and a block
// whose absmax is subnormal (1 / absmax overflows) still quantizes its zeros to
// the zero code.
// The thresholds sit just above the exact midpoints between neighbouring codes
// (on a negative midpoint that is a float32: at it), so the code is the nearest
// one and a tie goes to the code of smaller magnitude. No operation here may be
// contracted or approximated: CUDA uses the _rn intrinsics, which fast-math
// cannot change, and CPU builds use no FMA contraction (as for every rule).
//
// quant8_code() is the definition of the count; quant8_code_lookup() gives the
// same count in a few operations for the CPU kernels (about 5x faster scalar),
// and any other way (SIMD gathers of either) must give it too.
#pragma once

#include <cstdint>

#include "common.h"
#include "quant8_maps.h"

namespace fusedopt {
namespace math {

constexpr int kQuant8Block = 256;

}  // namespace math
}  // namespace fusedopt

FO_MATH_BEGIN

// The maps: signed for first moments (values in [-0.993, 1]), unsigned for
// second moments ([0, 1]). Host copies here; CUDA kernels get device copies
// below (better: stage them in shared memory and pass those pointers, since
// threads of a warp index the tables at different places).
static constexpr float kQuant8SignedValues[256] = {FO_QUANT8_SIGNED_VALUES};
static constexpr float kQuant8SignedThresholds[255] = {FO_QUANT8_SIGNED_THRESHOLDS};
static constexpr float kQuant8UnsignedValues[256] = {FO_QUANT8_UNSIGNED_VALUES};
static constexpr float kQuant8UnsignedThresholds[255] = {FO_QUANT8_UNSIGNED_THRESHOLDS};

#if defined(__CUDACC__)
static __constant__ float kQuant8SignedValuesDevice[256] = {FO_QUANT8_SIGNED_VALUES};
static __constant__ float kQuant8SignedThresholdsDevice[255] = {FO_QUANT8_SIGNED_THRESHOLDS};
static __constant__ float kQuant8UnsignedValuesDevice[256] = {FO_QUANT8_UNSIGNED_VALUES};
static __constant__ float kQuant8UnsignedThresholdsDevice[255] = {FO_QUANT8_UNSIGNED_THRESHOLDS};
#endif

template <bool kSigned>
FO_HD FO_INLINE const float* quant8_values() {
#if defined(__CUDA_ARCH__)
  return kSigned ? kQuant8SignedValuesDevice : kQuant8UnsignedValuesDevice;
#else
  return kSigned ? kQuant8SignedValues : kQuant8UnsignedValues;
#endif
}

template <bool kSigned>
FO_HD FO_INLINE const float* quant8_thresholds() {
#if defined(__CUDA_ARCH__)
  return kSigned ? kQuant8SignedThresholdsDevice : kQuant8UnsignedThresholdsDevice;
#else
  return kSigned ? kQuant8SignedThresholds : kQuant8UnsignedThresholds;
#endif
}

// x / absmax in [-1, 1], or 0 where absmax is zero (x is then zero too) or NaN
// (the block dequantizes to NaN whatever its codes)
FO_HD FO_INLINE float quant8_normalize(float x, float absmax) {
#if defined(__CUDA_ARCH__)
  return absmax > 0.0f ? __fdiv_rn(x, absmax) : 0.0f;
#else
  return absmax > 0.0f ? x / absmax : 0.0f;
#endif
}

FO_HD FO_INLINE float quant8_mul(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}

// The number of thresholds <= n, by a branchless binary search: 255 = 2^8 - 1
// sorted thresholds, eight halvings. A NaN n fails every comparison: code 0.
FO_HD FO_INLINE uint8_t quant8_code(float n, const float* thresholds) {
  int idx = 0;
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
  for (int half = 128; half > 0; half >>= 1) idx += thresholds[idx + half - 1] <= n ? half : 0;
  return static_cast<uint8_t>(idx);
}

// The same count without the search's eight dependent loads, for CPU kernels:
// the floats' order is the order of their key (the bits, negatives' inverted),
// and the top bits of the key pick a bucket holding at most kQuant8PerBucket
// thresholds, whose first code is tabulated; the count is that code plus a
// comparison with each of the bucket's thresholds. Equal to quant8_code() for
// every float (NaN included: 0), which tests/native/quant8_check.cpp checks at
// every point where either can change (each threshold and bucket edge).
constexpr int kQuant8PerBucket = 2;

FO_HD FO_INLINE uint32_t quant8_key(float x) {
#if defined(__CUDA_ARCH__)
  const uint32_t u = __float_as_uint(x);
#else
  uint32_t u;
  std::memcpy(&u, &x, sizeof u);
#endif
  return (u >> 31) ? ~u : (u | 0x80000000u);
}

template <bool kSigned>
struct Quant8Lookup {
  // bucket = key >> kShift (clamped to the range holding thresholds); chosen
  // as the widest buckets that hold at most kQuant8PerBucket thresholds
  static constexpr int kShift = kSigned ? 18 : 17;
  static constexpr int kMaxBuckets = kSigned ? 8192 : 2048;  // 8128 and 1449 used
  uint32_t first_bucket = 0;
  int buckets = 0;
  uint8_t first_code[kMaxBuckets] = {};  // the thresholds below each bucket
  float thresholds[255 + kQuant8PerBucket] = {};  // padded with +inf
  bool valid = false;  // every bucket holds at most kQuant8PerBucket thresholds
};

// Fills the lookup of a map from its thresholds (once per process, host side).
template <bool kSigned>
inline void quant8_build_lookup(Quant8Lookup<kSigned>& l) {
  constexpr int kShift = Quant8Lookup<kSigned>::kShift;
  const float* t = quant8_thresholds<kSigned>();
  l.first_bucket = quant8_key(t[0]) >> kShift;
  const uint32_t last = quant8_key(t[254]) >> kShift;
  l.buckets = static_cast<int>(last - l.first_bucket + 1);
  l.valid = l.buckets <= Quant8Lookup<kSigned>::kMaxBuckets;
  if (!l.valid) return;
  for (int k = 0; k < 255; ++k) l.thresholds[k] = t[k];
  for (int k = 255; k < 255 + kQuant8PerBucket; ++k) l.thresholds[k] = __builtin_inff();
  int k = 0;
  for (int b = 0; b < l.buckets; ++b) {
    const uint32_t start = (l.first_bucket + b) << kShift;
    while (k < 255 && quant8_key(t[k]) < start) ++k;
    l.first_code[b] = static_cast<uint8_t>(k);
    int inside = 0;
    while (k + inside < 255 && (quant8_key(t[k + inside]) >> kShift) == l.first_bucket + b) ++inside;
    if (inside > kQuant8PerBucket) l.valid = false;
  }
}

template <bool kSigned>
FO_INLINE uint8_t quant8_code_lookup(float n, const Quant8Lookup<kSigned>& l) {
  if (n != n) return 0;
  const int64_t b = static_cast<int64_t>(quant8_key(n) >> Quant8Lookup<kSigned>::kShift) - l.first_bucket;
  const int bucket = b < 0 ? 0 : (b >= l.buckets ? l.buckets - 1 : static_cast<int>(b));
  int code = l.first_code[bucket];
  const float* t = l.thresholds + code;
  for (int j = 0; j < kQuant8PerBucket; ++j) code += t[j] <= n ? 1 : 0;
  return static_cast<uint8_t>(code);
}

// max |x| over x[0..count), NaN as soon as one element is NaN (vmax keeps it)
FO_HD FO_INLINE float quant8_absmax(const float* x, int count) {
  float m = 0.0f;
  for (int i = 0; i < count; ++i) m = vmax(m, fabsf(x[i]));
  return m;
}

// One block (count <= kQuant8Block elements): codes and the block's absmax.
template <bool kSigned>
FO_HD inline float quant8_quantize_block(const float* x, int count, uint8_t* codes) {
  const float absmax = quant8_absmax(x, count);
  const float* thresholds = quant8_thresholds<kSigned>();
  for (int i = 0; i < count; ++i) codes[i] = quant8_code(quant8_normalize(x[i], absmax), thresholds);
  return absmax;
}

FO_HD FO_INLINE float quant8_dequantize(uint8_t code, float absmax, const float* values) {
  return quant8_mul(values[code], absmax);
}

template <bool kSigned>
FO_HD inline void quant8_dequantize_block(const uint8_t* codes, int count, float absmax, float* out) {
  const float* values = quant8_values<kSigned>();
  for (int i = 0; i < count; ++i) out[i] = quant8_dequantize(codes[i], absmax, values);
}

FO_MATH_END
