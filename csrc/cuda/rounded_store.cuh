// The stochastically rounded store of a bf16/fp16 param on CUDA: the bits of
// csrc/math/stochastic.h for each element's global index, as the CPU kernels'
// store_rounded (cpu/kernels_impl.h) draws them: one Philox call per group of
// four neighbouring indices a thread stores.
#pragma once

#include <type_traits>

#include "../math/stochastic.h"
#include "multi_tensor_apply.cuh"

namespace fusedopt {
namespace cuda {

// Where the bits come from: the param's seed, the applied step this update is
// (the key's steps + 1) and the global index of the chunk's first element.
struct RoundKey {
  uint64_t seed;
  uint64_t step;
  uint64_t index;
};

// The key as a block's thread 0 read it, for the block (one declaration for
// every kernel instantiation: a block runs one kernel).
__shared__ RoundKey shared_key;

template <class P>
__device__ __forceinline__ uint16_t rounded_bits(float x, uint32_t r) {
  if constexpr (std::is_same<P, bf16_t>::value) {
    return math::sr_bf16_bits(x, r);
  } else {
    static_assert(std::is_same<P, fp16_t>::value, "stochastic rounding stores bf16 or fp16 params");
    return math::sr_fp16_bits(x, r);
  }
}

// Elements i.. of the chunk (a pack of kILP, or element i alone), as
// store_elems does, rounded with the words of their global indices.
template <class P>
__device__ __forceinline__ void store_rounded_elems(P* p, int i, const float (&in)[kILP], bool pack,
                                                    const RoundKey& k) {
  const int width = pack ? kILP : 1;
  Pack<P> pk;
  uint32_t w[4];
  uint64_t group = ~uint64_t{0};
#pragma unroll
  for (int e = 0; e < kILP; ++e) {
    if (e < width) {
      const uint64_t index = k.index + static_cast<uint64_t>(i + e);
      if ((index >> 2) != group) {
        group = index >> 2;
        math::sr_random_words(k.seed, k.step, group, w);
      }
      // the word by selects, not w[index & 3]: a runtime index would put w in
      // local memory (a stack frame in every rounding kernel)
      const uint32_t j = static_cast<uint32_t>(index & 3);
      const uint32_t r = j == 0 ? w[0] : j == 1 ? w[1] : j == 2 ? w[2] : w[3];
      pk.v[e].x = rounded_bits<P>(in[e], r);
    }
  }
  if (pack) {
    *reinterpret_cast<Pack<P>*>(p + i) = pk;
  } else {
    p[i] = pk.v[0];
  }
}

}  // namespace cuda
}  // namespace fusedopt
