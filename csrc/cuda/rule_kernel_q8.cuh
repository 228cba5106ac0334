// A rule's update on CUDA for 8-bit states (Quant8Codec: uint8 codes and a
// float32 absmax per block of 256, csrc/math/quant8.h), the CUDA twin of the
// CPU kernels' rule_blocks_q8 (cpu/kernels_impl.h), bit for bit: each thread
// owns one element; a thread block walks its chunk (whole quant blocks: a chunk
// is 256 of them) kThreads elements, two quant blocks, at a time. Each thread
// dequantizes its states (values[code] * absmax), runs the rule's unchanged
// fp32 update, stores the param (plain, master or stochastically rounded);
// then each quant block's new absmax comes from a max over its 256 threads
// (warp shuffles, then the 8 warps' maxima in shared memory) and each thread
// requantizes its states with it: x / absmax, and the code as quant8_code's
// exact count, with the maps staged in shared memory.
#pragma once

#include "../codecs.h"
#include "../math/quant8.h"
#include "kernel_common.cuh"
#include "rounded_store.cuh"
#include "tensor_setup.cuh"

namespace fusedopt {
namespace cuda {

constexpr int kQ8Block = Quant8Codec::kBlock;
static_assert(kQ8Block == math::kQuant8Block, "the codec's block is the format's");
static_assert(kChunk % kQ8Block == 0, "a chunk is whole quant blocks (a block's threads reduce its absmax)");
static_assert(kThreads % kQ8Block == 0 && kQ8Block % 32 == 0, "a thread block covers whole quant blocks of warps");

// Lists: 0 param, 1 grad, 2 .. 2 + kStates - 1 the codes, 2 + kStates the
// master or the rounding key (as rules.cu), then each state's absmax. With
// twice the state lists, a table holds 128 tensors to fit the parameter space.
constexpr int kQ8Tensors = 128;
template <class Rule>
constexpr int kQ8Lists = 3 + 2 * Rule::kStates;
template <class Rule, bool kStochastic>
using Q8Table = ChunkTable<kQ8Lists<Rule>, kStochastic, kQ8Tensors>;
static_assert(sizeof(ChunkTable<3 + 2 * kMaxStates, true, kQ8Tensors>) + 512 <= kMaxParamBytes,
              "8-bit chunk table exceeds the kernel parameter space");

// Bit k: state k uses the signed map (Rule::kStateSigned), as a constant the
// device code can use.
template <class Rule>
constexpr unsigned signed_states() {
  unsigned m = 0;
  for (int k = 0; k < Rule::kStates; ++k) m |= Rule::kStateSigned[k] ? 1u << k : 0u;
  return m;
}

// The 8-bit kernels' shared memory besides the rule's constants, declared once
// for every instantiation (inside the template, each of the ~70 would reserve
// its own: the emulation, tests/cuda_emu, counts all kernels' together, and a
// block runs one kernel only): the maps ([0] unsigned, [1] signed), staged
// because the threads of a warp index them at different places, which
// constant memory would serialize; each warp's maximum of each state.
__shared__ float q8_map_values[2][256];
__shared__ float q8_map_thresholds[2][255];
__shared__ float q8_warp_max[kMaxStates][kThreads / 32];

template <class Rule, class P, class G, int kActive, bool kMaster, bool kStochastic>
__global__ void __launch_bounds__(kThreads) rule_kernel_q8(const Q8Table<Rule, kStochastic> table,
                                                           const typename Rule::Hyper hyper,
                                                           const double* hyper_ptr, const StepControl ctl) {
  constexpr int kS = Rule::kStates;
  constexpr unsigned kSigned = signed_states<Rule>();
  constexpr int kWarps = kThreads / 32;
  constexpr int kWarpsPerQ8 = kQ8Block / 32;
  if (skip_step(ctl.found_inf)) return;
  const ChunkSpan s = chunk_span(table);
  __shared__ typename Rule::Consts shared_c;
  __shared__ math::GradFactors shared_f;
  float(&map_values)[2][256] = q8_map_values;
  float(&map_thresholds)[2][255] = q8_map_thresholds;
  float(&warp_max)[kMaxStates][kWarps] = q8_warp_max;
  setup_tensor<Rule, kStochastic>(table, s, hyper, hyper_ptr, ctl, shared_c, shared_f);
  for (int j = threadIdx.x; j < 256; j += blockDim.x) {
    map_values[0][j] = math::quant8_values<false>()[j];
    map_values[1][j] = math::quant8_values<true>()[j];
    if (j < 255) {
      map_thresholds[0][j] = math::quant8_thresholds<false>()[j];
      map_thresholds[1][j] = math::quant8_thresholds<true>()[j];
    }
  }
  __syncthreads();
  const typename Rule::Consts c = shared_c;
  const math::GradFactors f = shared_f;
  RoundKey round_key{0, 0, 0};
  if (kStochastic) round_key = shared_key;

  P* p = static_cast<P*>(table.ptr[0][s.tensor]) + s.start;
  const G* g = static_cast<const G*>(table.ptr[1][s.tensor]) + s.start;
  uint8_t* q[kS];
  float* scale[kS];  // the chunk's first quant block's absmax
#pragma unroll
  for (int k = 0; k < kS; ++k) {
    q[k] = k < kActive ? static_cast<uint8_t*>(table.ptr[2 + k][s.tensor]) + s.start : nullptr;
    scale[k] = k < kActive ? static_cast<float*>(table.ptr[3 + kS + k][s.tensor]) + s.start / kQ8Block : nullptr;
  }
  float* w = kMaster ? static_cast<float*>(table.ptr[2 + kS][s.tensor]) + s.start : nullptr;
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int first_warp = (threadIdx.x / kQ8Block) * kWarpsPerQ8;  // of this thread's quant block

  // every thread runs every round (the barriers and shuffles need them all);
  // a thread past the chunk's end holds no element and adds +0 to the maxima
  for (int base = 0; base < s.n; base += kThreads) {
    const int i = base + threadIdx.x;
    const bool in = i < s.n;
    float se[kS];
#pragma unroll
    for (int k = 0; k < kS; ++k) se[k] = 0.0f;
    if (in) {
      float pv = kMaster ? w[i] : to_float(p[i]);
      const float gv = to_float(g[i]);
#pragma unroll
      for (int k = 0; k < kActive; ++k) {
        const float* values = map_values[(kSigned >> k) & 1u];
        se[k] = math::quant8_dequantize(q[k][i], scale[k][i / kQ8Block], values);
      }
      Rule::template update<kActive>(pv, math::grad_prep(gv, f), se, c);
      if constexpr (kStochastic) {
        const float one[kILP] = {pv};
        store_rounded_elems(p, i, one, false, round_key);
      } else {
        p[i] = from_float<P>(pv);
      }
      if (kMaster) w[i] = pv;
    }
    // each state's new absmax: |x| (+0 for both zeros), NaN as soon as one is
    // NaN (math::vmax keeps it), as quant8_absmax
#pragma unroll
    for (int k = 0; k < kActive; ++k) {
      float a = in ? fabsf(se[k]) : 0.0f;
#pragma unroll
      for (int d = 16; d > 0; d >>= 1) a = math::vmax(a, __shfl_xor_sync(0xffffffffu, a, d));
      if (lane == 0) warp_max[k][warp] = a;
    }
    __syncthreads();
#pragma unroll
    for (int k = 0; k < kActive; ++k) {
      float m = 0.0f;
#pragma unroll
      for (int v = 0; v < kWarpsPerQ8; ++v) m = math::vmax(m, warp_max[k][first_warp + v]);
      if (in) {
        const float* thresholds = map_thresholds[(kSigned >> k) & 1u];
        q[k][i] = math::quant8_code(math::quant8_normalize(se[k], m), thresholds);
        if (i % kQ8Block == 0) scale[k][i / kQ8Block] = m;
      }
    }
    __syncthreads();  // warp_max is written again in the next round
  }
}

}  // namespace cuda
}  // namespace fusedopt
