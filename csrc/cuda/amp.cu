// grad_stats_ (one read of every grad: found_inf and the global sum of squares)
// and unscale_ (GradScaler.unscale_ for every float dtype) on CUDA.
#include "kernel_common.cuh"

namespace fusedopt {
namespace cuda {
namespace {

using GradTable = ChunkTable<1>;

constexpr int kWarps = kThreads / 32;

// Sum over the block in a fixed order: lanes by shuffle-down tree, then warps
// in index order. The same inputs give the same bits on every run.
__device__ double block_sum(double x) {
  __shared__ double warp_sums[kWarps];
  for (int offset = 16; offset > 0; offset /= 2) x += __shfl_down_sync(0xffffffffu, x, offset);
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (lane == 0) warp_sums[warp] = x;
  __syncthreads();
  double total = 0.0;
  if (warp == 0) {
    total = lane < kWarps ? warp_sums[lane] : 0.0;
    for (int offset = 16; offset > 0; offset /= 2) total += __shfl_down_sync(0xffffffffu, total, offset);
  }
  __syncthreads();  // warp_sums may be reused by the caller's next block_sum
  return total;     // valid in thread 0
}

// One thread's share of a chunk's sum of squares, (g * inv)^2 summed.
//
// Why fp32: fp64 arithmetic runs at 1/64 of the fp32 rate on the GPUs that run
// the sm_80 code outside the data centre (A10, A40, L4, L40S, RTX 30/40), where
// three fp64 operations per element (widen, multiply, add) would make this pass
// compute-bound. So each element costs one fp32 multiply (the unscale, rounded
// as unscale_ rounds it) and one fp32 FMA, into kILP accumulators per thread,
// which are widened to fp64 once, at the end.
//
// Accuracy: a thread covers one block's chunk strided by kThreads, so each
// accumulator sums at most kChunk / (kThreads * kILP) + 1 = 33 squares, all
// non-negative: its relative error is at most 33 * 2^-24 ~ 2e-6, and that bounds
// the relative error of the total too (every level above adds in fp64).
// Rounding errors of random data cancel, so in practice the total is off by
// ~1e-8 relative, below the 6e-8 of the fp32 result itself. (The CPU kernels sum
// exact products in fp64, so the two can differ in the last bit of sumsq.)
//
// Range: a sum above FLT_MAX overflows fp32 where fp64 would not. The thread
// then redoes its elements in fp64 (exact products, as the CPU does), so that
// finite grads never set found_inf: an overflowing sum only makes sumsq inf, as
// on the CPU. At the other end, an accumulator below fp32's normal range (~1e-38)
// keeps fewer digits, as the fp32 sumsq it ends in does.
constexpr int kSquaresPerAccumulator = kChunk / (kThreads * kILP) + 1;
static_assert(kSquaresPerAccumulator <= 33, "fp32 partial sums of squares would grow longer than their bound");

__device__ __forceinline__ float add_square(float acc, float u) { return __fmaf_rn(u, u, acc); }
// exact: the product of two floats fits a double, so only the addition rounds
__device__ __forceinline__ double add_square(double acc, float u) {
  return __fma_rn(static_cast<double>(u), static_cast<double>(u), acc);
}

// The square of one element as clip_grad_value_ after unscale_ would leave it:
// (g * inv) clamped to [-max_value, max_value]. Clamping (max_value finite)
// costs two more operations per element and a check for inf/nan in g itself.
template <class Acc>
__device__ __forceinline__ Acc add_clamped_square(Acc acc, float x, float inv, float max_value, bool clamp, bool& bad) {
  float u = x * inv;
  if (clamp) {
    bad |= !isfinite(x);
    u = math::vclamp(u, -max_value, max_value);
  }
  return add_square(acc, u);
}

template <class Acc, class G>
__device__ __forceinline__ double thread_sumsq(const G* g, int n, bool aligned, float inv, float max_value, bool& bad) {
  const bool clamp = max_value != INFINITY;
  Acc acc[kILP] = {};
  int done = 0;
  if (aligned) {
    const int packs = n / kILP;
    for (int k = threadIdx.x; k < packs; k += blockDim.x) {
      float x[kILP];
      load_pack(x, g + k * kILP);
#pragma unroll
      for (int j = 0; j < kILP; ++j) acc[j] = add_clamped_square(acc[j], x[j], inv, max_value, clamp, bad);
    }
    done = packs * kILP;
  }
  // element by element (unaligned grads, and the tail): kILP strides of the
  // block at a time, so that each accumulator keeps to its bound
  for (int i = done + threadIdx.x; i < n; i += kILP * blockDim.x) {
#pragma unroll
    for (int j = 0; j < kILP; ++j) {
      const int e = i + j * static_cast<int>(blockDim.x);
      if (e < n) acc[j] = add_clamped_square(acc[j], to_float(g[e]), inv, max_value, clamp, bad);
    }
  }
  double total = 0.0;
#pragma unroll
  for (int j = 0; j < kILP; ++j) total += static_cast<double>(acc[j]);
  return total;
}

// Each block writes the sum of squares of its chunk to workspace[block]; the
// block that finishes last adds the launch's partials, in block order, to the
// running total (workspace[kStatsMaxBlocks]). No float atomics anywhere, so the
// result does not depend on scheduling. workspace[kStatsMaxBlocks + 1] holds the
// block counter, zeroed before a call's first launch; the last block resets it
// for the next launch. Each call allocates its own workspace (amp_ops.cpp), so
// no two calls, streams or CUDA graphs ever share one.
template <class G>
__global__ void __launch_bounds__(kThreads) grad_stats_kernel(
    const GradTable table,
    const float* grad_scale,
    double* workspace,
    float* found_inf,
    float* sumsq,
    const float max_value,
    const bool first,
    const bool last) {
  const ChunkSpan s = chunk_span(table);
  const G* g = static_cast<const G*>(table.ptr[0][s.tensor]) + s.start;
  const float inv = grad_scale ? math::inv_scale_of(*grad_scale) : 1.0f;
  const bool aligned = pack_aligned(g);
  // With clamping, an inf grad no longer shows in the sum: look for inf/nan
  // before the clamp, as unscale_ does before clip_grad_value_.
  bool bad = false;
  double acc = thread_sumsq<float>(g, s.n, aligned, inv, max_value, bad);
  if (!isfinite(acc)) acc = thread_sumsq<double>(g, s.n, aligned, inv, max_value, bad);  // inf/nan or fp32 overflow: see above
  // every writer stores the same value: a benign race, as in unscale_kernel
  if (__syncthreads_or(bad) && threadIdx.x == 0) *found_inf = 1.0f;
  const double block_total = block_sum(acc);

  __shared__ bool is_last;
  unsigned int* counter = reinterpret_cast<unsigned int*>(workspace + kStatsMaxBlocks + 1);
  if (threadIdx.x == 0) {
    workspace[blockIdx.x] = block_total;
    __threadfence();
    is_last = atomicAdd(counter, 1u) == gridDim.x - 1;
  }
  __syncthreads();
  if (!is_last) return;

  __threadfence();
  double part = 0.0;
  for (int b = threadIdx.x; b < static_cast<int>(gridDim.x); b += blockDim.x) {
    part += static_cast<volatile double*>(workspace)[b];
  }
  const double launch_total = block_sum(part);
  if (threadIdx.x == 0) {
    const double running = first ? launch_total : workspace[kStatsMaxBlocks] + launch_total;
    workspace[kStatsMaxBlocks] = running;
    *counter = 0u;
    if (last) {
      *sumsq = static_cast<float>(static_cast<double>(*sumsq) + running);
      if (!isfinite(running)) *found_inf = 1.0f;
    }
  }
}

// grads *= inv_scale; found_inf = 1 where an input is inf/nan (torch's
// _amp_foreach_non_finite_check_and_unscale_, for bf16 too).
template <class G>
__global__ void __launch_bounds__(kThreads)
    unscale_kernel(const GradTable table, float* found_inf, const float* inv_scale) {
  const ChunkSpan s = chunk_span(table);
  G* g = static_cast<G*>(table.ptr[0][s.tensor]) + s.start;
  const float inv = *inv_scale;
  bool bad = false;
  for_chunk(s.n, pack_aligned(g), [&](int i, bool pack) {
    float x[kILP];
    load_elems(x, g, i, pack);
#pragma unroll
    for (int k = 0; k < kILP; ++k) {
      if (pack || k == 0) {
        bad |= !isfinite(x[k]);
        x[k] = inv == 1.0f ? x[k] : x[k] * inv;
      }
    }
    if (inv != 1.0f) store_elems(g, i, x, pack);
  });
  // every writer stores the same value: a benign race, as in torch's kernel
  if (__syncthreads_or(bad) && threadIdx.x == 0) *found_inf = 1.0f;
}

// clip_grad_value_: grads := clamp(grads, lo, hi) with NaN kept (math::vclamp).
template <class G>
__global__ void __launch_bounds__(kThreads) clamp_kernel(const GradTable table, const float lo, const float hi) {
  const ChunkSpan s = chunk_span(table);
  G* g = static_cast<G*>(table.ptr[0][s.tensor]) + s.start;
  for_chunk(s.n, pack_aligned(g), [&](int i, bool pack) {
    float x[kILP];
    load_elems(x, g, i, pack);
#pragma unroll
    for (int k = 0; k < kILP; ++k) {
      if (pack || k == 0) x[k] = math::vclamp(x[k], lo, hi);
    }
    store_elems(g, i, x, pack);
  });
}

template <class Launch>
void for_each_grad_table(int n, const int64_t* numel, void* const* grads, Launch launch) {
  for_each_table<1>(
      n, numel, [&](int, int i) { return grads[i]; }, [](int) -> void* { return nullptr; }, launch);
}

}  // namespace

const char* launch_grad_stats(const StatsLaunch& a, void* raw_stream) {
  auto stream = static_cast<cudaStream_t>(raw_stream);
  // The block counter must start at zero, and a fresh allocation holds whatever
  // the memory held before: reset it on the stream, which a CUDA graph captures
  // like a kernel. The partials and the running total need no reset: each is
  // written before it is read.
  if (a.first) {
    if (cudaMemsetAsync(a.workspace + kStatsMaxBlocks + 1, 0, sizeof(double), stream) != cudaSuccess) {
      return last_error();
    }
  }
  // Count the launches first, so that `first` and `last` mark the call's ends.
  int launches = 0;
  for_each_grad_table(a.n, a.numel, const_cast<void* const*>(a.grad), [&](const GradTable&, int) { ++launches; });
  static_assert(kMaxBlocks <= kStatsMaxBlocks, "one partial per block must fit the workspace");
  const char* err = nullptr;
  int index = 0;
  dispatch_dtype(a.dtype, [&](auto tag) {
    using G = decltype(tag);
    for_each_grad_table(a.n, a.numel, const_cast<void* const*>(a.grad), [&](const GradTable& table, int blocks) {
      if (err) return;
      const bool first = a.first && index == 0;
      const bool last = a.last && index == launches - 1;
      err = launch_kernel(grad_stats_kernel<G>, blocks, kThreads, stream, table, a.grad_scale, a.workspace, a.found_inf,
                          a.sumsq, a.max_value, first, last);
      ++index;
    });
  });
  return err;
}

// Calls launch(G{}, table, blocks) for every chunk table of a's grads (one
// dtype per call), stopping at the first failed launch.
template <class A, class Launch>
const char* launch_over_grads(const A& a, Launch launch) {
  const char* err = nullptr;
  dispatch_dtype(a.dtype, [&](auto tag) {
    for_each_grad_table(a.n, a.numel, a.grad, [&](const GradTable& table, int blocks) {
      if (!err) err = launch(tag, table, blocks);
    });
  });
  return err;
}

const char* launch_unscale(const UnscaleLaunch& a, void* raw_stream) {
  auto stream = static_cast<cudaStream_t>(raw_stream);
  return launch_over_grads(a, [&](auto tag, const GradTable& table, int blocks) {
    return launch_kernel(unscale_kernel<decltype(tag)>, blocks, kThreads, stream, table, a.found_inf, a.inv_scale);
  });
}

const char* launch_clamp(const ClampLaunch& a, void* raw_stream) {
  auto stream = static_cast<cudaStream_t>(raw_stream);
  return launch_over_grads(a, [&](auto tag, const GradTable& table, int blocks) {
    return launch_kernel(clamp_kernel<decltype(tag)>, blocks, kThreads, stream, table, a.lo, a.hi);
  });
}

}  // namespace cuda
}  // namespace fusedopt
